"""Run the benchmarks: `python -m tests.bench [name ...]` (via `make bench [BENCH=name]`).

Each benchmark is a module tests/bench/bench_<name>.py with a main() that ends by printing
one line of JSON: {"bench": "<name>", ...figures}. They run one at a time, each in its own
process, so one's load does not disturb another's figures.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

BENCH_DIR = Path(__file__).resolve().parent


def main(names: list[str]) -> int:
    available = sorted(path.stem.removeprefix("bench_") for path in BENCH_DIR.glob("bench_*.py"))
    selected = names or available
    unknown = sorted(set(selected) - set(available))
    if unknown:
        print(f"unknown benchmark(s): {', '.join(unknown)}; available: {', '.join(available)}", file=sys.stderr)
        return 2
    failures = 0
    for name in selected:
        print(f"== bench {name}", file=sys.stderr, flush=True)
        result = subprocess.run([sys.executable, "-m", f"tests.bench.bench_{name}"], check=False)
        failures += result.returncode != 0
    return 1 if failures else 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
