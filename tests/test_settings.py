from __future__ import annotations

import os
import subprocess
import sys

from cryptography.fernet import Fernet
from django.db import connection

from tests.live import PROJECT_ROOT


def production_env(*, without: tuple[str, ...] = (), **extra: str) -> dict[str, str]:
    env = {key: value for key, value in os.environ.items() if key not in ("SECRET_KEY", "FIELD_ENCRYPTION_KEYS")}
    env.update(
        DJANGO_SETTINGS_MODULE="config.settings.production",
        ALLOWED_HOSTS="tandem.example.org",
        FIELD_ENCRYPTION_KEYS=Fernet.generate_key().decode(),
    )
    env.update(extra)
    for name in without:
        env.pop(name)
    return env


def test_deploy_check_is_clean_under_production_settings(tmp_path: object) -> None:
    secret = "a-long-random-production-secret-" + "x" * 40

    result = subprocess.run(
        [sys.executable, "manage.py", "check", "--deploy", "--fail-level", "WARNING"],
        cwd=PROJECT_ROOT,
        env=production_env(SECRET_KEY=secret),
        capture_output=True,
        text=True,
        timeout=120,
    )

    assert result.returncode == 0, result.stdout + result.stderr
    assert "no issues" in result.stdout


def test_production_refuses_to_start_without_a_secret_key() -> None:
    result = subprocess.run(
        [sys.executable, "manage.py", "check"],
        cwd=PROJECT_ROOT,
        env=production_env(),
        capture_output=True,
        text=True,
        timeout=120,
    )

    assert result.returncode != 0
    assert "Set the environment variable SECRET_KEY" in result.stderr


def test_production_refuses_to_start_without_health_information_keys() -> None:
    result = subprocess.run(
        [sys.executable, "manage.py", "check"],
        cwd=PROJECT_ROOT,
        env=production_env(
            SECRET_KEY="a-long-random-production-secret-" + "x" * 40, without=("FIELD_ENCRYPTION_KEYS",)
        ),
        capture_output=True,
        text=True,
        timeout=120,
    )

    assert result.returncode != 0
    assert "Set the environment variable FIELD_ENCRYPTION_KEYS" in result.stderr


# The values the development settings fall back to: they are published with the source.
DEVELOPMENT_SECRET_KEY = "insecure-development-key-not-for-production"
DEVELOPMENT_FIELD_ENCRYPTION_KEY = "ZGV2ZWxvcG1lbnQtb25seS1rZXktMDAwMDAwMDAwMDA="


def production_check(*, secret_key: str, encryption_keys: str | None = None) -> subprocess.CompletedProcess[str]:
    env = production_env(SECRET_KEY=secret_key)
    if encryption_keys is not None:
        env["FIELD_ENCRYPTION_KEYS"] = encryption_keys
    return subprocess.run(
        [sys.executable, "manage.py", "check"],
        cwd=PROJECT_ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )


def test_production_refuses_the_development_secret_key() -> None:
    result = production_check(secret_key=DEVELOPMENT_SECRET_KEY)

    assert result.returncode != 0
    assert "SECRET_KEY is the development value" in result.stderr


def test_production_refuses_to_seal_health_information_with_the_development_key() -> None:
    result = production_check(
        secret_key="a-long-random-production-secret-" + "x" * 40, encryption_keys=DEVELOPMENT_FIELD_ENCRYPTION_KEY
    )

    assert result.returncode != 0
    assert "FIELD_ENCRYPTION_KEYS" in result.stderr
    assert "development key" in result.stderr


def test_production_still_opens_values_sealed_with_the_development_key_while_they_are_resealed() -> None:
    new_key = Fernet.generate_key().decode()

    result = production_check(
        secret_key="a-long-random-production-secret-" + "x" * 40,
        encryption_keys=f"{new_key},{DEVELOPMENT_FIELD_ENCRYPTION_KEY}",
    )

    assert result.returncode == 0, result.stderr


def test_secret_key_can_come_from_a_file(tmp_path: object) -> None:
    from pathlib import Path

    secret_file = Path(str(tmp_path)) / "secret"
    secret_file.write_text("file-secret-" + "y" * 50 + "\n")

    result = subprocess.run(
        [
            sys.executable,
            "-c",
            "import django; django.setup(); from django.conf import settings; print(settings.SECRET_KEY)",
        ],
        cwd=PROJECT_ROOT,
        env=production_env(SECRET_KEY_FILE=str(secret_file)),
        capture_output=True,
        text=True,
        timeout=120,
    )

    assert result.stdout.strip() == "file-secret-" + "y" * 50


def test_tests_run_on_real_postgresql(db: None) -> None:
    with connection.cursor() as cursor:
        cursor.execute("SHOW server_version")
        version = cursor.fetchone()

    assert connection.vendor == "postgresql"
    assert version is not None and int(version[0].split(".")[0]) >= 16


def test_a_request_warning_is_logged_once_in_development() -> None:
    emit = "import logging, django; django.setup(); logging.getLogger('django.request').warning('Bad Request: /x')"

    result = subprocess.run(
        [sys.executable, "-c", emit],
        cwd=PROJECT_ROOT,
        env={**os.environ, "DJANGO_SETTINGS_MODULE": "config.settings.development"},
        capture_output=True,
        text=True,
        timeout=60,
    )

    assert result.returncode == 0, result.stderr
    assert result.stderr.count("Bad Request: /x") == 1, result.stderr
