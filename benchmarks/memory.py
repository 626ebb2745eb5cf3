"""Benchmark: does `normify add` hold no more copies of the weights than load+save does?

A rewrite must load the model and save the result, so the fair baseline for its memory
is a plain Keras script that only loads and saves. Both run as whole processes on a model
of about 1 GB of float32 weights, `Input(8192)` then four Dense(8192) layers (the first
three with a relu activation, so `normify add` splits each into the linear layer, a
BatchNormalization and an Activation; the last is linear and a model output, which add
leaves alone by default):

  (a) python -m normify add X.keras -o Y.keras --force --quiet
  (b) python -c "keras.saving.load_model(X).save(Z)"

Runs alternate a, b, a, b ... (`--repeat` of each, default 5, none discarded). The peak
resident memory of each child is its own `ru_maxrss` from `os.wait4`; wall time is
recorded too. Target: median peak(a) / median peak(b) <= 1.25, that is, the rewrite
keeps less than a quarter of the model's size on top of what loading and saving cost.

The model is built once (fixed seed) in a child process and cached in
`benchmarks/.cache/`; outputs go to a temporary folder, deleted afterwards.
`--width` and `--layers` change the model (`--width 64` for the smoke test).
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import (  # noqa: E402
    DEFAULT_CACHE,
    MIN_REPEAT,
    Check,
    Samples,
    add_standard_options,
    byte_size,
    check_standard_options,
    describe_conditions,
    ensure_models,
    file_size,
    load_average,
    peak_rss_run,
    publish,
    run_guarded,
)
from _results import machine_summary  # noqa: E402

SECTION = "memory"
DEFAULT_REPEAT = 5  # each run reads and writes a 1 GB file
DEFAULT_WIDTH = 8192
DEFAULT_LAYERS = 4
RATIO_TARGET = 1.25

LOAD_SAVE_SCRIPT = "import sys, keras; keras.saving.load_model(sys.argv[1]).save(sys.argv[2])"

# Receives `name path` pairs; a name is `dense<width>x<layers>`.
BUILD_SCRIPT = """
import os, re, sys
import keras

for name, path in zip(sys.argv[1::2], sys.argv[2::2]):
    width, layers = (int(part) for part in re.fullmatch(r"dense(\\d+)x(\\d+)", name).groups())
    keras.utils.set_random_seed(0)
    inputs = keras.Input((width,), name="features")
    x = inputs
    for index in range(layers):
        last = index == layers - 1
        x = keras.layers.Dense(width, activation=None if last else "relu", name=f"dense_{index}")(x)
    model = keras.Model(inputs, x, name=name)
    partial = os.path.join(os.path.dirname(path), ".partial-" + os.path.basename(path))
    model.save(partial)
    os.replace(partial, path)  # a killed build never leaves a truncated cache file
"""


@dataclass
class Result:
    """Peak memory (bytes) and wall time (seconds) of both commands, paired by round."""

    path: Path
    weight_bytes: int
    add_peak: Samples
    plain_peak: Samples
    add_time: Samples
    plain_time: Samples

    @property
    def ratio(self) -> float:
        return self.add_peak.median / self.plain_peak.median

    @property
    def extra_copies(self) -> float:
        """What add holds beyond load+save, in copies of the model's weights."""
        return (self.add_peak.median - self.plain_peak.median) / self.weight_bytes


def log(message: str) -> None:
    """Progress goes to stderr, so stdout is exactly the markdown report."""
    print(f"[{SECTION}] {message}", file=sys.stderr, flush=True)


def model_name(width: int, layers: int) -> str:
    return f"dense{width}x{layers}"


def weight_bytes(width: int, layers: int) -> int:
    """float32 kernels and biases of `layers` Dense(width) layers fed `width` features."""
    return layers * (width * width + width) * 4


