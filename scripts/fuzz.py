"""Run many more hostile-file cases than the test suite does, and summarize them.

    .venv/bin/python scripts/fuzz.py --cases 1000 --seed 1
    .venv/bin/python scripts/fuzz.py --cases 300 --command add --seed 7 --save build/fuzz

Each case is a fixture mutated by tests/fuzz.py (truncations, byte flips, zip members
removed, replaced or declaring sizes they do not hold, config.json with wrong types,
missing keys, huge numbers, deep nesting, unknown classes, rewired graphs), plus the
hand-made size bombs. Every case must keep the command line's contract: exit 0 with a
correct result, or exit 2 with one line naming the file; no traceback, no hang, no file
left behind after a failure, the input untouched (see tests/fuzz.py for the details).

`--cases N` runs N cases per command (`--command audit`, `add` or `both`, the default);
case `i` mutates fixture `i % len(fixtures)` with kind `i % 11`, so a case is rebuilt
from its seed and number alone (`tests/fuzz.py: mutation(bytes, seed, i)`). `--save DIR`
copies the input of every failing case there. `--jobs J` runs J child processes side by
side. The exit status is 0 when every case kept the contract, 1 otherwise.
"""

from __future__ import annotations

import argparse
import collections
import shutil
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))

import fuzz  # noqa: E402  (tests/fuzz.py, found through the path above)


def main() -> int:
    arguments = _parser().parse_args()
    commands = ["audit", "add"] if arguments.command == "both" else [arguments.command]
    fixtures = arguments.fixtures or fuzz.default_fixtures()
    with tempfile.TemporaryDirectory(prefix="normify_fuzz_") as folder:
        root = Path(folder)
        cases = fuzz.build_cases(fixtures, arguments.seed, arguments.cases, root / "inputs")
        if not arguments.no_crafted:
            cases += fuzz.crafted_cases(root / "crafted")
        broken = []
        for command in commands:
            started = time.monotonic()
            outcomes = _run(cases, command, root / command, arguments)
            _summarize(command, outcomes, time.monotonic() - started)
            broken += fuzz.failures(outcomes)
        if arguments.save and broken:
            _save(broken, cases, Path(arguments.save))
    for outcome in broken[: arguments.show]:
        print(fuzz.describe(outcome)[:1000])
    print(f"seed {arguments.seed}: {len(broken)} case(s) broke the contract")
    return 1 if broken else 0


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--cases", type=int, default=1000, help="mutated cases per command")
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--command", choices=["audit", "add", "both"], default="both")
    parser.add_argument("--fixtures", nargs="*", help="fixture names (default: the manifest)")
    parser.add_argument("--case-seconds", type=float, default=30.0, help="limit per case")
    parser.add_argument("--total-seconds", type=float, default=6 * 3600.0)
    parser.add_argument("--jobs", type=int, default=1, help="child processes side by side")
    parser.add_argument("--save", metavar="DIR", help="copy failing inputs here")
    parser.add_argument("--show", type=int, default=50, help="failures to print")
    parser.add_argument("--no-crafted", action="store_true", help="skip the size bombs")
    return parser


def _run(
    cases: list[fuzz.Case], command: str, folder: Path, arguments: argparse.Namespace
) -> list[fuzz.Outcome]:
    chunks = [cases[job :: arguments.jobs] for job in range(arguments.jobs)]

    def run(job: int) -> list[fuzz.Outcome]:
        return fuzz.run_cases(
            chunks[job],
            command,
            folder / f"job_{job}",
            case_seconds=arguments.case_seconds,
            total_seconds=arguments.total_seconds,
        )

    with ThreadPoolExecutor(arguments.jobs) as pool:
        results = list(pool.map(run, range(arguments.jobs)))
    return sorted((o for outcomes in results for o in outcomes), key=lambda o: o.id)


def _summarize(command: str, outcomes: list[fuzz.Outcome], seconds: float) -> None:
    rows: dict[str, collections.Counter[str]] = collections.defaultdict(collections.Counter)
    for outcome in outcomes:
        kind = "crafted" if outcome.id >= 100_000 else outcome.label.split(":")[0]
        rows[kind]["cases"] += 1
        rows[kind][f"exit {outcome.exit}" if outcome.exit in (0, 2) else "other"] += 1
        rows[kind]["broken"] += bool(outcome.problems)
    slowest = max(outcomes, key=lambda outcome: outcome.seconds)
    print(f"\nnormify {command}: {len(outcomes)} cases in {seconds:.0f} s")
    print(f"{'kind':<16}{'cases':>7}{'exit 0':>8}{'exit 2':>8}{'other':>7}{'broken':>8}")
    for kind in (*fuzz.KINDS, "crafted"):
        if kind in rows:
            row = rows[kind]
            print(
                f"{kind:<16}{row['cases']:>7}{row['exit 0']:>8}{row['exit 2']:>8}"
                f"{row['other']:>7}{row['broken']:>8}"
            )
    print(f"slowest case: {slowest.seconds:.2f} s ({slowest.fixture} [{slowest.label[:60]}])")


def _save(broken: list[fuzz.Outcome], cases: list[fuzz.Case], folder: Path) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    by_id = {case.id: case for case in cases}
    for outcome in broken:
        source = Path(by_id[outcome.id].path)
        shutil.copyfile(source, folder / f"{outcome.command}_{source.name}")
    print(f"saved {len(broken)} failing input(s) to {folder}")


if __name__ == "__main__":
    sys.exit(main())
