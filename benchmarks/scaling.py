"""Benchmark: does normify's work grow linearly with the number of layers?

A model of thousands of layers must cost normify time in proportion to its size: no walk
over every layer, name or node for each layer. For models of N Dense layers (default N =
250, 500, 1000, 2000), each built in a fresh child process (see below), it times the parts
of `normify add`:

  (a) graph:   `normify.graph.from_model(model)`
  (d) config:  `normify.graph.from_config(config)`, the graph `audit` and the plans build
               from a file's config.json (here the same JSON Keras writes into a .keras)
  (b) plan:    `decide(graph, build_flow(graph), rules)` then `add_norms(...)`, as
               `normify.api.add` runs them
  (c) rebuild: `normify.rebuild.rebuild(new_graph, share=True)`, the rebuild of a model
               in memory (and of a file when `add` cannot build it in one go)
  (e) one build: what `normify add` does with a `.keras` file: the planned graph of the
               file's config built once, the weights read from the file
               (`normify.weightfile`); the model is saved, untimed, to a temporary file

and, on the graph of the rewritten model (N BatchNormalizations), the plans of the
passes that remove or replace norms: `strip_norms`, `fold_batchnorms` and `swap_norms`
(BatchNormalization to LayerNormalization). Three last rows, not judged, are references
to read the millisecond-scale plans' ratios by, each a loop linear by construction over
that graph: a shallow copy of every spec and node, one key read from every layer's config
(what the swap plan's mask check reads), and arithmetic alone, 64 steps per layer. The
first two touch the objects the plans touch, and show what this machine's memory adds to a
linear loop's ratio; the last touches no memory and does exactly twice the work for twice
the layers, so how far its ratio strays from 2.00 is what is left of the noise of the
clock and of the machine once the sizes are paired in one process (below).

Two model kinds: a Sequential chain of Dense layers, and a Functional residual chain in
which every block is `x = Add()([x, Dense(x)])`. The Dense layers are narrow (width 16:
the work is graph work, not arithmetic) and, by default, have a relu activation, so the
add pass splits each one into the linear layer, the inserted BatchNormalization and an
Activation, the heavier path (`--activation linear` measures the other one).

There are `--repeat` rounds (default 5: the rebuilds of the 2000-layer models take tens
of seconds each). Each round of each kind runs in one fresh child process (below), which
builds the models of every size and times every part at every size, paired: a part is
timed at all sizes before the next part starts, its calls alternating between the sizes
(small to large, then large to small; the odd and even rounds start in opposite
directions), so drifting load, and the speed of the process itself, hit all sizes alike.
On this machine the same code runs up to 9% faster in one process than in another (the
arithmetic reference and `probes/memory_walk.py` measure it), about the target's whole
margin: timing each size in its own processes, as this benchmark did before, put that
noise into every ratio. The rebuild and the one build run once per size and round, every
other part, which takes milliseconds, `--calls` times (default 5), so its median is not
at the mercy of one disturbed call. Each call is timed alone, with the garbage collector
run before it and kept off during it (as `timeit` does); no call is discarded. Medians
are reported with the ratios between consecutive sizes.

A fresh process per round: the child is this script again, with a hidden `--child KIND`
option, and prints its timings as one JSON line. The rebuild shares the original layers
(`share=True`), so each rebuild adds inbound nodes to them: a model reused across rounds
grows heavier every round (more nodes to walk, more objects for the garbage collector),
and later rounds would time different objects than the first (nor is a second rebuild
over the same layers a repeat of the first: on a 50-layer Sequential chain the first took
about 410 ms, the next ones 250 to 320 ms). A fresh process times every round on freshly
built models, as `normify add` meets them. Before timing, the child runs every part
once, untimed, on a 3-layer model of the same kind, so that one-time costs (lazy imports,
first-call setup in Keras) fall on no measured call. The parent never imports Keras; it
byte-compiles normify first, as `pip install` does, so no child recompiles it. A child
that fails stops the benchmark with the last line of its stderr (exit status 2).

Target: for every part, median(largest N) / median(next N) <= 1.1 times their size ratio
(2.2 for 2000/1000). The smaller ratios are checked looser, for steps rather than slopes:
each at most 1.6 times its size ratio (a cache that overflows between two sizes, as
`re`'s cache of 512 compiled patterns once did in strip, shows as a ratio above 3).

Models are built in the child, not loaded from files: Keras' own
`Sequential.from_config` rebuilds the model after adding each layer (quadratic: a
1000-layer Sequential takes minutes to load), which is Keras' cost, not normify's.
Keras also builds a Functional graph recursively, one Python call per chained layer, so
the recursion limit is raised while the test models are built (normify raises it itself
around its own Keras calls).

    .venv/bin/python benchmarks/scaling.py                        # 250..2000 layers, 5 rounds
    .venv/bin/python benchmarks/scaling.py --sizes 4,8 --repeat 1  # smoke test
    .venv/bin/python benchmarks/scaling.py --child residual --sizes 50,100 --calls 2  # one round
"""

