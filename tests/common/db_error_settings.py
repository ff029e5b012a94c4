"""Test settings whose URLs add a view the database refuses (tests/common/db_error_web.py)."""

from __future__ import annotations

from config.settings.test import *  # noqa: F403

ROOT_URLCONF = "tests.common.db_error_web"
