"""Probe: what one call of each plan executes, counted by valgrind's callgrind, not timed.

Not run by `run_all.py`: it needs valgrind, which is not a Python dependency (on Debian,
`apt-get install valgrind`). A clock on a shared machine moves by several percent from one
process to the next; callgrind counts the same instructions for the same program and
input whatever else the machine does. Its cache simulator, given this machine's L1 data
cache and L2 (read from /sys), also counts the memory accesses that miss them. So the
probe splits a plan's growth between sizes into what the code does (instructions: a
walk over every layer for each layer would show here, noise or not) and what the memory
does (L2 misses: data that stayed in the cache for the smaller model and not the larger).

Each plan runs on `normify.graph.from_config` of a model's config.json, in a process that
imports no Keras (the probe checks): `add` on the scaling benchmark's model, `strip`,
`fold` and `swap` on that model rewritten by `add` (as `plans_without_keras.py` makes
them). What one call costs is the difference between a process that runs the plan once
and one that runs it 1 + `--extra-calls` times, divided by `--extra-calls`: the
interpreter's start, the imports and the graph's building cancel out. String hashing is
fixed (PYTHONHASHSEED=0) and numpy's BLAS gets one thread (its idle threads spin, and
callgrind counts their instructions too), so the counts repeat exactly from run to run
(two runs of the swap plan on the same 2000-layer residual chain: 148,529,537 instructions
per call both times; with BLAS threads, 150.2 and 152.1 million).

    .venv/bin/python benchmarks/probes/instructions.py          # sequential, 1000,2000: ~6 min
    .venv/bin/python benchmarks/probes/instructions.py --kind residual --plans add,swap
"""

from __future__ import annotations

import argparse
import gc
import json
import os
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))
sys.path.insert(0, str(HERE))
from _common import parse_int_list, ratio_table  # noqa: E402
from plans_without_keras import plan_calls, run, without_keras  # noqa: E402

PLANS = ("add", "strip", "fold", "swap")
CACHES = Path("/sys/devices/system/cpu/cpu0/cache")


def cache_option(level: int, kinds: tuple[str, ...]) -> str:
    """callgrind's `size,associativity,line size` for this machine's cache of `level`."""
    for index in sorted(CACHES.glob("index*")):
        if int((index / "level").read_text()) == level and (
            (index / "type").read_text().strip() in kinds
        ):
            size = (index / "size").read_text().strip()
            kilobytes = int(size.rstrip("K")) if size.endswith("K") else int(size) // 1024
            ways = int((index / "ways_of_associativity").read_text())
            line = int((index / "coherency_line_size").read_text())
            return f"{kilobytes * 1024},{ways},{line}"
    raise SystemExit(f"no level {level} {'/'.join(kinds)} cache described under {CACHES}")


def count(config: Path, plan: str, calls: int, machine: dict[str, str], out: Path) -> dict:
    """callgrind's totals for a process that runs `plan` `calls` times on `config`."""
    command = [
        "valgrind",
        "--tool=callgrind",
        "--cache-sim=yes",
        f"--D1={machine['D1']}",
        f"--LL={machine['L2']}",
        f"--callgrind-out-file={out}",
        sys.executable,
        __file__,
        "--run",
        str(config),
        plan,
        str(calls),
    ]
    env = {**os.environ, "PYTHONHASHSEED": "0", "OPENBLAS_NUM_THREADS": "1", "OMP_NUM_THREADS": "1"}
    completed = subprocess.run(command, capture_output=True, text=True, env=env)
    if completed.returncode != 0:
        lines = completed.stderr.strip().splitlines() or ["(nothing on stderr)"]
        raise SystemExit(f"{plan} on {config.name}, {calls} call(s): {lines[-1]}")
    events: list[str] = []
    for line in out.read_text().splitlines():
        if line.startswith("events:"):
            events = line.split()[1:]
        elif line.startswith(("summary:", "totals:")):
            return dict(zip(events, map(int, line.split()[1:]), strict=True))
    raise SystemExit(f"{out}: callgrind wrote no totals")


