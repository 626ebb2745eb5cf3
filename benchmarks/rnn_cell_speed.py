"""Training step time of the layer-normalized recurrent layers against the stock ones.

For each pair (LSTM vs `normify.cells.LayerNormLSTM`, GRU vs `LayerNormGRU`, SimpleRNN vs
`LayerNormSimpleRNN`) two otherwise identical models, `Input -> recurrent layer ->
Dense(1)` compiled with Adam and MSE (default `jit_compile`, which is off on CPU), start
from the same stock weights and time `model.train_on_batch` on one fixed batch. After a
warm-up (tracing), `--repeat` rounds run each model for `--calls` steps, the two models of
a pair back to back, in alternating order from round to round, so drifting machine load
hits both alike. Medians, minima and the median of the per-round ratios are reported.

There is no timing target: the numbers tell users what normalization costs. The
normalized layers always run Keras's generic step loop with extra per-gate mean/variance
work, and can never use a fused (cuDNN) kernel. `--check` fails only if a training loss
is not finite.

    .venv/bin/python benchmarks/rnn_cell_speed.py                    # 7 rounds, full size
    .venv/bin/python benchmarks/rnn_cell_speed.py --tiny --repeat 1  # smoke test
"""

from __future__ import annotations

import argparse
import math
import os
import statistics
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
sys.path.insert(0, str(Path(__file__).resolve().parent))

from _common import (  # noqa: E402
    MIN_REPEAT,
    BenchmarkError,
    Samples,
    describe_conditions,
    load_average,
)
from _results import RESULTS_PATH, machine_summary, replace_section  # noqa: E402

SECTION = "rnn_cell_speed"
DEFAULT_REPEAT = 7
PAIRS = ("LSTM", "GRU", "SimpleRNN")
# batch, time steps, input features, units, timed steps per run, warm-up steps.
FULL_SIZE = {"batch_size": 32, "steps": 50, "features": 32, "units": 128, "calls": 10, "warmup": 3}
TINY_SIZE = {"batch_size": 4, "steps": 5, "features": 3, "units": 4, "calls": 2, "warmup": 1}


@dataclass
class PairResult:
    """The paired measurements of one stock layer and its layer-normalized version."""

    stock_name: str
    normalized_name: str
    stock: Samples
    normalized: Samples
    ratios: list[float] = field(default_factory=list)
    finite: bool = True

    @property
    def ratio_of_medians(self) -> float:
        return self.normalized.median / self.stock.median


def log(message: str) -> None:
    """Progress goes to stderr, so stdout is exactly the markdown report."""
    print(f"[rnn_cell_speed] {message}", file=sys.stderr, flush=True)


def build_pair(stock_name: str, size: dict[str, int]) -> tuple[Any, Any]:
    """The stock model and the normalized one, sharing their stock weights."""
    import keras

    from normify import cells

    keras.utils.set_random_seed(0)

    def model(layer: Any) -> Any:
        built = keras.Sequential(
            [
                keras.Input((size["steps"], size["features"]), batch_size=size["batch_size"]),
                layer,
                keras.layers.Dense(1),
            ]
        )
        built.compile(optimizer="adam", loss="mse")
        return built

    stock = model(getattr(keras.layers, stock_name)(size["units"]))
    normalized = model(cells.STOCK_TO_NORMALIZED[stock_name](size["units"]))
    # Same starting point: the normalized layer's first weights are the stock layer's.
    stock_layer, normalized_layer = stock.layers[0], normalized.layers[0]
    count = len(stock_layer.weights)
    normalized_layer.set_weights(stock_layer.get_weights() + normalized_layer.get_weights()[count:])
    normalized.layers[1].set_weights(stock.layers[1].get_weights())
    return stock, normalized


def timed_steps(model: Any, x: np.ndarray, y: np.ndarray, calls: int) -> tuple[float, bool]:
    """Seconds per training step over `calls` steps, and whether every loss was finite."""
    finite = True
    start = time.perf_counter()
    for _ in range(calls):
        # train_on_batch returns the loss as a NumPy value: the step has finished.
        loss = model.train_on_batch(x, y)
        finite = finite and math.isfinite(float(np.asarray(loss).ravel()[0]))
    return (time.perf_counter() - start) / calls, finite


def measure(size: dict[str, int], repeat: int) -> list[PairResult]:
    from normify.backend import keras as quiet_keras

    # First import of Keras, quietly: TensorFlow's import notices and the retracing
    # warnings (six models, each traced once) would bury the progress lines.
    quiet_keras()
    from normify import cells

    rng = np.random.default_rng(0)
    x = rng.standard_normal((size["batch_size"], size["steps"], size["features"]))
    x = x.astype("float32")
    y = rng.standard_normal((size["batch_size"], 1)).astype("float32")
    models, results = {}, []
    for name in PAIRS:
        log(f"building {name} and {cells.STOCK_TO_NORMALIZED[name].__name__}")
        models[name] = build_pair(name, size)
        results.append(
            PairResult(
                name,
                cells.STOCK_TO_NORMALIZED[name].__name__,
                Samples(name),
                Samples(cells.STOCK_TO_NORMALIZED[name].__name__),
            )
        )
    log(f"warm-up: {size['warmup']} step(s) per model (tracing)")
    for result in results:
        for model in models[result.stock_name]:
            _, finite = timed_steps(model, x, y, size["warmup"])
            result.finite = result.finite and finite
    for round_number in range(repeat):
        log(f"round {round_number + 1}/{repeat}")
        for result in results:
            stock, normalized = models[result.stock_name]
            # Alternate which one goes first, so neither always follows the other.
            order = [("stock", stock), ("normalized", normalized)]
            if round_number % 2:
                order.reverse()
            times = {}
            for role, model in order:
                times[role], finite = timed_steps(model, x, y, size["calls"])
                result.finite = result.finite and finite
            result.stock.seconds.append(times["stock"])
            result.normalized.seconds.append(times["normalized"])
            result.ratios.append(times["normalized"] / times["stock"])
    return results


