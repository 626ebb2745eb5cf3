"""Benchmark: does `normify add` cost about as much as opening and re-saving the model?

The load and the save are the price of any tool that writes Keras files, so the baseline
is a plain Keras script that does only that. Both run as whole processes (start, imports
and exit included), alternating per model within each round, none discarded:
(a) `python -m normify add X.keras -o Y.keras --force` against (b) `python -c
"keras.saving.load_model(X).save(Z)"`. Target: median(a) / median(b) <= 1.15. A child
then times the parts of the same rewrite in one process (imports, reading and planning,
the one build from the file with `normify.weightfile`, saving) beside the plain script's
import, load and save. Models are `keras.applications.{ResNet50, DenseNet121,
EfficientNetB0}(weights=None)`, cached in `benchmarks/.cache/`.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import (  # noqa: E402
    MIN_REPEAT,
    BenchmarkError,
    Check,
    Samples,
    add_model_options,
    add_standard_options,
    byte_compile_normify,
    check_model_options,
    check_standard_options,
    describe_conditions,
    ensure_models,
    file_size,
    load_average,
    marked_json,
    tail,
    timed_run,
)
from _results import machine_summary, replace_section  # noqa: E402

SECTION = "rewrite_overhead"
DEFAULT_MODELS = ("ResNet50", "DenseNet121", "EfficientNetB0")
DEFAULT_REPEAT = 7
RATIO_TARGET = 1.15

LOAD_SAVE_SCRIPT = "import sys, keras; keras.saving.load_model(sys.argv[1]).save(sys.argv[2])"

# The parts of `normify add`, in the order normify.api.add runs them, timed in one process.
SPLIT_MARKER = "NORMIFY_BENCH_SPLIT="
SPLIT_SCRIPT = f"""
import json, sys, time

marks = [("start", time.perf_counter())]
def mark(name):
    marks.append((name, time.perf_counter()))

path, output, mode = sys.argv[1], sys.argv[2], sys.argv[3]
if mode == "normify":
    import normify.cli
    from normify import files, graph as graphs
    from normify.loading import load_model
    from normify.saving import save_model
    from normify.flow import build_flow
    from normify.passes.add import add_norms
    from normify.rebuild import rebuild
    from normify.rules import Rules, decide
    from normify.weightfile import WeightFile, readable
    mark("import normify")
    from normify.backend import keras
    keras()
    import gc
    gc.freeze()  # as the command line does once Keras is imported (normify.cli)
    mark("import keras")
    model_file = files.read_model_file(path)
    graph = graphs.from_config(model_file.config, source=path)
    mark("read config, graph from config")
    rules = Rules()
    new_graph, insertions, _, _ = add_norms(graph, decide(graph, build_flow(graph), rules), rules)
    mark("plan")
    if insertions and readable(model_file):
        with WeightFile(path, graph) as weights:
            model = rebuild(new_graph, weights=weights)
        mark("build once from the file")
    else:  # nothing to insert: what normify.api.add does then, a plain load
        model = load_model(model_file).model
        mark("load (Keras)")
    save_model(model, output)
    mark("save")
else:
    import keras
    mark("import keras")
    model = keras.saving.load_model(path)
    mark("load (Keras)")
    model.save(output)
    mark("save")
