"""Inference speed of a model with its BatchNormalizations folded away.

For each model: the original (with BatchNormalization), the result of `normify fold`, and
the limit: the same graph with every BatchNormalization removed (`normify strip --kind
batchnorm` folds what it can and drops the rest, so no BN layer remains). The three run
alternately in one process, `--repeat` rounds of `--calls` timed `predict_on_batch` calls
each after a warm-up, so machine noise hits them equally; medians and ratios are reported.

Targets: the folded model is faster than the original, and within 3% of the no-BN limit.
It also checks that the folded model predicts what the original does (relative 1e-4).

    .venv/bin/python benchmarks/fold_speed.py                 # ResNet50, 7 rounds
    .venv/bin/python benchmarks/fold_speed.py --models tiny --repeat 1   # smoke test
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time
from collections.abc import Sequence

import numpy as np

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from _results import machine_summary, replace_section  # noqa: E402

TARGET_VS_LIMIT = 1.03


def build(name: str):
    import keras

    keras.utils.set_random_seed(0)
    if name == "tiny":
        inputs = keras.Input((16, 16, 3), name="image")
        x = inputs
        for filters in (8, 16):
            x = keras.layers.Conv2D(filters, 3, padding="same", use_bias=False)(x)
            x = keras.layers.BatchNormalization()(x)
            x = keras.layers.ReLU()(x)
        outputs = keras.layers.Dense(3)(keras.layers.GlobalAveragePooling2D()(x))
        model = keras.Model(inputs, outputs)
    else:
        model = getattr(keras.applications, name)(weights=None)
    randomize_statistics(model)
    return model


def randomize_statistics(model) -> None:
    """Non-trivial BatchNormalization parameters, so folding has real work to preserve."""
    rng = np.random.default_rng(0)
    for variable in model.weights:
        name = variable.path.rsplit("/", 1)[-1]
        shape = tuple(variable.shape)
        if name == "moving_variance":
            variable.assign(rng.uniform(0.5, 1.5, shape).astype(variable.dtype))
        elif name in ("moving_mean", "beta"):
            variable.assign((rng.standard_normal(shape) * 0.1).astype(variable.dtype))
        elif name == "gamma":
            variable.assign(rng.uniform(0.8, 1.2, shape).astype(variable.dtype))


def timed_calls(model, batch: np.ndarray, calls: int) -> float:
    start = time.perf_counter()
    for _ in range(calls):
        model.predict_on_batch(batch)
    return (time.perf_counter() - start) / calls


def count_batchnorms(model) -> int:
    from normify.graph import from_model
    from normify.passes.fold import batchnorm_paths

    return len(batchnorm_paths(from_model(model)))


def measure(name: str, repeat: int, calls: int, batch_size: int) -> dict:
    import normify

    original = build(name)
    folded = normify.fold(original).model
    limit = normify.strip(original, kind="batchnorm").model
    shape = (batch_size, *original.inputs[0].shape[1:])
    batch = np.random.default_rng(1).standard_normal(shape).astype("float32")
    reference = np.asarray(original.predict_on_batch(batch))
    drift = float(np.max(np.abs(np.asarray(folded.predict_on_batch(batch)) - reference)))
    scale = float(np.max(np.abs(reference))) or 1.0
    models = {"original": original, "folded": folded, "no BN": limit}
    for model in models.values():  # warm-up: tracing and first-call allocations
        timed_calls(model, batch, 2)
    times: dict[str, list[float]] = {key: [] for key in models}
    for _ in range(repeat):
        for key, model in models.items():
            times[key].append(timed_calls(model, batch, calls))
    return {
        "model": name,
        "batch": batch_size,
        "medians": {key: statistics.median(values) for key, values in times.items()},
        "runs": repeat,
        "batchnorms": {key: count_batchnorms(model) for key, model in models.items()},
        "relative_drift": drift / scale,
    }


def render(results: list[dict], repeat: int) -> tuple[str, bool]:
    lines = [
        f"Inference time per `predict_on_batch` call, median of {repeat} alternating rounds.",
        f"Machine: {machine_summary()}",
        "",
        "| model | batch | BN layers (orig / folded / no-BN) | original (ms) | folded (ms) "
        "| no BN (ms) | folded / original | folded / no BN | fold drift (rel) | result |",
        "|---|--:|---|--:|--:|--:|--:|--:|--:|---|",
    ]
    all_pass = True
    for result in results:
        medians = result["medians"]
        speedup = medians["folded"] / medians["original"]
        versus_limit = medians["folded"] / medians["no BN"]
        passed = (
            speedup < 1.0 and versus_limit <= TARGET_VS_LIMIT and result["relative_drift"] <= 1e-4
        )
        smoke = repeat < 5
        verdict = "SKIP (smoke)" if smoke else ("PASS" if passed else "FAIL")
        all_pass = all_pass and (passed or smoke)
        counts = result["batchnorms"]
        lines.append(
            f"| {result['model']} | {result['batch']} | {counts['original']} / "
            f"{counts['folded']} / {counts['no BN']} | {medians['original'] * 1e3:.1f} | "
            f"{medians['folded'] * 1e3:.1f} | {medians['no BN'] * 1e3:.1f} | {speedup:.3f} | "
            f"{versus_limit:.3f} | {result['relative_drift']:.1e} | {verdict} |"
        )
    lines += [
        "",
        f"Targets: folded faster than the original; folded ≤ {TARGET_VS_LIMIT:.2f}× the "
        "no-BN limit; the folded model's outputs within 1e-4 of the original's (relative).",
    ]
    return "\n".join(lines), all_pass


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--models", default="ResNet50", help="Comma-separated; 'tiny' for a smoke test."
    )
    parser.add_argument("--repeat", type=int, default=7, help="Alternating rounds (≥ 5 to judge).")
    parser.add_argument("--calls", type=int, default=5, help="Timed calls per model per round.")
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--write-results", action="store_true", help="Update RESULTS.md.")
    parser.add_argument("--check", action="store_true", help="Exit 1 if a target fails.")
    return parser.parse_args(argv)


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    names = [name.strip() for name in args.models.split(",") if name.strip()]
    results = [measure(name, args.repeat, args.calls, args.batch_size) for name in names]
    body, all_pass = render(results, args.repeat)
    print(body)
    if args.write_results:
        if args.repeat < 5:
            print("refusing --write-results with fewer than 5 rounds", file=sys.stderr)
            return 2
        replace_section("fold_speed", "## Fold: inference speed-up\n\n" + body + "\n")
    return 1 if args.check and not all_pass else 0


if __name__ == "__main__":
    sys.exit(main())
