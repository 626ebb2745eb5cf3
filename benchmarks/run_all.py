"""Run every benchmark in this folder, one child process each, with the same options.

A benchmark is any `benchmarks/*.py` whose name does not start with `_` (helpers) and is
not this file. Each must accept `--repeat N`, `--write-results` and `--check`, which are
passed through unchanged, so adding a benchmark needs no edit here. Benchmarks run one
after another, never in parallel: concurrent runs would time each other.
"""

from __future__ import annotations

import argparse
import subprocess
import sys
from collections.abc import Sequence
from pathlib import Path

HERE = Path(__file__).resolve().parent


def discover() -> dict[str, Path]:
    """Benchmark scripts by name (file stem), in a stable order."""
    return {
        path.stem: path
        for path in sorted(HERE.glob("*.py"))
        if not path.name.startswith("_") and path.name != Path(__file__).name
    }


def main(argv: Sequence[str] | None = None) -> int:
    available = discover()
    parser = argparse.ArgumentParser(description="Run the normify benchmarks.")
    parser.add_argument(
        "names",
        nargs="*",
        metavar="NAME",
        help=f"Benchmarks to run (default: all of {', '.join(available)}).",
    )
    parser.add_argument("--repeat", type=int, help="Passed to each benchmark.")
    parser.add_argument(
        "--write-results", action="store_true", help="Update benchmarks/RESULTS.md."
    )
    parser.add_argument("--check", action="store_true", help="Exit 1 if any target fails.")
    args = parser.parse_args(argv)
    unknown = [name for name in args.names if name not in available]
    if unknown:
        parser.error(f"unknown benchmark(s) {', '.join(unknown)}; have {', '.join(available)}")

    passthrough = [f"--repeat={args.repeat}"] if args.repeat is not None else []
    passthrough += ["--write-results"] if args.write_results else []
    passthrough += ["--check"] if args.check else []
    worst = 0
    for name in args.names or list(available):
        print(f"[run_all] {name}", file=sys.stderr, flush=True)
        code = subprocess.run([sys.executable, str(available[name]), *passthrough]).returncode
        if code != 0:
            print(f"[run_all] {name} exited {code}", file=sys.stderr, flush=True)
        worst = max(worst, code)
    return worst


if __name__ == "__main__":
    sys.exit(main())
