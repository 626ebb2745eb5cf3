"""Benchmark: does normify's work grow linearly with the number of layers?

A model of thousands of layers must cost normify time in proportion to its size: no walk
over every layer, name or node for each layer. For models of N Dense layers (default N =
250, 500, 1000, 2000), built in this process, it times the parts of `normify add`:

  (a) graph:   `normify.graph.from_model(model)`
  (d) config:  `normify.graph.from_config(config)`, the graph `audit` and the plans build
               from a file's config.json (here the same JSON Keras writes into a .keras)
  (b) plan:    `decide(graph, build_flow(graph), rules)` then `add_norms(...)`, as
               `normify.api.add` runs them
  (c) rebuild: `normify.rebuild.rebuild(new_graph, share=True)`

and, on the graph of the rewritten model (N BatchNormalizations), the plans of the
passes that remove or replace norms: `strip_norms`, `fold_batchnorms` and `swap_norms`
(BatchNormalization to LayerNormalization).

Two model kinds: a Sequential chain of Dense layers, and a Functional residual chain in
which every block is `x = Add()([x, Dense(x)])`. The Dense layers are narrow (width 16:
the work is graph work, not arithmetic) and, by default, have a relu activation, so the
add pass splits each one into the linear layer, the inserted BatchNormalization and an
Activation, the heavier path (`--activation linear` measures the other one).

There are `--repeat` rounds (default 5: the rebuilds of the 2000-layer models take tens
of seconds each); within a round each kind goes through all sizes, in reverse order every
other round, so drifting machine load hits all sizes alike. In each round the rebuild runs
once and every other part, which takes milliseconds, `--calls` times (default 5), so its
median is not at the mercy of one disturbed call. Each call is timed alone, with the
garbage collector run before it and kept off during it (as `timeit` does); no call is
discarded. Medians are reported with the ratios between consecutive sizes.

Target: for every part, median(largest N) / median(next N) <= 1.1 times their size ratio
(2.2 for 2000/1000). The smaller ratios are information.

Models are built in this process, not loaded from files: Keras' own
`Sequential.from_config` rebuilds the model after adding each layer (quadratic: a
1000-layer Sequential takes minutes to load), which is Keras' cost, not normify's.
Keras also builds a Functional graph recursively, one Python call per chained layer, so
the recursion limit is raised while the test models are built (normify raises it itself
around its own Keras calls).

    .venv/bin/python benchmarks/scaling.py                        # 250..2000 layers, 5 rounds
    .venv/bin/python benchmarks/scaling.py --sizes 4,8 --repeat 1  # smoke test
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import statistics
import sys
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
sys.path.insert(0, str(Path(__file__).resolve().parent))

from _common import (  # noqa: E402
    MIN_REPEAT,
    Check,
    add_standard_options,
    check_standard_options,
    describe_conditions,
    load_average,
    parse_int_list,
    publish,
    run_guarded,
    timed_call,
)
from _results import machine_summary  # noqa: E402

SECTION = "scaling"
DEFAULT_REPEAT = 5  # a 2000-layer rebuild takes tens of seconds; 7 rounds would take long
DEFAULT_SIZES = "250,500,1000,2000"
KINDS = {"sequential": "Sequential chain", "residual": "Functional residual chain"}
SLACK = 1.1  # allowed growth beyond linear: 2.2 for twice the layers

# (key, label) in report order; the last three are plans of the other passes.
PARTS = (
    ("graph", "(a) graph from the model"),
    ("config", "(d) graph from config.json"),
    ("plan", "(b) add plan (decide + add_norms)"),
    ("rebuild", "(c) rebuild"),
    ("strip", "strip plan (N BatchNormalizations)"),
    ("fold", "fold plan (N BatchNormalizations)"),
    ("swap", "swap plan, BatchNormalization to LayerNormalization"),
)


@dataclass
class Case:
    """One model kind at one size, and every timing of its parts."""

    kind: str
    size: int
    model: Any
    config: dict[str, Any]
    seconds: dict[str, list[float]] = field(default_factory=dict)
    counts: dict[str, int] = field(default_factory=dict)  # what each pass did (round 1)
    normified: Any = None  # graph of the rewritten model, for the strip/fold/swap plans

    def median(self, part: str) -> float:
        return statistics.median(self.seconds[part])


def log(message: str) -> None:
    """Progress goes to stderr, so stdout is exactly the markdown report."""
    print(f"[{SECTION}] {message}", file=sys.stderr, flush=True)


# ------------------------------------------------------------------------------ models


@contextlib.contextmanager
def deep_recursion(layers: int) -> Iterator[None]:
    """Room for Keras to build (and serialize) a Functional chain of `layers` layers."""
    previous = sys.getrecursionlimit()
    sys.setrecursionlimit(max(previous, 1000 + 20 * layers))
    try:
        yield
    finally:
        sys.setrecursionlimit(previous)


def build(kind: str, size: int, width: int, activation: str) -> tuple[Any, dict[str, Any]]:
    """The model, and its config as a .keras file's config.json holds it (a JSON round
    trip of `serialize_keras_object`, so lists where Keras has tuples)."""
    import keras

    keras.utils.set_random_seed(0)
    with deep_recursion(size * 2):
        inputs = keras.Input((width,), name="features")
        if kind == "sequential":
            dense = [keras.layers.Dense(width, activation=activation) for _ in range(size)]
            model = keras.Sequential([inputs, *dense], name=f"sequential_{size}")
        else:
            x = inputs
            for _ in range(size):
                x = keras.layers.Add()([x, keras.layers.Dense(width, activation=activation)(x)])
            model = keras.Model(inputs, x, name=f"residual_{size}")
        config = json.loads(json.dumps(keras.saving.serialize_keras_object(model)))
    return model, config


# ----------------------------------------------------------------------------- timing


def measure_case(case: Case, first_round: bool, calls: int) -> None:
    from normify import graph as graphs
    from normify.flow import build_flow
    from normify.passes.add import add_norms
    from normify.passes.fold import fold_batchnorms
    from normify.passes.strip import strip_norms
    from normify.passes.swap import swap_norms
    from normify.rebuild import rebuild
    from normify.rules import Rules, decide

    rules = Rules()

    def plan(graph: Any) -> Any:
        return add_norms(graph, decide(graph, build_flow(graph), rules), rules)

    def record(part: str, function: Callable[[], Any], times: int = calls) -> Any:
        for _ in range(times):
            seconds, result = timed_call(function)
            case.seconds.setdefault(part, []).append(seconds)
        return result

    graph = record("graph", lambda: graphs.from_model(case.model))
    record("config", lambda: graphs.from_config(case.config))
    new_graph, insertions = record("plan", lambda: plan(graph))
    rebuilt = record("rebuild", lambda: rebuild(new_graph, share=True), times=1)
    if first_round:
        case.counts["insertions"] = len(insertions)
        case.counts["layers"] = len(rebuilt.layers)
        # strip, fold and swap read a rewritten model: the graph of the one just rebuilt
        case.normified = graphs.from_model(rebuilt)
    del rebuilt
    normified = case.normified
    _, removals, _ = record("strip", lambda: strip_norms(normified, "batchnorm"))
    _, folds, _ = record("fold", lambda: fold_batchnorms(normified))
    _, swaps, _, _ = record(
        "swap",
        lambda: swap_norms(normified, build_flow(normified), "batchnorm", "layernorm"),
    )
    if first_round:
        case.counts.update(strip=len(removals), fold=len(folds), swap=len(swaps))


def measure(args: argparse.Namespace) -> list[Case]:
    from normify.backend import keras as quiet_keras

    quiet_keras()  # import Keras without TensorFlow's notices on stderr
    cases = []
    for kind in args.kinds:
        for size in args.sizes:
            log(f"building {KINDS[kind]} of {size} Dense layers")
            model, config = build(kind, size, args.width, args.activation)
            cases.append(Case(kind, size, model, config))
    for round_number in range(args.repeat):
        log(f"round {round_number + 1}/{args.repeat}")
        for kind in args.kinds:
            order = [case for case in cases if case.kind == kind]
            if round_number % 2:
                order.reverse()  # neither the small nor the big models always go first
            for case in order:
                measure_case(case, round_number == 0, args.calls)
    return cases


# ---------------------------------------------------------------------------- report


def expected_insertions(kind: str, size: int) -> int:
    # A Sequential's last Dense is a model output, which `add` leaves alone by default;
    # in the residual chain the output is the last Add, so every Dense gets a norm.
    return size - 1 if kind == "sequential" else size


def judge(cases: Sequence[Case], sizes: Sequence[int], timing: bool) -> dict[tuple, Check]:
    checks: dict[tuple, Check] = {}
    small, big = sizes[-2], sizes[-1]
    limit = SLACK * big / small
    for kind in dict.fromkeys(case.kind for case in cases):
        by_size = {case.size: case for case in cases if case.kind == kind}
        for part, label in PARTS:
            ratio = by_size[big].median(part) / by_size[small].median(part)
            checks["ratio", kind, part] = Check(
                f"{KINDS[kind]}, {label}: {big}/{small} = {ratio:.2f} (target ≤ {limit:.2f})",
                (ratio <= limit) if timing else None,
            )
        for size, case in by_size.items():
            wanted = expected_insertions(kind, size)
            got = case.counts
            checks["counts", kind, size] = Check(
                f"{KINDS[kind]} of {size}: add inserts {got['insertions']} norms (expected "
                f"{wanted}); strip removes {got['strip']}, fold folds {got['fold']}, swap "
                f"replaces {got['swap']} of them",
                got["insertions"] == wanted
                and got["strip"] == got["fold"] == got["swap"] == wanted,
            )
    return checks


def render(
    cases: Sequence[Case],
    checks: dict[tuple, Check],
    args: argparse.Namespace,
    timing: bool,
    conditions: str,
) -> str:
    sizes = args.sizes
    pairs = list(zip(sizes, sizes[1:], strict=False))
    header = (
        "| model | part | "
        + " | ".join(f"N={size} (ms)" for size in sizes)
        + " | "
        + " | ".join(f"{b}/{a}" for a, b in pairs)
        + " | target | result |"
    )
    rows = [header, "|---|---|" + "--:|" * (len(sizes) + len(pairs)) + "---|---|"]
    limit = SLACK * sizes[-1] / sizes[-2]
    for kind in args.kinds:
        by_size = {case.size: case for case in cases if case.kind == kind}
        for part, label in PARTS:
            medians = [by_size[size].median(part) for size in sizes]
            ratios = [by_size[b].median(part) / by_size[a].median(part) for a, b in pairs]
            rows.append(
                f"| {KINDS[kind]} | {label} | "
                + " | ".join(f"{m * 1e3:.1f}" for m in medians)
                + " | "
                + " | ".join(f"{r:.2f}" for r in ratios)
                + f" | {sizes[-1]}/{sizes[-2]} ≤ {limit:.2f} "
                f"| {checks['ratio', kind, part].verdict} |"
            )
    example = {case.kind: case for case in cases if case.size == sizes[-1]}
    layer_counts = ", ".join(
        f"{KINDS[kind]} of {sizes[-1]}: {example[kind].counts['layers']} layers after add"
        for kind in args.kinds
    )
    lines = [
        "## Scaling with model size (`benchmarks/scaling.py`)",
        "",
        f"Measured {machine_summary()}.",
        "",
        f"Median time of each part over {args.repeat} round(s), sizes alternating within "
        f"each round: the rebuild once per round, every other part {args.calls} times; "
        f"Dense({args.width}, activation={args.activation!r}) layers; each call timed "
        "alone with the garbage collector off (run before it); none discarded. The strip, "
        f"fold and swap plans read the rewritten model ({layer_counts}).",
        conditions,
        "",
        *rows,
        "",
    ]
    if not timing:
        lines += [
            f"Timing targets not judged: --repeat {args.repeat} < {MIN_REPEAT} (smoke run).",
            "",
        ]
    lines += [f"- {check.verdict}: {check.description}" for check in checks.values()]
    return "\n".join(lines) + "\n"


# ------------------------------------------------------------------------------- main


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description="Time normify's graph build, plans and rebuild on models of growing size."
    )
    parser.add_argument(
        "--sizes",
        default=DEFAULT_SIZES,
        help="Comma-separated numbers of Dense layers, at least two (default %(default)s). "
        "The target compares the two largest.",
    )
    parser.add_argument(
        "--kinds",
        default=",".join(KINDS),
        help=f"Comma-separated model kinds among {', '.join(KINDS)} (default: both).",
    )
    parser.add_argument(
        "--activation",
        default="relu",
        help="Activation of the Dense layers (default relu: add splits each layer; "
        "'linear' gives the lighter path).",
    )
    parser.add_argument("--width", type=int, default=16, help="Dense units (default 16).")
    parser.add_argument(
        "--calls",
        type=int,
        default=5,
        help="Calls per round of every part but the rebuild (default %(default)s).",
    )
    add_standard_options(parser, SECTION, DEFAULT_REPEAT)
    args = parser.parse_args(argv)
    check_standard_options(parser, args)
    args.sizes = parse_int_list(args.sizes, "--sizes", parser)
    if len(args.sizes) < 2:
        parser.error("--sizes: give at least two sizes to compare")
    args.kinds = [kind.strip() for kind in args.kinds.split(",") if kind.strip()]
    unknown = [kind for kind in args.kinds if kind not in KINDS]
    if unknown or not args.kinds:
        parser.error(f"--kinds: choose among {', '.join(KINDS)}")
    if args.width < 1 or args.calls < 1:
        parser.error("--width and --calls must be at least 1")
    return args


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    timing = args.repeat >= MIN_REPEAT
    before = load_average()
    cases = run_guarded(SECTION, lambda: measure(args))
    if cases is None:
        return 2
    conditions = describe_conditions(before, load_average())
    checks = judge(cases, args.sizes, timing)
    report = render(cases, checks, args, timing, conditions)
    return publish(SECTION, report, list(checks.values()), args, log)


if __name__ == "__main__":
    sys.exit(main())
