"""Probe: the fold, swap and strip plans' growth in processes that never import Keras.

Not run by `run_all.py`. The scaling benchmark times these plans on the graph of a live
rewritten model, in a process that holds that model and the original (hundreds of MB of
Keras and TensorFlow objects). This probe takes the same rewritten models' config.json
(one child per size builds, adds and rebuilds as the benchmark does, and writes it) and
times the plans on `normify.graph.from_config` of it in `--processes` fresh processes per
size that import no Keras, alternating sizes: what the plans cost on the smallest heap
they can have. Each process reports the median of `--calls` calls (garbage collector run
before each call and off during it, as in the benchmark); the table gives the median over
processes and the ratios.

    .venv/bin/python benchmarks/probes/plans_without_keras.py            # residual, 1000,2000
    .venv/bin/python benchmarks/probes/plans_without_keras.py --sizes 4,8 --processes 2
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import tempfile
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))
from _common import marked_json, parse_int_list, ratio_table, timed_call  # noqa: E402

MARKER = "PLANS_WITHOUT_KERAS="
PLANS = ("strip", "fold", "swap")


def write_config(kind: str, size: int, path: Path, original: Path | None = None) -> None:
    """The rewritten model's config, as the scaling benchmark's child makes the model (and,
    to `original`, the config of the model before `add`)."""
    import keras
    from scaling import build, deep_recursion

    from normify import graph as graphs
    from normify.rebuild import rebuild

    model, config = build(kind, size, 16, "relu")
    if original is not None:
        original.write_text(json.dumps(config))
    new_graph, _ = plan_calls(graphs.from_model(model))["add"]()
    rewritten = rebuild(new_graph, share=True)
    with deep_recursion(size * 4):
        config = keras.saving.serialize_keras_object(rewritten)
    path.write_text(json.dumps(config))


def plan_calls(graph: Any) -> dict[str, Callable[[], Any]]:
    """Each pass's plan as a call on `graph`, as `normify.api` runs it: `add` for a graph
    before `add`, the others for a rewritten one."""
    from normify.flow import build_flow
    from normify.passes.add import add_norms
    from normify.passes.fold import fold_batchnorms
    from normify.passes.strip import strip_norms
    from normify.passes.swap import swap_norms
    from normify.rules import Rules, decide

    rules = Rules()
    return {
        "add": lambda: add_norms(graph, decide(graph, build_flow(graph), rules), rules),
        "strip": lambda: strip_norms(graph, "batchnorm"),
        "fold": lambda: fold_batchnorms(graph),
        "swap": lambda: swap_norms(graph, "batchnorm", "layernorm"),
    }


def without_keras(process: str) -> None:
    """Stop (exit status 1) if this process imported Keras or TensorFlow."""
    imported = sorted(module for module in ("keras", "tensorflow") if module in sys.modules)
    if imported:
        raise SystemExit(f"{process} imported {', '.join(imported)}")


def time_plans(path: Path, calls: int) -> dict[str, float]:
    from normify import graph as graphs

    plans = plan_calls(graphs.from_config(json.loads(path.read_text())))
    medians = {}
    for name in PLANS:
        medians[name] = statistics.median(timed_call(plans[name])[0] for _ in range(calls))
    without_keras("the timing process")
    return medians


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--kind", default="residual", choices=("sequential", "residual"))
    parser.add_argument("--sizes", default="1000,2000")
    parser.add_argument("--processes", type=int, default=10)
    parser.add_argument("--calls", type=int, default=9)
    parser.add_argument("--write-config", nargs=2, metavar=("SIZE", "PATH"), help=argparse.SUPPRESS)
    parser.add_argument("--original", metavar="PATH", help=argparse.SUPPRESS)
    parser.add_argument("--time", metavar="PATH", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    args.sizes = parse_int_list(args.sizes, "--sizes", parser)
    if len(args.sizes) < 2 or args.processes < 1 or args.calls < 1:
        parser.error("give at least two sizes, --processes >= 1 and --calls >= 1")
    return args


def run(arguments: list[str]) -> str:
    command = [sys.executable, __file__, *arguments]
    completed = subprocess.run(command, capture_output=True, text=True)
    if completed.returncode != 0:
        lines = completed.stderr.strip().splitlines() or ["(nothing on stderr)"]
        raise SystemExit(f"{' '.join(arguments)}: {lines[-1]}")
    return completed.stdout


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    if args.write_config is not None:
        size, path = args.write_config
        original = Path(args.original) if args.original else None
        write_config(args.kind, int(size), Path(path), original)
        return 0
    if args.time is not None:
        print(MARKER + json.dumps(time_plans(Path(args.time), args.calls)))
        return 0
    with tempfile.TemporaryDirectory(prefix="normify-probe-") as folder:
        paths = {size: Path(folder) / f"{args.kind}_{size}.json" for size in args.sizes}
        for size, path in paths.items():
            run(["--kind", args.kind, "--write-config", str(size), str(path)])
        results: dict[int, list[dict[str, float]]] = {size: [] for size in args.sizes}
        for process in range(args.processes):
            order = args.sizes if process % 2 == 0 else args.sizes[::-1]
            for size in order:
                out = run(["--time", str(paths[size]), "--calls", str(args.calls)])
                results[size].append(marked_json(out, MARKER))
    print(
        f"{args.kind}, {args.processes} processes per size, median over processes of each "
        f"process's median of {args.calls} calls"
    )
    print()
    medians = {
        plan: [statistics.median(r[plan] for r in results[size]) for size in args.sizes]
        for plan in PLANS
    }
    print(ratio_table("plan", args.sizes, medians, "ms"))
    return 0


if __name__ == "__main__":
    sys.exit(main())
