"""Measuring how far a rewritten model's predictions are from the original's."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

import numpy as np

from normify.graph import iter_leaves
from normify.keras_internals import keras_history

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
    return keras_history(tensor)[0].name


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
    original: Any,
    rewritten: Any,
    batches: Iterable[list[np.ndarray]] | None = None,
    source: str | None = None,
) -> dict[str, Any]:
    """Max abs, mean abs and relative (to the largest original output) difference of the
    two models' outputs, over `batches` or over seeded random inputs. `source` says which
    (`data` or `random`) for the report."""
    source = source or ("data" if batches is not None else "random")
    batches = batches if batches is not None else [random_inputs(original)]
    max_abs, abs_total, count, scale, samples = 0.0, 0.0, 0, 0.0, 0
    for inputs in batches:
        before, after = predict(original, inputs), predict(rewritten, inputs)
        samples += int(inputs[0].shape[0])
        for a, b in zip(before, after, strict=True):
            difference = np.abs(a.astype(np.float64) - b.astype(np.float64))
            max_abs = max(max_abs, float(np.max(difference)))
            abs_total += float(np.sum(difference))
            count += difference.size
            scale = max(scale, float(np.max(np.abs(a))))
    return {
        "max_abs": max_abs,
        "mean_abs": abs_total / max(count, 1),
        "relative": max_abs / scale if scale > 0 else max_abs,
        "samples": samples,
        "inputs": source,
    }


def tensor_drift(
    first: Any,
    first_requests: dict[str, tuple[str, str]],
    second: Any,
    second_requests: dict[str, tuple[str, str]],
    batches: Iterable[list[np.ndarray]],
) -> dict[str, dict[str, float]]:
    """For each label, the max abs and relative difference between a tensor of `first` and
    one of `second` (each request: layer path and `input` or `output`)."""
    from normify.probe import Probe

    probe_first = Probe(first, dict(first_requests.values()))
    probe_second = Probe(second, dict(second_requests.values()))
    worst = {label: [0.0, 0.0] for label in first_requests}
    for inputs in batches:
        values_first, values_second = probe_first(inputs), probe_second(inputs)
        for label in first_requests:
            path_first, path_second = first_requests[label][0], second_requests[label][0]
            for a, b in zip(values_first[path_first], values_second[path_second], strict=True):
                worst[label][0] = max(worst[label][0], float(np.max(np.abs(a - b))))
                worst[label][1] = max(worst[label][1], float(np.max(np.abs(a))))
    return {
        label: {"max_abs": diff, "relative": diff / scale if scale > 0 else diff}
        for label, (diff, scale) in worst.items()
    }
