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
from collections.abc import Sequence
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))
from _common import marked_json, parse_int_list, ratio_table, timed_call  # noqa: E402

MARKER = "PLANS_WITHOUT_KERAS="
PLANS = ("strip", "fold", "swap")


def write_config(kind: str, size: int, path: Path) -> None:
    """The rewritten model's config, as the scaling benchmark's child makes the model."""
    import keras
    from scaling import build, deep_recursion

    from normify import graph as graphs
    from normify.flow import build_flow
    from normify.passes.add import add_norms
    from normify.rebuild import rebuild
    from normify.rules import Rules, decide

    model, _ = build(kind, size, 16, "relu")
    graph = graphs.from_model(model)
    rules = Rules()
    new_graph, _ = add_norms(graph, decide(graph, build_flow(graph), rules), rules)
    rewritten = rebuild(new_graph, share=True)
    with deep_recursion(size * 4):
        config = keras.saving.serialize_keras_object(rewritten)
    path.write_text(json.dumps(config))


def time_plans(path: Path, calls: int) -> dict[str, float]:
    from normify import graph as graphs
    from normify.passes.fold import fold_batchnorms
    from normify.passes.strip import strip_norms
    from normify.passes.swap import swap_norms

    graph = graphs.from_config(json.loads(path.read_text()))
    plans = {
        "strip": lambda: strip_norms(graph, "batchnorm"),
        "fold": lambda: fold_batchnorms(graph),
        "swap": lambda: swap_norms(graph, "batchnorm", "layernorm"),
    }
    medians = {}
    for name, plan in plans.items():
        medians[name] = statistics.median(timed_call(plan)[0] for _ in range(calls))
    imported = sorted(name for name in ("keras", "tensorflow") if name in sys.modules)
    if imported:
        raise SystemExit(f"the timing process imported {', '.join(imported)}")
    return medians


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--kind", default="residual", choices=("sequential", "residual"))
    parser.add_argument("--sizes", default="1000,2000")
    parser.add_argument("--processes", type=int, default=10)
    parser.add_argument("--calls", type=int, default=9)
    parser.add_argument("--write-config", nargs=2, metavar=("SIZE", "PATH"), help=argparse.SUPPRESS)
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
        write_config(args.kind, int(size), Path(path))
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
