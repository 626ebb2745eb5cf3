"""The passes must cost time in proportion to the model, not to its square.

`strip`, `fold` and `swap` once took each norm out (or looked its calls and readers up) by
scanning the whole graph: 36 s to plan `strip` on 2000 BatchNormalizations. These tests
plan every pass on a model of 3000 Dense layers built from a config (no backend), which a
linear pass does in well under a second; the bound is loose enough for a loaded machine
and far below what a walk over the graph per layer would take (minutes).
`benchmarks/scaling.py` measures the growth itself.
"""

from __future__ import annotations

import time
from typing import Any

from normify import graph as graphs
from normify.flow import build_flow
from normify.passes.add import add_norms
from normify.passes.fold import fold_batchnorms
from normify.passes.strip import strip_norms
from normify.passes.swap import swap_norms
from normify.rules import Rules, decide

LAYERS = 3000
BOUND_S = 10.0


def sequential_config(size: int, width: int = 16) -> dict[str, Any]:
    """What a .keras file holds for Input(width) then `size` Dense(width, relu) layers."""
    layers: list[dict[str, Any]] = [
        {
            "class_name": "InputLayer",
            "module": "keras.layers",
            "config": {"name": "features", "batch_shape": [None, width], "dtype": "float32"},
        }
    ]
    for index in range(size):
        layers.append(
            {
                "class_name": "Dense",
                "module": "keras.layers",
                "config": {"name": f"dense_{index}", "units": width, "activation": "relu"},
                "build_config": {"input_shape": [None, width]},
            }
        )
    return {"class_name": "Sequential", "config": {"name": "deep", "layers": layers}}


def timed(function: Any) -> tuple[float, Any]:
    start = time.perf_counter()
    result = function()
    return time.perf_counter() - start, result


def test_every_pass_plans_a_deep_model_in_linear_time() -> None:
    graph = graphs.from_config(sequential_config(LAYERS))
    rules = Rules()
    seconds, (normified, insertions, _, _) = timed(
        lambda: add_norms(graph, decide(graph, build_flow(graph), rules), rules)
    )
    assert len(insertions) == LAYERS - 1  # the last Dense is the output
    assert seconds < BOUND_S, f"add took {seconds:.1f} s"

    seconds, (stripped, removals, kept, _) = timed(lambda: strip_norms(normified, "batchnorm"))
    assert seconds < BOUND_S, f"strip took {seconds:.1f} s"
    assert len(removals) == LAYERS - 1 and not kept
    # strip after add gives back the original structure: Dense layers with their relu
    assert list(stripped.layers) == list(graph.layers)
    assert all(
        spec.config.get("activation") == "relu"
        for name, spec in stripped.layers.items()
        if name.startswith("dense_")
    )

    seconds, (folded, folds, kept, _) = timed(lambda: fold_batchnorms(normified))
    assert seconds < BOUND_S, f"fold took {seconds:.1f} s"
    assert len(folds) == LAYERS - 1 and not kept
    assert len(folded.nodes) == len(normified.nodes) - (LAYERS - 1)

    seconds, (_, swaps, kept, _) = timed(lambda: swap_norms(normified, "batchnorm", "layernorm"))
    assert seconds < BOUND_S, f"swap took {seconds:.1f} s"
    assert len(swaps) == LAYERS - 1 and not kept