def measure(args: argparse.Namespace) -> Result:
    name = model_name(args.width, args.layers)
    path = ensure_models([name], args.cache, log, script=BUILD_SCRIPT)[name]
    python = sys.executable
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3"}
    result = Result(
        path,
        weight_bytes(args.width, args.layers),
        Samples("normify add peak"),
        Samples("load+save peak"),
        Samples("normify add time"),
        Samples("load+save time"),
    )
    with tempfile.TemporaryDirectory(prefix="normify-bench-memory-") as scratch:
        rewritten, resaved = Path(scratch) / "added.keras", Path(scratch) / "resaved.keras"
        add = [python, "-m", "normify", "add", str(path), "-o", str(rewritten), "--force"]
        plain = [python, "-c", LOAD_SAVE_SCRIPT, str(path), str(resaved)]
        for round_number in range(1, args.repeat + 1):
            log(f"round {round_number}/{args.repeat}")
            seconds, peak = peak_rss_run([*add, "--quiet"], env)
            result.add_time.seconds.append(seconds)
            result.add_peak.seconds.append(peak)
            seconds, peak = peak_rss_run(plain, env)
            result.plain_time.seconds.append(seconds)
            result.plain_peak.seconds.append(peak)
            for output in (rewritten, resaved):  # a GB each: do not keep two on disk
                output.unlink(missing_ok=True)
    return result


def judge(result: Result, timing: bool) -> list[Check]:
    return [
        Check(
            f"peak RSS normify add / load+save: {result.ratio:.3f} (target ≤ {RATIO_TARGET})",
            (result.ratio <= RATIO_TARGET) if timing else None,
        )
    ]


def render(
    result: Result, checks: list[Check], args: argparse.Namespace, timing: bool, conditions: str
) -> str:
    mb = 1e6

    def row(what: str, peak: Samples, time: Samples, target: str = "", verdict: str = "") -> str:
        return (
            f"| {what} | {len(peak.seconds)} | {peak.median / mb:.0f} | {peak.minimum / mb:.0f} "
            f"| {time.median:.2f} | {time.minimum:.2f} | {target} | {verdict} |"
        )

    lines = [
        "## Peak memory of a rewrite (`benchmarks/memory.py`)",
        "",
        f"Measured {machine_summary()}.",
        "",
        f"Model: Input({args.width}) then {args.layers} Dense({args.width}) layers (all "
        f"but the last with relu), {byte_size(result.weight_bytes)} of float32 weights, "
        f"a {file_size(result.path)} `.keras` file. Whole processes, {args.repeat} run(s) "
        "of each, alternating; peak resident memory of each child from `os.wait4` "
        "(`ru_maxrss`); none discarded.",
        conditions,
        "",
        "| command | runs | peak RSS median (MB) | min (MB) | wall median (s) | min (s) "
        "| target | result |",
        "|---|--:|--:|--:|--:|--:|---|---|",
        row("`normify add X -o Y --force --quiet`", result.add_peak, result.add_time),
        row("`keras.saving.load_model(X).save(Z)`", result.plain_peak, result.plain_time),
        f"| normify add / load+save (peak medians) | | {result.ratio:.3f}× | | "
        f"{result.add_time.median / result.plain_time.median:.2f}× | "
        f"| ≤ {RATIO_TARGET}× | {checks[0].verdict} |",
        "",
        f"normify add holds {result.extra_copies:+.2f} copies of the weights beyond "
        "load+save (difference of the peak medians over the weights' size).",
        "",
    ]
    if not timing:
        lines += [f"Targets not judged: --repeat {args.repeat} < {MIN_REPEAT} (smoke run).", ""]
    lines += [f"- {check.verdict}: {check.description}" for check in checks]
    return "\n".join(lines) + "\n"


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description="Peak memory of `normify add` against a plain Keras load+save."
    )
    parser.add_argument(
        "--width", type=int, default=DEFAULT_WIDTH, help="Dense units (default %(default)s)."
    )
    parser.add_argument(
        "--layers",
        type=int,
        default=DEFAULT_LAYERS,
        help="Dense layers (default %(default)s); all but the last have a relu.",
    )
    parser.add_argument(
        "--cache", type=Path, default=DEFAULT_CACHE, help="Folder for the built model."
    )
    add_standard_options(parser, SECTION, DEFAULT_REPEAT)
    args = parser.parse_args(argv)
    check_standard_options(parser, args)
    if args.width < 1 or args.layers < 2:
        parser.error("--width must be at least 1 and --layers at least 2")
    return args


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    timing = args.repeat >= MIN_REPEAT
    before = load_average()
    result = run_guarded(SECTION, lambda: measure(args))
    if result is None:
        return 2
    conditions = describe_conditions(before, load_average())
    checks = judge(result, timing)
    report = render(result, checks, args, timing, conditions)
    return publish(SECTION, report, checks, args, log)


if __name__ == "__main__":
    sys.exit(main())
