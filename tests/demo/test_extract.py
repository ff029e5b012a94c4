from __future__ import annotations

import csv
import gzip
import subprocess
import sys
from pathlib import Path

from apps.demo.extract import INCIDENTS_FILE, PRECINCTS_FILE, ordinal
from apps.demo.nyc import precinct_stats, sample_incidents
from tests.live import PROJECT_ROOT

SOURCE_COLUMNS = [
    "CAD_INCIDENT_ID",
    "INCIDENT_DATETIME",
    "INITIAL_CALL_TYPE",
    "INITIAL_SEVERITY_LEVEL_CODE",
    "HELD_INDICATOR",
    "BOROUGH",
    "INCIDENT_DISPATCH_AREA",
    "ZIPCODE",
    "POLICEPRECINCT",
    "INCIDENT_RESPONSE_SECONDS_QY",
]
# A tiny stand-in for the public sample, in its own spelling: capital boroughs, "?" for unknown.
SOURCE_ROWS = [
    ["1", "2015-03-01 00:10:00", "EDP", "7", "N", "MANHATTAN", "M3", "10035", "25", "600"],
    ["2", "2015-03-01 05:20:00", "EDP", "7", "Y", "MANHATTAN", "M3", "10035", "25", "900"],
    ["3", "2015-03-01 13:30:00", "EDP", "4", "N", "MANHATTAN", "M3", "10029", "25", "300"],
    ["4", "2015-03-01 13:45:00", "EDP", "7", "Y", "MANHATTAN", "M3", "10029", "25", "1200"],
    ["5", "2015-03-02 13:50:00", "INJURY", "5", "N", "MANHATTAN", "M3", "10029", "25", "100"],
    ["6", "2015-03-02 14:00:00", "EDP", "7", "N", "QUEENS", "Q1", "11385", "104", "500"],
    ["7", "2015-03-02 14:05:00", "EDP", "7", "N", "QUEENS", "Q1", "11385", "104", "?"],
    ["8", "2015-03-02 15:00:00", "EDP", "7", "N", "BROOKLYN", "Q1", "11385", "104", "700"],
    ["9", "2015-03-03 09:00:00", "EDP", "7", "N", "RICHMOND / STATEN ISLAND", "S1", "10301", "122", "400"],
    ["10", "2015-03-03 10:00:00", "EDP", "7", "N", "BRONX", "B1", "?", "?", "800"],
    ["11", "2015-03-03 11:00:00", "EDPC", "7", "N", "BRONX", "B1", "10451", "40", "800"],
]


def write_source(path: Path) -> Path:
    with gzip.open(path, "wt", newline="", encoding="utf-8") as handle:
        writer = csv.writer(handle)
        writer.writerow(SOURCE_COLUMNS)
        writer.writerows(SOURCE_ROWS)
    return path


def run_extract(source: Path, out: Path, incidents: int = 3) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "apps.demo.extract", str(source), "--out", str(out), "--incidents", str(incidents)],
        cwd=PROJECT_ROOT,
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )


def read_rows(path: Path) -> list[dict[str, str]]:
    with path.open(newline="", encoding="utf-8") as handle:
        return list(csv.DictReader(handle))


def test_extract_aggregates_mental_health_calls_per_precinct(tmp_path: Path) -> None:
    source = write_source(tmp_path / "sample.csv.gz")

    result = run_extract(source, tmp_path / "out")

    stats = {row.precinct: row for row in precinct_stats(tmp_path / "out")}
    assert set(stats) == {25, 104, 122}  # only EDP calls with a known precinct
    harlem = stats[25]
    assert (harlem.zone_code, harlem.zone_name, harlem.borough) == ("PCT-025", "25th Precinct (Manhattan)", "Manhattan")
    assert (harlem.edp_calls, harlem.held_calls) == (4, 2)
    assert harlem.median_response_seconds == 600  # lower median of 300, 600, 900, 1200
    assert harlem.calls_by_hour[0] == 1
    assert harlem.calls_by_hour[5] == 1
    assert harlem.calls_by_hour[13] == 2
    assert sum(harlem.calls_by_hour) == 4
    ridgewood = stats[104]
    # One call filed under Brooklyn; the precinct keeps its usual borough.
    assert (ridgewood.borough, ridgewood.zone_name) == ("Queens", "104th Precinct (Queens)")
    assert ridgewood.edp_calls == 3
    assert ridgewood.median_response_seconds == 500  # the unknown "?" time is left out
    assert stats[122].borough == "Staten Island"
    assert "9 EDP calls, 1 without a precinct; 3 precincts, 3 incidents kept" in result.stdout


def test_precincts_are_listed_busiest_first(tmp_path: Path) -> None:
    run_extract(write_source(tmp_path / "sample.csv.gz"), tmp_path / "out")

    assert [row.precinct for row in precinct_stats(tmp_path / "out")] == [25, 104, 122]


def test_extract_keeps_evenly_spaced_real_incidents(tmp_path: Path) -> None:
    run_extract(write_source(tmp_path / "sample.csv.gz"), tmp_path / "out", incidents=3)

    incidents = sample_incidents(tmp_path / "out")

    # Eight located EDP calls, three kept: the 1st, 3rd and 6th in time order.
    assert [incident.cad_incident_id for incident in incidents] == ["1", "3", "7"]
    first = incidents[0]
    assert first.incident_datetime == "2015-03-01 00:10:00"
    assert (first.precinct, first.zone_code, first.borough, first.zipcode) == (25, "PCT-025", "Manhattan", "10035")
    assert (first.severity_level, first.held, first.response_seconds) == (7, False, 600)
    assert incidents[2].response_seconds is None


def test_extract_is_deterministic(tmp_path: Path) -> None:
    source = write_source(tmp_path / "sample.csv.gz")

    run_extract(source, tmp_path / "first")
    run_extract(source, tmp_path / "second")

    for name in (PRECINCTS_FILE, INCIDENTS_FILE):
        assert (tmp_path / "first" / name).read_bytes() == (tmp_path / "second" / name).read_bytes()


def test_committed_extract_is_small_and_matches_the_loader() -> None:
    data = PROJECT_ROOT / "apps" / "demo" / "data"

    sizes = {path.name: path.stat().st_size for path in data.iterdir()}

    assert sum(sizes.values()) < 200_000
    assert len(precinct_stats()) == len(read_rows(data / PRECINCTS_FILE)) > 70
    assert 200 <= len(sample_incidents()) <= 500


def test_ordinals() -> None:
    assert [ordinal(n) for n in (1, 2, 3, 4, 11, 12, 13, 21, 101, 102, 103, 111, 112, 113, 122, 123)] == [
        "1st", "2nd", "3rd", "4th", "11th", "12th", "13th", "21st",
        "101st", "102nd", "103rd", "111th", "112th", "113th", "122nd", "123rd",
    ]  # fmt: skip
