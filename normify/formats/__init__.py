"""Model files as old Keras versions wrote them, translated into what Keras 3 reads.

    file -> config as written -> the rules of its generation -> Keras 3 config -> Graph

Each generation of format has a module of named rules, each a function from config to
config that reports what it changed as a `repaired:` notice:

- `keras1`: Keras 1.x configs into Keras 2's language (what Keras 2.0's legacy
  interfaces did), with Keras 1's weight layouts;
- `keras2`: Keras 2's language (standalone Keras 2.0 to 2.3, and tf.keras, which kept
  it) into Keras 3's, changes of meaning included (`hard_sigmoid`, `reset_after`,
  cuDNN layers);
- `tf_keras`: what tf.keras added (mixed-precision policies, TensorFlowOpLayer);
- `tfop`: TFOpLambda and SlicingOpLambda layers (raw TensorFlow calls) as Keras 3 ops.

`translate` needs neither Keras nor NumPy (so `normify audit` reads every format without
a backend); `normify.formats.arguments` checks constructor arguments against Keras 3 when
a model is deserialized, and `normify.formats.weights` reads weights through the
translation's weight rules. The graph and the passes never see an old format.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass, field
from typing import Any

from normify.formats.base import (
    KERAS1,
    KERAS2,
    KERAS3,
    TF_KERAS,
    Context,
    FormatError,
    Origin,
    Repair,
    Stage,
    WeightRule,
)
from normify.formats.origin import origin_of


def stages(generation: str) -> tuple[Stage, ...]:
    """The rules that translate a config of `generation` into Keras 3's, in order. Their
    modules (large tables of layers and operations) are imported only when a file of an
    older Keras is read: a Keras 3 file needs none of them."""
    if generation == KERAS3:
        return ()
    from normify.formats import keras1, keras2, tf_keras, tfop

    return {
        KERAS1: (keras1.STAGE, keras2.STAGE),
        KERAS2: (keras2.STAGE,),
        TF_KERAS: (tf_keras.STAGE, keras2.STAGE, tfop.STAGE),
    }[generation]


@dataclass
class Translation:
    """A model config in Keras 3's language, where it came from, what was repaired on the
    way, and how the weights its file holds must change (by layer path)."""

    config: dict[str, Any]
    origin: Origin
    repairs: list[Repair] = field(default_factory=list)
    weight_rules: dict[str, list[WeightRule]] = field(default_factory=dict)

    @property
    def notices(self) -> list[str]:
        return [repair.notice for repair in self.repairs]


def translate(
    serialized: dict[str, Any], origin: Origin, custom_names: frozenset[str] = frozenset()
) -> Translation:
    """The config of a model written by `origin`, in Keras 3's language (a copy; a Keras 3
    config is returned as it is). `custom_names` are the user's own classes, whose
    configs are left alone."""
    if not origin.legacy:
        return Translation(serialized, origin)
    config = copy.deepcopy(serialized)
    # A tf_keras `.keras` file keeps its compile config in the model config; Keras 3 would
    # compile from it untranslated (`normify.formats.training` translates it).
    config.pop("compile_config", None)
    context = Context(origin, custom_names)
    try:
        for stage in stages(origin.generation):
            stage.apply(config, context)
    except FormatError:
        raise
    except (KeyError, TypeError, ValueError, AttributeError, IndexError) as error:
        text = (
            str(error).strip().splitlines()[0][:200] if str(error).strip() else type(error).__name__
        )
        raise FormatError(f"malformed {origin.describe()} model config ({text})") from error
    return Translation(config, origin, context.repairs, context.weight_rules)


__all__ = [
    "KERAS1",
    "KERAS2",
    "KERAS3",
    "TF_KERAS",
    "FormatError",
    "Origin",
    "Repair",
    "Translation",
    "origin_of",
    "translate",
]
