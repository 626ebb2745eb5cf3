"""Measuring how far a rewritten model's predictions are from the original's."""

from __future__ import annotations

from typing import Any

import numpy as np

from normify.graph import iter_leaves

DRIFT_BATCH = 8
UNKNOWN_DIMENSION = 8


def random_inputs(model: Any, batch: int = DRIFT_BATCH, seed: int = 0) -> list[np.ndarray]:
    """Seeded random inputs for every model input, following its shape and dtype.

    Integer inputs that feed an Embedding get token ids below its `input_dim`.
    """
    rng = np.random.default_rng(seed)
    vocabulary = _embedding_sizes(model)
    arrays = []
    for tensor in model.inputs:
        shape = [batch] + [UNKNOWN_DIMENSION if d is None else int(d) for d in tensor.shape[1:]]
        dtype = str(tensor.dtype)
        if "int" in dtype:
            high = vocabulary.get(_input_name(tensor), 2)
            arrays.append(rng.integers(0, high, size=shape).astype(dtype))
        elif dtype == "bool":
            arrays.append(rng.integers(0, 2, size=shape).astype(bool))
        else:
            arrays.append(rng.standard_normal(shape).astype(dtype))
    return arrays


def _input_name(tensor: Any) -> str:
    return tensor._keras_history[0].name


def _embedding_sizes(model: Any) -> dict[str, int]:
    """Input name -> vocabulary size of the first Embedding that input feeds."""
    from normify.flow import build_flow
    from normify.graph import from_model

    flow = build_flow(from_model(model))
    sizes: dict[str, int] = {}
    for key, site in flow.sites.items():
        if site.spec.kind != "input":
            continue
        frontier, seen = [key], {key}
        while frontier and site.spec.name not in sizes:
            current = frontier.pop(0)
            for consumer_key in flow.consumers.get((current, 0), []):
                consumer = flow.sites[consumer_key]
                if isinstance(consumer.spec.config.get("input_dim"), int):
                    sizes[site.spec.name] = consumer.spec.config["input_dim"]
                    break
                if consumer_key not in seen:
                    seen.add(consumer_key)
                    frontier.append(consumer_key)
    return sizes


def predict(model: Any, inputs: list[np.ndarray]) -> list[np.ndarray]:
    from keras import ops

    feed = inputs[0] if len(inputs) == 1 else inputs
    outputs = model(feed, training=False)
    return [np.asarray(ops.convert_to_numpy(output)) for output in iter_leaves(outputs)]


def output_drift(
    original: Any, rewritten: Any, inputs: list[np.ndarray] | None = None
) -> dict[str, Any]:
    """Max abs, mean abs and relative difference of the two models' outputs."""
    inputs = inputs if inputs is not None else random_inputs(original)
    before = predict(original, inputs)
    after = predict(rewritten, inputs)
    max_abs = max(float(np.max(np.abs(a - b))) for a, b in zip(before, after, strict=True))
    mean_abs = float(np.mean([np.mean(np.abs(a - b)) for a, b in zip(before, after, strict=True)]))
    scale = max(float(np.max(np.abs(b))) for b in before)
    return {
        "max_abs": max_abs,
        "mean_abs": mean_abs,
        "relative": max_abs / scale if scale > 0 else max_abs,
        "samples": int(inputs[0].shape[0]),
        "inputs": "random",
    }