def run_plan(config: Path, plan: str, calls: int) -> None:
    """The counted process: build the graph, run the plan `calls` times, import no Keras."""
    from normify import graph as graphs

    call = plan_calls(graphs.from_config(json.loads(config.read_text())))[plan]
    gc.collect()
    gc.disable()  # as the benchmarks time a call: no collection inside it
    for _ in range(calls):
        call()
    without_keras("the counted process")


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--kind", default="sequential", choices=("sequential", "residual"))
    parser.add_argument("--sizes", default="1000,2000")
    parser.add_argument("--plans", default=",".join(PLANS))
    parser.add_argument("--extra-calls", type=int, default=2)
    # The counted process, run by the probe itself under valgrind.
    parser.add_argument(
        "--run", nargs=3, metavar=("CONFIG", "PLAN", "CALLS"), help=argparse.SUPPRESS
    )
    args = parser.parse_args(argv)
    if args.run is not None:
        return args
    args.sizes = parse_int_list(args.sizes, "--sizes", parser)
    args.plans = [plan.strip() for plan in args.plans.split(",") if plan.strip()]
    if len(args.sizes) < 2 or args.extra_calls < 1:
        parser.error("give at least two sizes and --extra-calls >= 1")
    if not args.plans or set(args.plans) - set(PLANS):
        parser.error(f"--plans: choose among {', '.join(PLANS)}")
    return args


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    if args.run is not None:
        config, plan, calls = args.run
        run_plan(Path(config), plan, int(calls))
        return 0
    if shutil.which("valgrind") is None:
        message = "instructions: valgrind not found (Debian: apt-get install valgrind)"
        print(message, file=sys.stderr)
        return 2
    machine = {"D1": cache_option(1, ("Data", "Unified")), "L2": cache_option(2, ("Unified",))}
    extra = args.extra_calls
    with tempfile.TemporaryDirectory(prefix="normify-probe-") as name:
        folder = Path(name)
        configs = {}
        for size in args.sizes:
            original, rewritten = folder / f"{size}_original.json", folder / f"{size}.json"
            # that probe's child builds, adds and rebuilds as the scaling benchmark does
            run(
                ["--kind", args.kind, "--write-config", str(size), str(rewritten)]
                + ["--original", str(original)]
            )
            configs[size] = {plan: rewritten for plan in PLANS} | {"add": original}

        def counted(job: tuple[int, str, int]) -> dict[str, int]:
            size, plan, calls = job
            out = folder / f"{size}_{plan}_{calls}.callgrind"
            return count(configs[size][plan], plan, calls, machine, out)

        jobs = [
            (size, plan, calls)
            for size in args.sizes
            for plan in args.plans
            for calls in (1, 1 + extra)
        ]
        with ThreadPoolExecutor(max_workers=os.cpu_count() or 1) as pool:
            totals = dict(zip(jobs, pool.map(counted, jobs), strict=True))

    def per_call(size: int, plan: str, events: tuple[str, ...]) -> float:
        more, once = totals[size, plan, 1 + extra], totals[size, plan, 1]
        return sum(more[event] - once[event] for event in events) / extra

    sizes = args.sizes
    instructions = {plan: [per_call(size, plan, ("Ir",)) for size in sizes] for plan in args.plans}
    misses = {
        plan: [per_call(size, plan, ("DLmr", "DLmw")) for size in sizes] for plan in args.plans
    }
    print(
        f"{args.kind}, per call of each plan (callgrind; the difference between 1 and "
        f"{1 + extra} calls, over {extra}); simulated caches: L1 data {machine['D1']}, "
        f"L2 {machine['L2']} (size, ways, line)"
    )
    print()
    print(ratio_table("instructions", args.sizes, instructions, "M"))
    print()
    print(ratio_table("L2 data misses (reads + writes)", args.sizes, misses, "k"))
    return 0


if __name__ == "__main__":
    sys.exit(main())
