"""Shared set-up for benchmarks: a fresh, migrated database of their own, and the result line."""

from __future__ import annotations

import json
import os
import statistics
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

BENCH_DATABASE = "tandem_bench"


@contextmanager
def bench_django(settings_module: str = "config.settings.test") -> Iterator[None]:
    """Set Django up against a freshly created database `tandem_bench` and migrate it."""
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", settings_module)
    import django
    from django.conf import settings

    django.setup()
    from django.core.management import call_command
    from django.db import connection

    database = settings.DATABASES["default"]
    original_name = database["NAME"]
    with connection.cursor() as cursor:
        cursor.execute(f'DROP DATABASE IF EXISTS "{BENCH_DATABASE}" WITH (FORCE)')
        cursor.execute(f'CREATE DATABASE "{BENCH_DATABASE}"')
    _drop_connections(connection)
    database["NAME"] = BENCH_DATABASE
    call_command("migrate", verbosity=0)
    try:
        yield
    finally:
        _drop_connections(connection)
        database["NAME"] = original_name


def _drop_connections(connection: Any) -> None:
    """Close the connection and the process's pool: a pooled connection would go back to
    its pool still on the database it was opened on."""
    connection.close()
    connection.close_pool()


def percentile(values: list[float], fraction: float) -> float:
    if not values:
        return float("nan")
    ordered = sorted(values)
    index = min(len(ordered) - 1, max(0, round(fraction * (len(ordered) - 1))))
    return ordered[index]


def summary_ms(values_seconds: list[float]) -> dict[str, float]:
    ms = [value * 1000 for value in values_seconds]
    return {
        "p50_ms": round(percentile(ms, 0.50), 2),
        "p99_ms": round(percentile(ms, 0.99), 2),
        "mean_ms": round(statistics.fmean(ms), 2) if ms else float("nan"),
        "n": len(ms),
    }


def emit(bench: str, **figures: Any) -> None:
    """The one line of JSON every benchmark ends with."""
    print(json.dumps({"bench": bench, **figures}), flush=True)


def cpu_seconds(pids: list[int]) -> float:
    """User + system CPU of these processes so far (their exited children included)."""
    tick = os.sysconf("SC_CLK_TCK")
    total = 0
    for pid in pids:
        try:
            fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        total += sum(int(value) for value in fields[11:15])  # utime, stime, cutime, cstime
    return total / tick


def children(pid: int) -> list[int]:
    found = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            if int(stat.read_text().rsplit(")", 1)[1].split()[1]) == pid:
                found.append(int(stat.parent.name))
        except (OSError, ValueError):
            continue
    return found


def postgres_pids() -> list[int]:
    """The postmaster and its children now (backends come and go; an exited one's CPU is
    counted in the postmaster's)."""
    from django.conf import settings

    postmaster = int((Path(settings.DATABASES["default"]["HOST"]) / "postmaster.pid").read_text().split()[0])
    return [postmaster, *children(postmaster)]