from __future__ import annotations

import argparse
import contextlib
import gc
import json
import os
import shlex
import statistics
import subprocess
import sys
import tempfile
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
sys.path.insert(0, str(Path(__file__).resolve().parent))

from _common import (  # noqa: E402
    MIN_REPEAT,
    BenchmarkError,
    Check,
    add_standard_options,
    arithmetic_loop,
    byte_compile_normify,
    check_standard_options,
    describe_conditions,
    load_average,
    marked_json,
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
# Between the smaller sizes, a step rather than a slope: a cache that overflows at some
# size (`re` keeps 512 compiled patterns; strip once compiled one per layer and took 3.6x
# as long for 1000 layers as for 500). Looser than SLACK: small sizes time noisily.
STEP_SLACK = 1.6
WARM_UP_SIZE = 3  # layers of the untimed model a child runs every part on first
CHILD_MARKER = "NORMIFY_SCALING="  # starts the child's one line of JSON on stdout

# (key, label) in report order; the last three are plans of the other passes.
PARTS = (
    ("graph", "(a) graph from the model"),
    ("config", "(d) graph from config.json"),
    ("plan", "(b) add plan (decide + add_norms)"),
    ("rebuild", "(c) rebuild"),
    ("one_build", "(e) one build from the .keras file"),
    ("strip", "strip plan (N BatchNormalizations)"),
    ("fold", "fold plan (N BatchNormalizations)"),
    ("swap", "swap plan, BatchNormalization to LayerNormalization"),
    ("reference", "reference: copy every spec and node (a plain linear loop, no target)"),
    ("reference_config", "reference: read one key of every layer's config (no target)"),
    ("reference_cpu", "reference: arithmetic only, 64 steps per layer (no target)"),
)
# Parts measured to read the others by, not judged. Loops over the rewritten model's
# objects that are linear by construction show what this machine's memory adds to the
# ratios of the millisecond-scale plans, which touch the same objects; a loop of the same
# length that touches no memory does exactly twice the work for twice the layers, so its
# distance from 2.00 is the noise left in a ratio of paired timings.
REFERENCE_PARTS = ("reference", "reference_config", "reference_cpu")
CPU_STEPS_PER_LAYER = 64  # sized so that the loop takes milliseconds, as the plans do


@dataclass
class Case:
    """One model kind at one size, and every timing of its parts (from every round's
    child process)."""

    kind: str
    size: int
    seconds: dict[str, list[float]] = field(default_factory=dict)
    counts: dict[str, int] = field(default_factory=dict)  # what each pass did, every round

    def median(self, part: str) -> float:
        return statistics.median(self.seconds[part])

    def add(self, result: dict[str, Any], round_number: int) -> None:
        """Take one child's report; what the passes did must not change between rounds."""
        for part, _ in PARTS:
            self.seconds.setdefault(part, []).extend(result["seconds"][part])
        if not self.counts:
            self.counts = dict(result["counts"])
        elif result["counts"] != self.counts:
            raise BenchmarkError(
                f"{KINDS[self.kind]} of {self.size}: round {round_number} counted "
                f"{result['counts']}, round 1 {self.counts}"
            )


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


def measure_sizes(
    models: dict[int, tuple[Any, dict[str, Any]]], calls: int, reverse_first: bool
) -> dict[int, dict[str, Any]]:
    """Time every part on the model of every size, in this one process: paired.

    Each part is timed at every size before the next part starts, its calls alternating
    between the sizes (small to large, then large to small, ...; `reverse_first` starts
    with large to small), so what this process's speed does to one size it does to all.
    The rebuild and the one build run once per size, the other parts `calls` times.

    Returns `{size: {"seconds": {part: [seconds, ...]}, "counts": {...}}}`.
    """
    from normify import graph as graphs
    from normify import io
    from normify.flow import build_flow
    from normify.graph import shallow_copy
    from normify.passes.add import add_norms
    from normify.passes.fold import fold_batchnorms
    from normify.passes.strip import strip_norms
    from normify.passes.swap import swap_norms
    from normify.rebuild import rebuild
    from normify.rules import Rules, decide
    from normify.weightfile import WeightFile

    rules = Rules()
    sizes = list(models)
    seconds: dict[int, dict[str, list[float]]] = {size: {} for size in sizes}
    counts: dict[int, dict[str, int]] = {size: {} for size in sizes}

    def plan(graph: Any) -> Any:
        return add_norms(graph, decide(graph, build_flow(graph), rules), rules)

    def paired(
        part: str,
        function: Callable[[int], Callable[[], Any]],
        times: int = calls,
        keep: Callable[[Any], Any] = lambda result: result,
    ) -> dict[int, Any]:
        """Time `function(size)()` `times` times at every size, alternating sizes; what
        `keep` takes of the last result of each size (after the clock stops)."""
        results: dict[int, Any] = {}
        for call in range(times):
            order = sizes[::-1] if (call % 2 == 0) == reverse_first else sizes
            for size in order:
                elapsed, result = timed_call(function(size))
                seconds[size].setdefault(part, []).append(elapsed)
                results[size] = keep(result)
                del result
        return results

    graph = paired("graph", lambda size: lambda: graphs.from_model(models[size][0]))
    paired("config", lambda size: lambda: graphs.from_config(models[size][1]))
    planned = paired("plan", lambda size: lambda: plan(graph[size]))
    rebuilt = paired("rebuild", lambda size: lambda: rebuild(planned[size][0], share=True), times=1)
    for size in sizes:
        counts[size].update(insertions=len(planned[size][1]), layers=len(rebuilt[size].layers))
    # `normify add` on a file: plan on its config, build once with the file's weights
    with tempfile.TemporaryDirectory(prefix="normify-scaling-") as folder:
        files = {}
        for size in sizes:
            path = io.save_model(models[size][0], Path(folder) / f"model_{size}.keras")
            file_graph = graphs.from_config(io.read_config(path), source=path)
            files[size] = path, file_graph, plan(file_graph)[0]

        def build_once(size: int) -> Callable[[], Any]:
            path, file_graph, new_file_graph = files[size]

            def run() -> Any:
                with WeightFile(path, file_graph) as weights:
                    return rebuild(new_file_graph, weights=weights)

            return run

        built_layers = paired(
            "one_build", build_once, times=1, keep=lambda model: len(model.layers)
        )
    for size in sizes:
        counts[size]["one_build_layers"] = built_layers[size]
    # strip, fold and swap read a rewritten model: the graph of the one just rebuilt
    normified = {size: graphs.from_model(model) for size, model in rebuilt.items()}
    del rebuilt
    strips = paired("strip", lambda size: lambda: strip_norms(normified[size], "batchnorm"))
    folds = paired("fold", lambda size: lambda: fold_batchnorms(normified[size]))
    swaps = paired(
        "swap", lambda size: lambda: swap_norms(normified[size], "batchnorm", "layernorm")
    )
    paired(
        "reference",
        lambda size: (
            lambda: (
                [shallow_copy(spec) for spec in normified[size].layers.values()],
                [shallow_copy(node) for node in normified[size].nodes.values()],
            )
        ),
    )
    paired(
        "reference_config",
        lambda size: (
            lambda: [spec.config.get("mask_zero") for spec in normified[size].layers.values()]
        ),
    )
    paired(
        "reference_cpu",
        lambda size: lambda: arithmetic_loop(CPU_STEPS_PER_LAYER * len(normified[size].layers)),
    )
    for size in sizes:
        counts[size].update(
            strip=len(strips[size][1]), fold=len(folds[size][1]), swap=len(swaps[size][1])
        )
    return {size: {"seconds": seconds[size], "counts": counts[size]} for size in sizes}


def child(args: argparse.Namespace) -> int:
    """One round of one kind in this (fresh) process: print its timings as one JSON line."""
    from normify.backend import keras as quiet_keras

    quiet_keras()  # import Keras without TensorFlow's notices on stderr
    # Untimed warm-up on a tiny model of the same kind: lazy imports and first-call
    # setup would otherwise land in the measured calls, the single rebuilds above all.
    warm_up = {WARM_UP_SIZE: build(args.kind, WARM_UP_SIZE, args.width, args.activation)}
    measure_sizes(warm_up, calls=1, reverse_first=False)
    del warm_up
    models = {size: build(args.kind, size, args.width, args.activation) for size in args.sizes}
    gc.collect()
    result = measure_sizes(models, args.calls, reverse_first=args.round % 2 == 0)
    print(CHILD_MARKER + json.dumps(result), flush=True)
    return 0


def child_command(args: argparse.Namespace, kind: str, round_number: int) -> list[str]:
    return [
        sys.executable,
        str(Path(__file__).resolve()),
        "--child",
        kind,
        "--round",
        str(round_number),
        "--sizes",
        ",".join(map(str, args.sizes)),
        "--calls",
        str(args.calls),
        "--width",
        str(args.width),
        f"--activation={args.activation}",
    ]


def run_child(args: argparse.Namespace, kind: str, round_number: int) -> dict[int, dict]:
    """Run one round of one kind in a fresh process: `{size: result}`. A failure raises
    with its stderr's last line."""
    command = child_command(args, kind, round_number)
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3"}
    completed = subprocess.run(command, capture_output=True, text=True, env=env)
    result = marked_json(completed.stdout, CHILD_MARKER)
    if completed.returncode == 0 and result is not None:
        return {int(size): measured for size, measured in result.items()}
    if completed.returncode < 0:
        status = f"was killed by signal {-completed.returncode}"
    else:
        status = f"exited {completed.returncode}"
    stderr = completed.stderr.strip().splitlines()
    reason = stderr[-1] if stderr else "(nothing on stderr)"
    if completed.returncode == 0:
        reason = f"printed no {CHILD_MARKER} line; {reason}"
    sizes = ", ".join(map(str, args.sizes))
    raise BenchmarkError(
        f"{KINDS[kind]} of {sizes} layers, round {round_number}: child process {status}: "
        f"{reason}\n  rerun it alone: {shlex.join(command)}"
    )


def measure(args: argparse.Namespace) -> list[Case]:
    byte_compile_normify()  # else every child would compile normify's modules again
    cases = {(kind, size): Case(kind, size) for kind in args.kinds for size in args.sizes}
    for round_number in range(1, args.repeat + 1):
        log(f"round {round_number}/{args.repeat}")
        for kind in args.kinds:
            results = run_child(args, kind, round_number)
            for size in args.sizes:
                cases[kind, size].add(results[size], round_number)
                rebuild_seconds = results[size]["seconds"]["rebuild"][0]
                log(f"  {KINDS[kind]} of {size}: rebuild {rebuild_seconds:.2f} s")
    return list(cases.values())


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
            if part in REFERENCE_PARTS:
                continue
            ratio = by_size[big].median(part) / by_size[small].median(part)
            checks["ratio", kind, part] = Check(
                f"{KINDS[kind]}, {label}: {big}/{small} = {ratio:.2f} (target ≤ {limit:.2f})",
                (ratio <= limit) if timing else None,
            )
        checks["steps", kind] = _step_check(kind, by_size, sizes, timing)
        for size, case in by_size.items():
            wanted = expected_insertions(kind, size)
            got = case.counts
            checks["counts", kind, size] = Check(
                f"{KINDS[kind]} of {size}: add inserts {got['insertions']} norms (expected "
                f"{wanted}); strip removes {got['strip']}, fold folds {got['fold']}, swap "
                f"replaces {got['swap']} of them; the one build from the file has "
                f"{got['one_build_layers']} layers (the rebuild {got['layers']})",
                got["insertions"] == wanted
                and got["strip"] == got["fold"] == got["swap"] == wanted
                and got["one_build_layers"] == got["layers"],
            )
    return checks


def _step_check(kind: str, by_size: dict[int, Case], sizes: Sequence[int], timing: bool) -> Check:
    """The largest growth between consecutive smaller sizes over every judged part, against
    STEP_SLACK times the size ratio."""
    steps = [
        (by_size[b].median(part) / by_size[a].median(part) / (b / a), a, b, label)
        for part, label in PARTS
        if part not in REFERENCE_PARTS
        for a, b in zip(sizes[:-2], sizes[1:-1], strict=False)
    ]
    if not steps:
        return Check(f"{KINDS[kind]}: no smaller sizes to compare", None)
    worst, a, b, label = max(steps)
    return Check(
        f"{KINDS[kind]}, no step between the smaller sizes: the largest, {label} "
        f"{b}/{a}, grows {worst:.2f}x the size ratio (limit {STEP_SLACK:.2f}x)",
        (worst <= STEP_SLACK) if timing else None,
    )


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
            if part in REFERENCE_PARTS:
                target, verdict = "none", "reference"
            else:
                target = f"{sizes[-1]}/{sizes[-2]} ≤ {limit:.2f}"
                verdict = checks["ratio", kind, part].verdict
            rows.append(
                f"| {KINDS[kind]} | {label} | "
                + " | ".join(f"{m * 1e3:.1f}" for m in medians)
                + " | "
                + " | ".join(f"{r:.2f}" for r in ratios)
                + f" | {target} | {verdict} |"
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
        f"Median time of each part over {args.repeat} round(s), paired: each round of each "
        "model kind in one fresh process (the rebuild adds nodes to the layers it shares), "
        "which times every size, a part's calls alternating between the sizes; the rebuild "
        f"and the one build once per round, every other part {args.calls} times; "
        f"Dense({args.width}, activation={args.activation!r}) layers; after an untimed "
        "warm-up on a 3-layer model; each call timed alone with the garbage collector off "
        "(run before it); none discarded. The strip, "
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
    # One round of one kind, run by the benchmark itself in a fresh process (see the
    # docstring); --round picks the order in which its calls alternate between sizes.
    parser.add_argument("--child", choices=tuple(KINDS), help=argparse.SUPPRESS)
    parser.add_argument("--round", type=int, default=1, help=argparse.SUPPRESS)
    add_standard_options(parser, SECTION, DEFAULT_REPEAT)
    args = parser.parse_args(argv)
    check_standard_options(parser, args)
    args.kind = args.child
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
    if args.child is not None:
        return child(args)
    timing = args.repeat >= MIN_REPEAT
    before = load_average()
    cases = run_guarded(SECTION, lambda: measure(args))
    if cases is None:
        return 2
    conditions = describe_conditions(before, load_average(), byte_compiled=True)
    checks = judge(cases, args.sizes, timing)
    report = render(cases, checks, args, timing, conditions)
    return publish(SECTION, report, list(checks.values()), args, log)


if __name__ == "__main__":
    sys.exit(main())
