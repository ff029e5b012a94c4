"""Real server processes for tests and benchmarks: an ASGI server and a Celery worker.

They run as separate OS processes against the same PostgreSQL database and Redis as the
test process, so what they see is only what the test committed.
"""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import quote

import redis
from django.conf import settings

PROJECT_ROOT = Path(__file__).resolve().parent.parent


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def database_url() -> str:
    """The URL of the database this process uses now (the test database under pytest)."""
    db = settings.DATABASES["default"]
    host = quote(db["HOST"], safe="") if db["HOST"] else ""
    port = f":{db['PORT']}" if db["PORT"] else ""
    password = f":{quote(db['PASSWORD'], safe='')}" if db["PASSWORD"] else ""
    return f"postgresql://{db['USER']}{password}@{host}{port}/{db['NAME']}"


def child_environment(**extra: str) -> dict[str, str]:
    env = dict(os.environ)
    env.update(
        DATABASE_URL=database_url(),
        REDIS_URL=settings.REDIS_URL,
        # The settings this process runs with, whatever the inherited environment says.
        DJANGO_SETTINGS_MODULE=settings.SETTINGS_MODULE,
        PYTHONUNBUFFERED="1",
    )
    env.update(extra)
    return env


@dataclass
class LiveProcess:
    process: subprocess.Popen[bytes]
    log_path: Path

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    def stop(self, sig: int = signal.SIGTERM, timeout: float = 15) -> None:
        if self.process.poll() is None:
            self.process.send_signal(sig)
            try:
                self.process.wait(timeout)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()


@contextlib.contextmanager
def _spawn(command: list[str], log_path: Path, env: dict[str, str]) -> Iterator[LiveProcess]:
    log_path.parent.mkdir(parents=True, exist_ok=True)
    with log_path.open("wb") as log_file:
        process = subprocess.Popen(command, cwd=PROJECT_ROOT, env=env, stdout=log_file, stderr=subprocess.STDOUT)
    live = LiveProcess(process, log_path)
    try:
        yield live
    finally:
        live.stop()


def _wait_for_port(live: LiveProcess, port: int, timeout: float = 30) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if live.process.poll() is not None:
            raise RuntimeError(f"server exited early:\n{live.log()}")
        with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", port), 0.2):
            return
        time.sleep(0.05)
    raise RuntimeError(f"server did not listen on {port} within {timeout}s:\n{live.log()}")


@dataclass
class AsgiServer:
    port: int
    live: LiveProcess

    @property
    def http_url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def ws_url(self) -> str:
        return f"ws://127.0.0.1:{self.port}"


def procfile_ws_max_size() -> str:
    """The largest websocket message the web process reads (its Procfile entry says it)."""
    web = next(
        line for line in (PROJECT_ROOT / "config" / "Procfile").read_text().splitlines() if line.startswith("web:")
    )
    tokens = web.split()
    return tokens[tokens.index("--ws-max-size") + 1]


@contextlib.contextmanager
def asgi_server(
    log_dir: Path, *, server: str = "uvicorn", name: str = "web", app: str = "config.asgi:application", **env: str
) -> Iterator[AsgiServer]:
    """The web process as the Procfile runs it; `app` names another ASGI application (uvicorn only)."""
    port = free_port()
    if server.startswith("uvicorn"):
        command = [
            sys.executable,
            "-m",
            "uvicorn",
            app,
            "--host",
            "127.0.0.1",
            "--port",
            str(port),
            "--lifespan",
            "off",
            "--no-access-log",
            "--ws-max-size",
            procfile_ws_max_size(),
        ]
        if server != "uvicorn":  # e.g. "uvicorn-wsproto": another websocket implementation
            command += ["--ws", server.removeprefix("uvicorn-")]
    elif server == "daphne":
        command = [sys.executable, "-m", "daphne", "-b", "127.0.0.1", "-p", str(port), "config.asgi:application"]
    else:
        raise ValueError(server)
    with _spawn(command, log_dir / f"{name}-{port}.log", child_environment(**env)) as live:
        _wait_for_port(live, port)
        yield AsgiServer(port, live)


@dataclass
class LiveWorker(LiveProcess):
    hostname: str = ""


@contextlib.contextmanager
def celery_worker(
    log_dir: Path,
    *,
    name: str = "worker",
    concurrency: int = 1,
    queues: str | None = None,
    include: str | None = None,
    **env: str,
) -> Iterator[LiveWorker]:
    hostname = f"{name}-{os.getpid()}@{socket.gethostname()}"
    command = [
        sys.executable,
        "-m",
        "celery",
        "-A",
        "config",
        "worker",
        "--loglevel",
        "INFO",
        "--concurrency",
        str(concurrency),
        "--hostname",
        hostname,
        "--without-gossip",
        "--without-mingle",
    ]
    if queues:
        # A queue of its own keeps other workers from taking the tasks a test means for this one.
        command += ["--queues", queues]
    if include:
        # Modules of tasks beyond the apps' (a test's own), imported by this worker only.
        command += ["--include", include]
    with _spawn(command, log_dir / f"{name}.log", child_environment(**env)) as live:
        from config.celery import app

        deadline = time.monotonic() + 60
        # Ping this worker by name: another worker of the session answering must not count.
        while not app.control.ping(destination=[hostname], timeout=0.5):
            if live.process.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"Celery worker did not come up:\n{live.log()}")
        yield LiveWorker(live.process, live.log_path, hostname)


def wait_until_worker_idle(worker: LiveWorker, timeout: float = 30) -> None:
    """Until the worker runs and holds no task and none waits in the queue, seen twice in a
    row a moment apart (a task that ends may publish another, which the worker may be
    fetching). A worker that does not answer is not idle.

    The question goes to this worker alone, so its answer ends the wait for it: asked of
    every worker, Celery waits out the whole timeout for answers that may never come."""
    from config.celery import app

    deadline = time.monotonic() + timeout
    idle_readings = 0
    while True:
        inspect = app.control.inspect(destination=[worker.hostname], timeout=1)
        replies = [inspect.active() or {}, inspect.reserved() or {}]
        answered = all(worker.hostname in reply for reply in replies)
        held = [task["name"] for reply in replies for task in reply.get(worker.hostname, [])]
        with redis.Redis.from_url(app.conf.broker_url) as broker:
            queued = broker.llen(app.conf.task_default_queue)  # the broker's list of waiting tasks
        idle_readings = idle_readings + 1 if answered and not held and not queued else 0
        if idle_readings == 2:
            return
        if time.monotonic() > deadline:
            state = f"{held}, {queued} queued" if answered else "no answer"
            raise RuntimeError(f"The live worker is still busy after {timeout} s: {state}.")
        time.sleep(0.1)


@contextlib.contextmanager
def celery_beat(log_dir: Path, *, name: str = "beat", schedule_file: Path, **env: str) -> Iterator[LiveProcess]:
    """A real beat process with its own file-based schedule (celery.beat.PersistentScheduler).

    Each beat keeps its own schedule state, so two of them both fire every entry: the worst
    case a periodic task that must act once has to survive.
    """
    command = [
        sys.executable,
        "-m",
        "celery",
        "-A",
        "config",
        "beat",
        "--loglevel",
        "INFO",
        "-S",
        "celery.beat:PersistentScheduler",
        "--schedule",
        str(schedule_file),
    ]
    with _spawn(command, log_dir / f"{name}.log", child_environment(**env)) as live:
        yield live