def render(
    results: list[PairResult], size: dict[str, int], repeat: int, tiny: bool, conditions: str
) -> str:
    lines = [
        "## Layer-normalized RNN cells: training step time (`benchmarks/rnn_cell_speed.py`)",
        "",
        f"Measured {machine_summary()}.",
        "",
        f"Time per compiled `train_on_batch` step on CPU: batch {size['batch_size']}, "
        f"{size['steps']} time steps, {size['features']} input features, {size['units']} "
        f"units, then Dense(1); Adam, MSE. {repeat} paired round(s) of {size['calls']} "
        f"step(s) per model after {size['warmup']} warm-up step(s); none discarded.",
        conditions,
        "",
        "| layer | runs | stock median (ms) | stock min (ms) | normalized median (ms) "
        "| normalized min (ms) | normalized / stock (medians) | normalized / stock "
        "(median of paired ratios) |",
        "|---|--:|--:|--:|--:|--:|--:|--:|",
    ]
    for r in results:
        lines.append(
            f"| {r.stock_name} vs {r.normalized_name} | {len(r.stock.seconds)} "
            f"| {r.stock.median * 1e3:.2f} | {r.stock.minimum * 1e3:.2f} "
            f"| {r.normalized.median * 1e3:.2f} | {r.normalized.minimum * 1e3:.2f} "
            f"| {r.ratio_of_medians:.2f}× | {statistics.median(r.ratios):.2f}× |"
        )
    lines += [
        "",
        "No target: this is what layer normalization costs per training step. The "
        "normalized layers always run Keras's generic RNN step loop (no fused or cuDNN "
        "kernel can compute a normalized cell) and add per-gate mean/variance work at every "
        "step. On CPU the stock layers run the same generic loop; on a GPU the stock LSTM "
        "and GRU can use cuDNN, so expect a larger ratio there (not measured here).",
    ]
    if repeat < MIN_REPEAT or tiny:
        lines += ["", f"Smoke run (--repeat {repeat}{', --tiny' if tiny else ''}): noise only."]
    finite = all(r.finite for r in results)
    lines += ["", f"- {'PASS' if finite else 'FAIL'}: every training loss finite"]
    return "\n".join(lines) + "\n"


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--repeat",
        type=int,
        default=DEFAULT_REPEAT,
        help=f"Paired rounds (default %(default)s; --write-results needs ≥ {MIN_REPEAT}).",
    )
    parser.add_argument("--batch-size", type=int, help=f"Default {FULL_SIZE['batch_size']}.")
    parser.add_argument("--steps", type=int, help=f"Time steps (default {FULL_SIZE['steps']}).")
    parser.add_argument(
        "--features", type=int, help=f"Input features (default {FULL_SIZE['features']})."
    )
    parser.add_argument("--units", type=int, help=f"Default {FULL_SIZE['units']}.")
    parser.add_argument(
        "--calls", type=int, help=f"Timed steps per model per round (default {FULL_SIZE['calls']})."
    )
    parser.add_argument(
        "--tiny",
        action="store_true",
        help="Tiny sizes for a smoke test (options given explicitly still apply).",
    )
    parser.add_argument(
        "--write-results",
        action="store_true",
        help=f"Replace the '{SECTION}' section of --results-file with this report.",
    )
    parser.add_argument(
        "--results-file", type=Path, default=RESULTS_PATH, help="Default: benchmarks/RESULTS.md."
    )
    parser.add_argument(
        "--check", action="store_true", help="Exit 1 if a training loss is not finite."
    )
    args = parser.parse_args(argv)
    if args.repeat < 1:
        parser.error("--repeat must be at least 1")
    if args.write_results and args.repeat < MIN_REPEAT:
        parser.error(f"--write-results needs --repeat >= {MIN_REPEAT}: smoke numbers are noise")
    if args.write_results and args.tiny:
        parser.error("--write-results with --tiny: smoke numbers are noise")
    defaults = TINY_SIZE if args.tiny else FULL_SIZE
    given = {key: getattr(args, key, None) for key in defaults}
    args.size = {
        key: value if given[key] is None else given[key] for key, value in defaults.items()
    }
    for key, value in args.size.items():
        if value < 1:
            parser.error(f"--{key.replace('_', '-')} must be at least 1")
    return args


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    try:
        load_before = load_average()
        results = measure(args.size, args.repeat)
        conditions = describe_conditions(load_before, load_average())
    except (BenchmarkError, Exception) as error:  # a failed step makes timings meaningless
        print(f"rnn_cell_speed: error: {type(error).__name__}: {error}", file=sys.stderr)
        return 2
    report = render(results, args.size, args.repeat, args.tiny, conditions)
    sys.stdout.write(report)
    if args.write_results:
        written = replace_section(SECTION, report, args.results_file)
        log(f"wrote section '{SECTION}' of {written}")
    return 1 if args.check and not all(r.finite for r in results) else 0


if __name__ == "__main__":
    sys.exit(main())
