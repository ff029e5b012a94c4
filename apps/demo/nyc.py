"""The committed NYC extract (see data/README.md), read into typed rows."""

from __future__ import annotations

import csv
from dataclasses import dataclass
from pathlib import Path

from apps.demo.extract import DEFAULT_OUT, INCIDENTS_FILE, PRECINCTS_FILE

DATA_DIR = DEFAULT_OUT


@dataclass(frozen=True)
class PrecinctStats:
    precinct: int
    zone_code: str
    zone_name: str
    borough: str
    edp_calls: int
    held_calls: int
    median_response_seconds: int | None
    calls_by_hour: tuple[int, ...]


@dataclass(frozen=True)
class SampleIncident:
    """One real EDP call from the sample; its time is local New York time."""

    cad_incident_id: str
    incident_datetime: str
    precinct: int
    zone_code: str
    borough: str
    zipcode: str
    severity_level: int | None
    held: bool
    response_seconds: int | None


def _optional_int(raw: str) -> int | None:
    return int(raw) if raw else None


def precinct_stats(data_dir: Path = DATA_DIR) -> list[PrecinctStats]:
    """Every precinct of the extract, busiest first (ties by precinct number)."""
    with (data_dir / PRECINCTS_FILE).open(newline="", encoding="utf-8") as handle:
        rows = [
            PrecinctStats(
                precinct=int(row["precinct"]),
                zone_code=row["zone_code"],
                zone_name=row["zone_name"],
                borough=row["borough"],
                edp_calls=int(row["edp_calls"]),
                held_calls=int(row["held_calls"]),
                median_response_seconds=_optional_int(row["median_response_seconds"]),
                calls_by_hour=tuple(int(row[f"calls_hour_{hour:02d}"]) for hour in range(24)),
            )
            for row in csv.DictReader(handle)
        ]
    return sorted(rows, key=lambda stats: (-stats.edp_calls, stats.precinct))


def sample_incidents(data_dir: Path = DATA_DIR) -> list[SampleIncident]:
    with (data_dir / INCIDENTS_FILE).open(newline="", encoding="utf-8") as handle:
        return [
            SampleIncident(
                cad_incident_id=row["cad_incident_id"],
                incident_datetime=row["incident_datetime"],
                precinct=int(row["precinct"]),
                zone_code=row["zone_code"],
                borough=row["borough"],
                zipcode=row["zipcode"],
                severity_level=_optional_int(row["severity_level"]),
                held=row["held"] == "Y",
                response_seconds=_optional_int(row["response_seconds"]),
            )
            for row in csv.DictReader(handle)
        ]
