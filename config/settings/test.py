"""Tests: only faster and safer than development, never a different stack."""

from __future__ import annotations

from config.settings.base import *  # noqa: F403

PASSWORD_HASHERS = ["django.contrib.auth.hashers.MD5PasswordHasher"]
DEBUG = False
# The admin's static files come from the apps' directories, as in development: the live
# server processes of the browser tests serve them with no collectstatic step.
WHITENOISE_USE_FINDERS = True