parts = {{name: end - begin for (_, begin), (name, end) in zip(marks, marks[1:])}}
print("{SPLIT_MARKER}" + json.dumps(parts))
"""


@dataclass
class ModelResult:
    """The paired whole-process timings of one model, and its in-process splits."""

    name: str
    path: Path
    insertions: int
    normify: Samples
    plain: Samples
    split_normify: dict[str, list[float]] = field(default_factory=dict)
    split_plain: dict[str, list[float]] = field(default_factory=dict)

    @property
    def ratio(self) -> float:
        return self.normify.median / self.plain.median


def count_insertions(path: Path) -> int:
    """How many norm layers `normify add` inserts (its dry run reads only the config)."""
    completed = subprocess.run(
        [sys.executable, "-m", "normify", "add", str(path), "--dry-run", "--json"],
        capture_output=True,
        text=True,
    )
    if completed.returncode != 0:
        raise BenchmarkError(f"dry run of {path} failed:\n{tail(completed.stderr)}")
    return len(json.loads(completed.stdout)["changes"])


def split_run(path: Path, output: Path, mode: str, env: dict[str, str]) -> dict[str, float]:
    completed = subprocess.run(
        [sys.executable, "-c", SPLIT_SCRIPT, str(path), str(output), mode],
        capture_output=True,
        text=True,
        env=env,
    )
    parts = marked_json(completed.stdout, SPLIT_MARKER)
    if parts is not None:
        return parts
    raise BenchmarkError(
        f"in-process split ({mode}) of {path} failed (exit {completed.returncode}):\n"
        f"{tail(completed.stderr)}"
    )


def measure(paths: dict[str, Path], repeat: int, scratch: Path) -> list[ModelResult]:
    python = sys.executable
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3"}
    results = [
        ModelResult(name, path, count_insertions(path), Samples("normify add"), Samples("plain"))
        for name, path in paths.items()
    ]
    for round_number in range(1, repeat + 1):
        log(f"round {round_number}/{repeat}: whole processes")
        for result in results:
            rewritten, resaved = scratch / f"{result.name}.add.keras", scratch / "plain.keras"
            add = [python, "-m", "normify", "add", str(result.path), "-o", str(rewritten)]
            result.normify.seconds.append(timed_run([*add, "--force", "--quiet"], env))
            result.plain.seconds.append(
                timed_run([python, "-c", LOAD_SAVE_SCRIPT, str(result.path), str(resaved)], env)
            )
    for round_number in range(1, repeat + 1):
        log(f"round {round_number}/{repeat}: in-process split")
        for result in results:
            for mode, split in (("normify", result.split_normify), ("plain", result.split_plain)):
                parts = split_run(result.path, scratch / f"split-{mode}.keras", mode, env)
                for name, seconds in parts.items():
                    split.setdefault(name, []).append(seconds)
    return results


def judge(results: Sequence[ModelResult], timing: bool) -> dict[str, Check]:
    return {
        r.name: Check(
            f"add/load+save {r.name}: {r.ratio:.3f} (target ≤ {RATIO_TARGET})",
            (r.ratio <= RATIO_TARGET) if timing else None,
        )
        for r in results
    }


def render(
    results: Sequence[ModelResult],
    checks: dict[str, Check],
    repeat: int,
    timing: bool,
    conditions: str,
) -> str:
    rows = [
        "| model | norms inserted | `normify add` median (s) | min (s) "
        "| load+save median (s) | min (s) | ratio (medians) | target | result |",
        "|---|--:|--:|--:|--:|--:|--:|---|---|",
    ]
    for r in results:
        rows.append(
            f"| {r.name} ({file_size(r.path)}) | {r.insertions} | {r.normify.median:.3f} "
            f"| {r.normify.minimum:.3f} | {r.plain.median:.3f} | {r.plain.minimum:.3f} "
            f"| {r.ratio:.3f} | ≤ {RATIO_TARGET} | {checks[r.name].verdict} |"
        )
    split_rows = [
        "| model | part | normify (s) | plain load+save (s) |",
        "|---|---|--:|--:|",
    ]
    for r in results:
        names = list(dict.fromkeys([*r.split_normify, *r.split_plain]))
        for name in names:
            ours = r.split_normify.get(name)
            theirs = r.split_plain.get(name)
            split_rows.append(
                f"| {r.name} | {name} | {_median_text(ours)} | {_median_text(theirs)} |"
            )
        split_rows.append(
            f"| {r.name} | **total in process** | {_total(r.split_normify):.3f} "
            f"| {_total(r.split_plain):.3f} |"
        )
    lines = [
        "## Rewrite overhead (`benchmarks/rewrite_overhead.py`)",
        "",
        f"Measured {machine_summary()}.",
        "",
        f"Whole processes, {repeat} run(s) of each, alternating `normify add X -o Y` and a "
        "plain `keras.saving.load_model(X).save(Z)` script; none discarded.",
        conditions,
        "",
        *rows,
        "",
        f"In-process split (median of {repeat} child process(es) per side; the parts of "
        "`normify add` in the order it runs them):",
        "",
        *split_rows,
        "",
        "normify builds the new model once, from the file's config, with the weights read "
        "from the file; a model with nothing to insert is loaded by Keras. Its loads and "
        "saves also skip a cost the plain script pays: Keras recomputes an attribute set "
        "for every layer it saves or loads, its cache never hitting "
        "(`normify.keras_internals.mend_saving_cache`).",
        "",
    ]
    if not timing:
        lines += [f"Timing targets not judged: --repeat {repeat} < {MIN_REPEAT} (smoke run).", ""]
    lines += [f"- {check.verdict}: {check.description}" for check in checks.values()]
    return "\n".join(lines) + "\n"


def _median_text(values: list[float] | None) -> str:
    return f"{statistics.median(values):.3f}" if values else ""


def _total(split: dict[str, list[float]]) -> float:
    return sum(statistics.median(values) for values in split.values())


def log(message: str) -> None:
    print(f"[{SECTION}] {message}", file=sys.stderr, flush=True)


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description="Time `normify add` against a plain Keras load+save on real models."
    )
    add_model_options(parser, DEFAULT_MODELS)
    add_standard_options(parser, SECTION, DEFAULT_REPEAT)
    args = parser.parse_args(argv)
    check_model_options(parser, args)
    check_standard_options(parser, args)
    return args


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    timing = args.repeat >= MIN_REPEAT
    try:
        paths = ensure_models(list(dict.fromkeys(args.models)), args.cache, log)
        byte_compile_normify()
        with tempfile.TemporaryDirectory(prefix="normify-bench-") as scratch:
            before = load_average()
            results = measure(paths, args.repeat, Path(scratch))
            conditions = describe_conditions(before, load_average(), byte_compiled=True)
    except BenchmarkError as error:
        print(f"{SECTION}: error: {error}", file=sys.stderr)
        return 2
    checks = judge(results, timing)
    report = render(results, checks, args.repeat, timing, conditions)
    sys.stdout.write(report)
    if args.write_results:
        written = replace_section(SECTION, report, args.results_file)
        log(f"wrote section '{SECTION}' of {written}")
    failed = [check for check in checks.values() if check.passed is False]
    return 1 if args.check and failed else 0


if __name__ == "__main__":
    sys.exit(main())
