"""Cut the small committed demo extract out of the public NYC EMS incident sample.

    python -m apps.demo.extract <incidents.csv.gz> [--out DIR] [--incidents N]

The input is the gzip CSV sample of NYC Open Data's "EMS Incident Dispatch Data" described
in apps/demo/data/README.md (hundreds of thousands of rows, too big to commit). This keeps
only the mental-health calls (initial call type ``EDP``) and writes two small files:

- ``nyc_edp_precincts.csv``: one row per police precinct with its borough, the demo zone
  code and name, the number of EDP calls, how many waited for a free unit, the median
  response time and the calls by hour of the day;
- ``nyc_edp_incidents.csv``: N real EDP incidents spread evenly over the whole period, for
  demo incidents.

Deterministic: the same input gives the same bytes out. Standard library only, and no
Django, so it runs anywhere the data is.
"""

from __future__ import annotations

import argparse
import csv
import gzip
import statistics
from collections import Counter, defaultdict
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

MENTAL_HEALTH_CALL_TYPE = "EDP"
DEFAULT_OUT = Path(__file__).resolve().parent / "data"
DEFAULT_INCIDENT_COUNT = 300
PRECINCTS_FILE = "nyc_edp_precincts.csv"
INCIDENTS_FILE = "nyc_edp_incidents.csv"

# The dataset spells boroughs in capitals, Staten Island with its county name.
BOROUGH_NAMES = {
    "BRONX": "Bronx",
    "BROOKLYN": "Brooklyn",
    "MANHATTAN": "Manhattan",
    "QUEENS": "Queens",
    "RICHMOND / STATEN ISLAND": "Staten Island",
}
# The NYPD names these three precincts rather than numbering them in speech.
PRECINCT_NAMES = {14: "Midtown South Precinct", 18: "Midtown North Precinct", 22: "Central Park Precinct"}

PRECINCT_COLUMNS = [
    "precinct",
    "zone_code",
    "zone_name",
    "borough",
    "edp_calls",
    "held_calls",
    "median_response_seconds",
    *[f"calls_hour_{hour:02d}" for hour in range(24)],
]
INCIDENT_COLUMNS = [
    "cad_incident_id",
    "incident_datetime",
    "precinct",
    "zone_code",
    "borough",
    "zipcode",
    "severity_level",
    "held",
    "response_seconds",
]


def zone_code(precinct: int) -> str:
    return f"PCT-{precinct:03d}"


def ordinal(number: int) -> str:
    # 11th, 12th, 13th (and 111th ...), otherwise by the last digit.
    suffix = "th" if 10 <= number % 100 <= 20 else {1: "st", 2: "nd", 3: "rd"}.get(number % 10, "th")
    return f"{number}{suffix}"


def zone_name(precinct: int, borough: str) -> str:
    name = PRECINCT_NAMES.get(precinct, f"{ordinal(precinct)} Precinct")
    return f"{name} ({borough})"


def borough_name(raw: str) -> str:
    return BOROUGH_NAMES.get(raw.strip(), raw.strip().title())


def parse_int(raw: str) -> int | None:
    """The dataset marks unknown values with "?" (or leaves them empty)."""
    try:
        return int(raw)
    except ValueError:
        return None


@dataclass
class PrecinctTally:
    calls: int = 0
    held: int = 0
    response_seconds: list[int] = field(default_factory=list)
    boroughs: Counter[str] = field(default_factory=Counter)
    by_hour: list[int] = field(default_factory=lambda: [0] * 24)

    def borough(self) -> str:
        # A handful of calls carry a neighbouring borough; the precinct's is the usual one
        # (ties broken by name so the result never depends on reading order).
        return min(self.boroughs.items(), key=lambda item: (-item[1], item[0]))[0]


@dataclass
class Extract:
    precincts: dict[int, PrecinctTally]
    incidents: list[dict[str, str]]
    edp_calls: int
    edp_calls_without_precinct: int


def mental_health_rows(rows: Iterable[dict[str, str]]) -> Iterator[dict[str, str]]:
    return (row for row in rows if row["INITIAL_CALL_TYPE"].strip() == MENTAL_HEALTH_CALL_TYPE)


