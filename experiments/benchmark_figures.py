"""Runtime and memory vs horizon figures, and the ratio tables, from a benchmark JSON file.

    pytest benchmarks --benchmark-json out.json
    python experiments/benchmark_figures.py out.json [--out results/benchmarks]

Writes runtime-<sim>.png, memory-<sim>.png, ratios.md and cases.csv into a new folder
(see gradstop.report).
"""

from __future__ import annotations

import argparse
import sys

from gradstop.bench.report import write_report


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("benchmark_json", help="the file `pytest benchmarks --benchmark-json FILE` wrote")
    parser.add_argument("--out", help="results folder to create (must not exist; default results/benchmarks-<time>)")
    args = parser.parse_args(argv)
    try:
        dest = write_report(args.benchmark_json, args.out)
    except (FileNotFoundError, FileExistsError, ValueError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    print(f"wrote {dest}/ (ratios.md, cases.csv, runtime-*.png, memory-*.png)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
