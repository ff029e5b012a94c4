"""Local development: `make run`."""

from __future__ import annotations

from config.env import env_bool
from config.settings.base import *  # noqa: F403

DEBUG = env_bool("DEBUG", True)
# The API's schema and docs page for anyone, at http://127.0.0.1:8000/api/docs/.
API_SCHEMA_PUBLIC = env_bool("API_SCHEMA_PUBLIC", True)