def evenly_spaced(items: list[dict[str, str]], count: int) -> list[dict[str, str]]:
    """`count` items spread evenly over the list (all of them if there are fewer)."""
    if len(items) <= count:
        return list(items)
    return [items[index * len(items) // count] for index in range(count)]


def extract(rows: Iterable[dict[str, str]], incident_count: int = DEFAULT_INCIDENT_COUNT) -> Extract:
    precincts: dict[int, PrecinctTally] = defaultdict(PrecinctTally)
    located: list[dict[str, str]] = []
    edp_calls = 0
    without_precinct = 0
    for row in mental_health_rows(rows):
        edp_calls += 1
        precinct = parse_int(row["POLICEPRECINCT"])
        if precinct is None:
            without_precinct += 1
            continue
        tally = precincts[precinct]
        tally.calls += 1
        tally.held += row["HELD_INDICATOR"].strip() == "Y"
        tally.boroughs[borough_name(row["BOROUGH"])] += 1
        # INCIDENT_DATETIME is local New York time, "YYYY-MM-DD HH:MM:SS".
        tally.by_hour[int(row["INCIDENT_DATETIME"][11:13])] += 1
        seconds = parse_int(row["INCIDENT_RESPONSE_SECONDS_QY"])
        if seconds is not None:
            tally.response_seconds.append(seconds)
        located.append(row)
    # The source is sorted by time; sort anyway so the sample never depends on input order.
    located.sort(key=lambda row: (row["INCIDENT_DATETIME"], row["CAD_INCIDENT_ID"]))
    incidents = [incident_record(row) for row in evenly_spaced(located, incident_count)]
    return Extract(dict(precincts), incidents, edp_calls, without_precinct)


def incident_record(row: dict[str, str]) -> dict[str, str]:
    precinct = int(row["POLICEPRECINCT"])
    zipcode = parse_int(row["ZIPCODE"])
    seconds = parse_int(row["INCIDENT_RESPONSE_SECONDS_QY"])
    return {
        "cad_incident_id": row["CAD_INCIDENT_ID"].strip(),
        "incident_datetime": row["INCIDENT_DATETIME"].strip(),
        "precinct": str(precinct),
        "zone_code": zone_code(precinct),
        "borough": borough_name(row["BOROUGH"]),
        "zipcode": f"{zipcode:05d}" if zipcode is not None else "",
        "severity_level": row["INITIAL_SEVERITY_LEVEL_CODE"].strip(),
        "held": "Y" if row["HELD_INDICATOR"].strip() == "Y" else "N",
        "response_seconds": str(seconds) if seconds is not None else "",
    }


def precinct_record(precinct: int, tally: PrecinctTally) -> dict[str, str]:
    borough = tally.borough()
    # The lower median keeps a whole number of seconds for an even count.
    median = statistics.median_low(tally.response_seconds) if tally.response_seconds else None
    record = {
        "precinct": str(precinct),
        "zone_code": zone_code(precinct),
        "zone_name": zone_name(precinct, borough),
        "borough": borough,
        "edp_calls": str(tally.calls),
        "held_calls": str(tally.held),
        "median_response_seconds": "" if median is None else str(median),
    }
    record.update({f"calls_hour_{hour:02d}": str(count) for hour, count in enumerate(tally.by_hour)})
    return record


def write_csv(path: Path, columns: list[str], records: Iterable[dict[str, str]]) -> None:
    with path.open("w", newline="", encoding="utf-8") as handle:
        writer = csv.DictWriter(handle, fieldnames=columns, lineterminator="\n")
        writer.writeheader()
        writer.writerows(records)


def write_extract(result: Extract, out_dir: Path) -> tuple[Path, Path]:
    out_dir.mkdir(parents=True, exist_ok=True)
    precincts_path = out_dir / PRECINCTS_FILE
    incidents_path = out_dir / INCIDENTS_FILE
    write_csv(
        precincts_path,
        PRECINCT_COLUMNS,
        (precinct_record(precinct, result.precincts[precinct]) for precinct in sorted(result.precincts)),
    )
    write_csv(incidents_path, INCIDENT_COLUMNS, result.incidents)
    return precincts_path, incidents_path


def read_gzip_csv(path: Path) -> Iterator[dict[str, str]]:
    with gzip.open(path, "rt", newline="", encoding="utf-8") as handle:
        yield from csv.DictReader(handle)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("source", type=Path, help="the incidents sample, a gzip CSV")
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT, help="folder for the two CSV files")
    parser.add_argument("--incidents", type=int, default=DEFAULT_INCIDENT_COUNT, help="incident rows to keep")
    args = parser.parse_args(argv)

    result = extract(read_gzip_csv(args.source), incident_count=args.incidents)
    paths = write_extract(result, args.out)
    print(
        f"{result.edp_calls} EDP calls, {result.edp_calls_without_precinct} without a precinct; "
        f"{len(result.precincts)} precincts, {len(result.incidents)} incidents kept"
    )
    for path in paths:
        print(f"wrote {path} ({path.stat().st_size} bytes)")


if __name__ == "__main__":
    main()
