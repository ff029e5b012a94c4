"""`make run` hands a request to stop on to the launcher, which stops everything it started.

Ctrl-C in a terminal signals the whole foreground group; an editor's stop button, a process
supervisor or `kill <pid of make>` sends SIGTERM to make alone. Make passes SIGTERM to its
recipe's shell, so the launcher (config/embedded.py, which forwards it to honcho and then
stops PostgreSQL and Redis) must be what that shell became, not a child left behind.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

from tests.live import PROJECT_ROOT

# Stands in for the launcher: says it is ready, then records the signal that stops it.
LAUNCHER_STAND_IN = """
import signal, sys, time
from pathlib import Path

marker = Path(sys.argv[1])

def stop(signum, _frame):
    marker.write_text(signal.Signals(signum).name)
    sys.exit(0)

signal.signal(signal.SIGTERM, stop)
marker.write_text(f"ready {__import__('os').getpid()}")
time.sleep(60)
"""


def wait_for(marker: Path, prefix: str, seconds: float) -> str:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        text = marker.read_text() if marker.exists() else ""
        if text.startswith(prefix):
            return text
        time.sleep(0.05)
    return marker.read_text() if marker.exists() else ""


def test_sigterm_to_make_reaches_the_launcher_and_make_exits(tmp_path: Path) -> None:
    stand_in = tmp_path / "launcher.py"
    stand_in.write_text(LAUNCHER_STAND_IN)
    marker = tmp_path / "marker"
    venv = sys.prefix
    make = subprocess.Popen(
        [
            "make",
            "--no-print-directory",
            "-C",
            str(PROJECT_ROOT),
            f"--assume-old={venv}/.installed",
            "run",
            f"VENV={venv}",
            f"EMBEDDED={sys.executable} {stand_in} {marker}",
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
    )
    launcher_pid = 0
    try:
        ready = wait_for(marker, "ready", 20)
        assert ready.startswith("ready"), "the launcher did not start"
        launcher_pid = int(ready.split()[1])

        make.send_signal(signal.SIGTERM)

        assert wait_for(marker, "SIGTERM", 10) == "SIGTERM"
        assert make.wait(10) != 0
    finally:
        if make.poll() is None:
            make.kill()
            make.wait()
        if launcher_pid and marker.read_text().startswith("ready"):
            os.kill(launcher_pid, signal.SIGKILL)
