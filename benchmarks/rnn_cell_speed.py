"""Training step time of the layer-normalized recurrent layers against the stock ones.

For each pair (LSTM/`LayerNormLSTM`, GRU/`LayerNormGRU`, SimpleRNN/`LayerNormSimpleRNN`),
`Input -> layer -> Dense(1)` models (Adam, MSE, default `jit_compile`) start from the same
stock weights and time `train_on_batch` on one fixed batch: after a warm-up, `--repeat`
rounds of `--calls` steps, the two models of a pair back to back in alternating order, so
drifting load hits both alike. Medians, minima and the median of the per-round ratios, on
the `KERAS_BACKEND` backend (one RESULTS.md section each). Target: median paired ratio
≤ 1.4 per layer at the full size; `--check` fails only on a non-finite loss.
`--device-report` (not in the suite) measures batch 128, 100 steps, 256 units in a child
per installed backend, on its default device (a GPU if any): stock (cuDNN wherever
Keras's stock layer uses it), normalized, ratio.

    .venv/bin/python benchmarks/rnn_cell_speed.py                    # 7 rounds, full size
    KERAS_BACKEND=jax .venv/bin/python benchmarks/rnn_cell_speed.py  # the same on JAX
    .venv/bin/python benchmarks/rnn_cell_speed.py --tiny --repeat 1  # smoke test
    .venv/bin/python benchmarks/rnn_cell_speed.py --device-report    # e.g. on a GPU
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import math
import os
import statistics
import subprocess
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
sys.path.insert(0, str(Path(__file__).resolve().parent))

from _common import MIN_REPEAT, BenchmarkError, Samples, describe_conditions, load_average  # noqa: E402
from _results import RESULTS_PATH, machine_summary, replace_section  # noqa: E402

SECTION = "rnn_cell_speed"
DEFAULT_REPEAT = 7
TARGET = 1.4
PAIRS = ("LSTM", "GRU", "SimpleRNN")
BACKENDS = ("tensorflow", "jax", "torch")
# batch, time steps, input features, units, timed steps per run, warm-up steps.
FULL_SIZE = {"batch_size": 32, "steps": 50, "features": 32, "units": 128, "calls": 10, "warmup": 3}
TINY_SIZE = {"batch_size": 4, "steps": 5, "features": 3, "units": 4, "calls": 2, "warmup": 1}
DEVICE_SIZE = {**FULL_SIZE, "batch_size": 128, "steps": 100, "units": 256, "calls": 5}


@dataclass
class PairResult:
    """The paired measurements of one stock layer and its layer-normalized version."""

    stock_name: str
    normalized_name: str
    stock: Samples
    normalized: Samples
    ratios: list[float] = field(default_factory=list)
    finite: bool = True


def log(message: str) -> None:  # progress on stderr: stdout is exactly the report
    print(f"[rnn_cell_speed] {message}", file=sys.stderr, flush=True)


def build_pair(stock_name: str, size: dict[str, int]) -> tuple[Any, Any]:
    """The stock model and the normalized one, sharing their stock weights."""
    import keras

    from normify import cells

    keras.utils.set_random_seed(0)

    def model(layer: Any) -> Any:
        shape = (size["steps"], size["features"])
        built = keras.Sequential(
            [keras.Input(shape, batch_size=size["batch_size"]), layer, keras.layers.Dense(1)]
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


def device() -> str:
    """Where the backend runs its ops by default: 'CPU', or the accelerator."""
    backend = __import__("keras").backend.backend()
    if backend == "tensorflow":
        gpus = __import__("tensorflow").config.list_logical_devices("GPU")
        return f"GPU ({gpus[0].name})" if gpus else "CPU"
    if backend == "jax":
        first = __import__("jax").devices()[0]
        return "CPU" if first.platform == "cpu" else f"{first.platform.upper()} ({first})"
    cuda = __import__("torch").cuda
    return f"GPU ({cuda.get_device_name(0)})" if cuda.is_available() else "CPU"


def record_fused_kernels() -> set[str]:
    """Stock layers whose backend kernel ran (cuDNN on a GPU; JAX has a scan-based GRU):
    `backend.lstm`/`gru` calls that returned (they raise NotImplementedError where none
    fits, and the generic loop runs)."""
    from keras.src import backend

    used: set[str] = set()

    def recorder(name: str, run: Any) -> Any:
        def recorded(*args: Any, **kwargs: Any) -> Any:
            result = run(*args, **kwargs)  # raises where no fused kernel fits
            used.add(name.upper())
            return result

        return recorded

    for name in ("lstm", "gru"):
        setattr(backend, name, recorder(name, getattr(backend, name)))
    return used


def measure(size: dict[str, int], repeat: int) -> tuple[list[PairResult], set[str]]:
    from normify.backend import keras as quiet_keras

    quiet_keras()  # quietly: import notices and retracing warnings would bury the progress
    from normify import cells

    fused = record_fused_kernels()
    rng = np.random.default_rng(0)
    x = rng.standard_normal((size["batch_size"], size["steps"], size["features"])).astype("f4")
    y = rng.standard_normal((size["batch_size"], 1)).astype("f4")
    models, results = {}, []
    for name in PAIRS:
        ours = cells.STOCK_TO_NORMALIZED[name].__name__
        log(f"building {name} and {ours}")
        models[name] = build_pair(name, size)
        results.append(PairResult(name, ours, Samples(name), Samples(ours)))
    log(f"warm-up: {size['warmup']} step(s) per model (tracing)")
    for result in results:
        for model in models[result.stock_name]:
            result.finite &= timed_steps(model, x, y, size["warmup"])[1]
    for round_number in range(repeat):
        log(f"round {round_number + 1}/{repeat}")
        for result in results:
            stock, normalized = models[result.stock_name]
            # Alternate which one goes first, so neither always follows the other.
            order = [("stock", stock), ("normalized", normalized)][:: -1 if round_number % 2 else 1]
            times = {}
            for role, model in order:
                times[role], finite = timed_steps(model, x, y, size["calls"])
                result.finite &= finite
            result.stock.seconds.append(times["stock"])
            result.normalized.seconds.append(times["normalized"])
            result.ratios.append(times["normalized"] / times["stock"])
    return results, fused


def render(
    results: list[PairResult], size: dict[str, int], repeat: int, tiny: bool, conditions: str
) -> str:
    import keras

    backend = keras.backend.backend()
    lines = [
        "## Layer-normalized RNN cells: training step time (`benchmarks/rnn_cell_speed.py`)",
        "",
        f"Measured {machine_summary()} · backend {backend} {sys.modules[backend].__version__}.",
        "",
        f"Time per compiled `train_on_batch` step on {device()}: batch {size['batch_size']}, "
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
            f"| {r.normalized.median / r.stock.median:.2f}× | {statistics.median(r.ratios):.2f}× |"
        )
    lines += [
        "",
        "The normalized layers compute `LN(x·W)` for every time step at once before the "
        "step loop; each step adds only `LN(h·U)` (and the LSTM's `LN(c)`) to the stock "
        "step's work. They always run Keras's generic step loop: no fused or cuDNN kernel "
        "computes a normalized cell, so on a GPU, where the stock LSTM and GRU use cuDNN, "
        "expect a larger ratio (`--device-report`).",
    ]
    smoke = repeat < MIN_REPEAT or tiny
    if smoke:
        lines += ["", f"Smoke run (--repeat {repeat}{', --tiny' if tiny else ''}): noise only."]
    lines += [
        "",
        f"- {'PASS' if all(r.finite for r in results) else 'FAIL'}: every training loss finite",
    ]
    for r in results if not smoke and size == FULL_SIZE else ():
        ratio = statistics.median(r.ratios)
        verdict = "PASS" if ratio <= TARGET else "FAIL"
        lines.append(f"- {verdict}: {r.normalized_name} {ratio:.2f}× (target ≤ {TARGET}×)")
    return "\n".join(lines) + "\n"


def device_report(repeat: int) -> int:
    """One child process per installed backend, at DEVICE_SIZE; a table on stdout."""
    size = DEVICE_SIZE
    lines = [
        f"## Layer-normalized RNN cells per backend (batch {size['batch_size']}, "
        f"{size['steps']} steps, {size['units']} units, {repeat} paired rounds)",
        "",
        "| backend | device | layer | stock (ms) | stock kernel | normalized (ms) "
        "| normalized / stock (median of paired ratios) |",
        "|---|---|---|--:|---|--:|--:|",
    ]
    failed = False
    for backend in BACKENDS:
        if importlib.util.find_spec(backend) is None:
            lines.append(f"| {backend} | not installed | | | | | |")
            continue
        log(f"{backend}: measuring in a child process")
        completed = subprocess.run(
            [sys.executable, __file__, "--device-child", f"--repeat={repeat}"],
            capture_output=True,
            text=True,
            env={**os.environ, "KERAS_BACKEND": backend},
        )
        failed = failed or completed.returncode != 0
        error = (completed.stderr.strip().splitlines() or ["no output"])[-1]
        rows = [f"| {backend} | failed: {error} | | | | | |"]
        lines += json.loads(completed.stdout) if completed.returncode == 0 else rows
    sys.stdout.write("\n".join(lines) + "\n")
    return 1 if failed else 0


def device_child(repeat: int) -> int:
    """The rows of the device report for this process's backend, as JSON on stdout."""
    results, fused = measure(DEVICE_SIZE, repeat)
    rows = [
        f"| {__import__('keras').backend.backend()} | {device()} | {r.stock_name} vs "
        f"{r.normalized_name} | {r.stock.median * 1e3:.2f} | "
        f"{'backend.' + r.stock_name.lower() if r.stock_name in fused else 'generic loop'} | "
        f"{r.normalized.median * 1e3:.2f} | {statistics.median(r.ratios):.2f}× |"
        for r in results
    ]
    print(json.dumps(rows))
    return 0


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeat", type=int, default=DEFAULT_REPEAT, help="Paired rounds.")
    for key in ("batch_size", "steps", "features", "units", "calls"):
        parser.add_argument(f"--{key.replace('_', '-')}", type=int, help=f"{FULL_SIZE[key]}")
    parser.add_argument("--tiny", action="store_true", help="Tiny sizes for a smoke test.")
    parser.add_argument("--device-report", action="store_true", help="Every backend, large.")
    parser.add_argument("--device-child", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument(
        "--write-results",
        action="store_true",
        help=f"Replace section '{SECTION}' ('{SECTION}_<backend>' off TensorFlow).",
    )
    parser.add_argument("--results-file", type=Path, default=RESULTS_PATH)
    parser.add_argument("--check", action="store_true", help="Exit 1 on a non-finite loss")
    args = parser.parse_args(argv)
    if args.write_results and args.repeat < MIN_REPEAT:
        parser.error(f"--write-results needs --repeat >= {MIN_REPEAT}: smoke numbers are noise")
    if args.write_results and args.tiny:
        parser.error("--write-results with --tiny: smoke numbers are noise")
    defaults = TINY_SIZE if args.tiny else FULL_SIZE
    given = {key: getattr(args, key, None) for key in defaults}
    args.size = {k: v if given[k] is None else given[k] for k, v in defaults.items()}
    for key, value in [("repeat", args.repeat), *args.size.items()]:
        if value < 1:
            parser.error(f"--{key.replace('_', '-')} must be at least 1")
    return args


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    if args.device_report:
        return device_report(args.repeat)
    try:
        if args.device_child:
            return device_child(args.repeat)
        load_before = load_average()
        results, _ = measure(args.size, args.repeat)
        conditions = describe_conditions(load_before, load_average())
    except (BenchmarkError, Exception) as error:  # a failed step makes timings meaningless
        print(f"rnn_cell_speed: error: {type(error).__name__}: {error}", file=sys.stderr)
        return 2
    report = render(results, args.size, args.repeat, args.tiny, conditions)
    sys.stdout.write(report)
    if args.write_results:
        import keras

        backend = keras.backend.backend()
        section = SECTION if backend == "tensorflow" else f"{SECTION}_{backend}"
        log(f"wrote section '{section}' of {replace_section(section, report, args.results_file)}")
    return 1 if args.check and not all(r.finite for r in results) else 0


if __name__ == "__main__":
    sys.exit(main())
