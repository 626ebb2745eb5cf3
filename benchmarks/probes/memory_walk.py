"""Probe: how does this machine time a linear loop as the data it walks grows?

Not a benchmark of normify (it imports nothing of it) and not run by `run_all.py`: it
reads the scaling benchmark's millisecond-scale ratios by. For each size N, in a fresh
process per measurement, it times:

  arithmetic      a loop of 64 integer steps per object, touching no memory: exactly
                  twice the work for twice the objects, so its distance from 2.00 is the
                  noise of the clock and of the processes
  walk, <start>   a dict comprehension over N small objects, each followed in memory by
                  `--padding` small dicts and lists (as a layer's spec is followed by its
                  config), starting from one of three cache states: `gc` (the garbage
                  collector's pass before the call, as the benchmarks' `timed_call` does),
                  `none` (as the previous call left them) or `flush` (64 MB written)

Medians of `--calls` calls, and their ratios between consecutive sizes.

    .venv/bin/python benchmarks/probes/memory_walk.py
    .venv/bin/python benchmarks/probes/memory_walk.py --sizes 50,100 --calls 3 --padding 2  # smoke
"""

from __future__ import annotations

import argparse
import gc
import json
import statistics
import subprocess
import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from _common import arithmetic_loop, marked_json, parse_int_list, ratio_table  # noqa: E402

STARTS = ("gc", "none", "flush")
MODES = ("arithmetic", *(f"walk, {start}" for start in STARTS))
STEPS_PER_OBJECT = 64
FLUSH_BYTES = 64 * 2**20
MARKER = "MEMORY_WALK="


class Item:
    def __init__(self, index: int) -> None:
        self.name = f"layer_{index}"
        self.kind = "dense"


def measure(mode: str, size: int, padding: int, calls: int) -> float:
    """Median seconds of `calls` calls of `mode` on `size` objects, in this process."""
    items: dict[str, Item] = {}
    neighbours = []  # kept alive: they are what spreads the items in memory
    for index in range(size):
        item = Item(index)
        items[item.name] = item
        neighbours.append([{"key": j, "value": [j]} for j in range(padding)])
    flush = bytearray(FLUSH_BYTES)
    work: Callable[[], object]
    if mode == "arithmetic":
        steps = STEPS_PER_OBJECT * size
        work = lambda: arithmetic_loop(steps)  # noqa: E731
    else:
        work = lambda: {name: item for name, item in items.items()}  # noqa: E731
    start = mode.partition(", ")[2]
    seconds = []
    gc.disable()
    for _ in range(calls):
        if start == "gc":
            gc.collect()
        elif start == "flush":
            flush[:] = bytes(FLUSH_BYTES)
        began = time.perf_counter()
        work()
        seconds.append(time.perf_counter() - began)
    return statistics.median(seconds)


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", default="4000,8000,16000,32000")
    parser.add_argument("--padding", type=int, default=16)
    parser.add_argument("--calls", type=int, default=21)
    parser.add_argument("--child", nargs=2, metavar=("MODE", "SIZE"), help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    args.sizes = parse_int_list(args.sizes, "--sizes", parser)
    if len(args.sizes) < 2 or args.calls < 1 or args.padding < 0:
        parser.error("give at least two sizes, --calls >= 1 and --padding >= 0")
    return args


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    if args.child is not None:
        mode, size = args.child
        print(MARKER + json.dumps(measure(mode, int(size), args.padding, args.calls)))
        return 0
    rows = {}
    for mode in MODES:
        medians = []
        for size in args.sizes:
            command = [sys.executable, __file__, "--child", mode, str(size)]
            command += ["--padding", str(args.padding), "--calls", str(args.calls)]
            out = subprocess.run(command, capture_output=True, text=True, check=True).stdout
            medians.append(marked_json(out, MARKER))
        rows[mode] = medians
    print(ratio_table("loop", args.sizes, rows, "µs"))
    return 0


if __name__ == "__main__":
    sys.exit(main())
