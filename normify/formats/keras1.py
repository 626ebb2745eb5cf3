"""Keras 1.x configs translated into Keras 2's config language, which
`normify.formats.keras2` then translates into Keras 3's.

Keras 2.0 read Keras 1 code and files through its legacy interfaces
(`keras/legacy/interfaces.py`: argument renames such as `output_dim` -> `units`,
`border_mode` -> `padding`, `dim_ordering` -> `data_format`), its legacy `Merge` layer
(`keras/legacy/layers.py`), and `preprocess_weights_for_loading`
(`keras/engine/topology.py`), which rewrote the weights of Keras 1 files: a recurrent
layer's separate per-gate matrices concatenated in Keras 2's gate order, a Theano-ordered
convolution kernel transposed, and, for a file recording a backend other than the one
loading it, kernels flipped. Each of those is a named rule here, reporting itself as a
`repaired:` notice; weight changes are `WeightRule`s applied when the weights are read.

The translation runs before Keras 2's, so the Keras 2 rules then apply to what it
produces: Keras 1's LSTM and GRU default `inner_activation="hard_sigmoid"` becomes
`recurrent_activation="hard_sigmoid"`, which `keras2-hard-sigmoid` rescales; a Keras 1
GRU (no `reset_after`) gets `reset_after=False`; Keras 1 inbound nodes
(`[[layer, node, tensor], ...]`) become Keras 3 call arguments.

What would change what a layer computes and has no translation (BatchNormalization modes
1 and 2, a Merge whose mode is a Python function, `border_mode="full"`, Keras 1-only
layers such as MaxoutDense) is refused with one line naming the layer, the argument and
its value. Nothing here imports Keras or NumPy.
"""

from __future__ import annotations

from typing import Any

from normify.formats import keras2
from normify.formats import weightmath as weight_math
from normify.formats.base import (
    Context,
    ModelSite,
    Site,
    Stage,
    is_entry,
    layers_of,
    shape_text,
    short,
)

# ---------------------------------------------------------------------------- classes

# Keras 1 class -> Keras 2 class (Keras 2.0's aliases for the Keras 1 names).
CLASSES = {
    "Convolution1D": "Conv1D",
    "Convolution2D": "Conv2D",
    "Convolution3D": "Conv3D",
    "AtrousConvolution1D": "Conv1D",
    "AtrousConvolution2D": "Conv2D",
    "Deconvolution2D": "Conv2DTranspose",
    "SeparableConvolution2D": "SeparableConv2D",
    # Dense applied to every step of a sequence; Keras 2's (and 3's) Dense on a 3D input
    # applies its kernel to the last axis, the same arithmetic with the same weights
    "TimeDistributedDense": "Dense",
}
# Keras 1 layers no Keras 3 layer computes.
NO_EQUIVALENT = {
    "MaxoutDense": "a maximum over several Dense layers",
    "Highway": "a gated Dense layer",
}
CONVOLUTIONS = frozenset({"Conv1D", "Conv2D", "Conv3D", "Conv2DTranspose", "SeparableConv2D"})


def layer_class(site: Site, context: Context) -> None:
    """Keras 1 class names -> Keras 2's; Atrous convolutions become dilated ones."""
    old = site.class_name
    if old in NO_EQUIVALENT:
        raise context.refuse(
            site.path,
            f"{old} ({NO_EQUIVALENT[old]}) was removed in Keras 2 and has no Keras 3 layer",
        )
    if old not in CLASSES:
        return
    new = CLASSES[old]
    site.entry["class_name"] = new
    text = f"class {old} -> {new}"
    if old.startswith("Atrous"):
        rate = site.config.pop("atrous_rate", 1)
        site.config["dilation_rate"] = rate
        text += f" (atrous_rate {short(rate)} -> dilation_rate)"
    context.repaired("keras1-class", site.path, text)


# -------------------------------------------------------------------------- arguments

# Keras 1 argument -> Keras 2 argument, by the Keras 2 class (what the legacy interfaces
# of Keras 2.0 renamed). "*" applies to every class.
DENSE = {
    "output_dim": "units", "init": "kernel_initializer", "W_regularizer": "kernel_regularizer",
    "b_regularizer": "bias_regularizer", "W_constraint": "kernel_constraint",
    "b_constraint": "bias_constraint", "bias": "use_bias",
}  # fmt: skip
CONV = {
    "nb_filter": "filters", "subsample": "strides", "border_mode": "padding",
    "dim_ordering": "data_format", "init": "kernel_initializer",
    "W_regularizer": "kernel_regularizer", "b_regularizer": "bias_regularizer",
    "W_constraint": "kernel_constraint", "b_constraint": "bias_constraint", "bias": "use_bias",
}  # fmt: skip
CONV1D = {
    **CONV, "filter_length": "kernel_size", "subsample_length": "strides",
}  # fmt: skip
RECURRENT = {
    "output_dim": "units", "init": "kernel_initializer", "inner_init": "recurrent_initializer",
    "inner_activation": "recurrent_activation", "W_regularizer": "kernel_regularizer",
    "b_regularizer": "bias_regularizer", "U_regularizer": "recurrent_regularizer",
    "dropout_W": "dropout", "dropout_U": "recurrent_dropout",
    "W_constraint": "kernel_constraint", "U_constraint": "recurrent_constraint",
    "b_constraint": "bias_constraint",
}  # fmt: skip
POOLING1D = {"pool_length": "pool_size", "stride": "strides", "border_mode": "padding"}
POOLING = {"border_mode": "padding", "dim_ordering": "data_format"}
ORDERING = {"dim_ordering": "data_format"}
RENAMES: dict[str, dict[str, str]] = {
    "Dense": DENSE,
    "Conv1D": CONV1D,
    "Conv2D": CONV,
    "Conv3D": CONV,
    "Conv2DTranspose": CONV,
    # its kernels' own regularizers and constraints kept their names; `init` sets both
    "SeparableConv2D": {k: v for k, v in CONV.items() if not k.startswith(("W_", "init"))},
    "LSTM": RECURRENT,
    "GRU": RECURRENT,
    "SimpleRNN": RECURRENT,
    "ConvLSTM2D": {**CONV, **RECURRENT},
    "Embedding": {
        "init": "embeddings_initializer",
        "W_regularizer": "embeddings_regularizer",
        "W_constraint": "embeddings_constraint",
    },  # fmt: skip
    "Dropout": {"p": "rate"},
    "SpatialDropout1D": {"p": "rate"},
    "SpatialDropout2D": {"p": "rate", **ORDERING},
    "SpatialDropout3D": {"p": "rate", **ORDERING},
    "GaussianDropout": {"p": "rate"},
    "GaussianNoise": {"sigma": "stddev"},
    "PReLU": {"init": "alpha_initializer"},
    "BatchNormalization": {"beta_init": "beta_initializer", "gamma_init": "gamma_initializer"},
    "MaxPooling1D": POOLING1D,
    "AveragePooling1D": POOLING1D,
    "MaxPooling2D": POOLING,
    "AveragePooling2D": POOLING,
    "MaxPooling3D": POOLING,
    "AveragePooling3D": POOLING,
    "GlobalMaxPooling2D": ORDERING,
    "GlobalAveragePooling2D": ORDERING,
    "GlobalMaxPooling3D": ORDERING,
    "GlobalAveragePooling3D": ORDERING,
    "UpSampling1D": {"length": "size"},
    "UpSampling2D": ORDERING,
    "UpSampling3D": ORDERING,
    "ZeroPadding2D": ORDERING,
    "ZeroPadding3D": ORDERING,
    "Cropping2D": ORDERING,
    "Cropping3D": ORDERING,
}
DATA_FORMATS = {"th": "channels_first", "tf": "channels_last", "default": "channels_last"}
# Arguments that only steer training or how a layer is batched, dropped (Keras 2.0 did
# the same or had them under another name Keras 3 lacks).
TRAINING_ONLY = {
    "consume_less": "how the recurrent step is batched, the same arithmetic",
    "forget_bias_init": "it only initialized the forget bias, which the file sets",
    "dropout": "Keras 1 Embedding dropout, which drops whole words in training only",
}


def arguments(site: Site, context: Context) -> None:
    """Keras 1 argument names and values -> Keras 2's (the legacy interfaces' renames),
    reported in one notice per layer."""
    class_name = str(site.class_name)
    config = site.config
    renamed: list[str] = []
    dropped: list[str] = []
    for old, new in RENAMES.get(class_name, {}).items():
        if old not in config:
            continue
        value = config.pop(old)
        written = value
        if new == "data_format":
            value = _data_format(site, context, value)
        if new == "padding":
            value = _padding(site, context, value)
        if old == "subsample_length" and isinstance(value, int):
            value = [value]
        config[new] = value
        renamed.append(
            f"{old} -> {new}"
            if value == written
            else f"{old}={short(written)} -> {new}={short(value)}"
        )
    if class_name == "Conv2DTranspose" and "output_shape" in config:
        shape = config.pop("output_shape")
        dropped.append(f"output_shape {shape_text(shape)} (Keras 2 infers it from the input)")
    if class_name in ("Conv2D", "Conv3D", "Conv2DTranspose", "SeparableConv2D", "ConvLSTM2D"):
        renamed += _kernel_size(config)
    if class_name == "SeparableConv2D" and "init" in config:
        init = config.pop("init")
        config["depthwise_initializer"] = config["pointwise_initializer"] = init
        renamed.append("init -> depthwise_initializer, pointwise_initializer")
    for key, why in TRAINING_ONLY.items():
        if key in config and (key != "dropout" or class_name == "Embedding"):
            dropped.append(f"{key}={short(config.pop(key))} ({why})")
    if class_name != "Embedding":
        for key in ("input_dim", "input_length"):
            if key in config:
                value = config.pop(key)
                if value is not None:
                    dropped.append(f"{key}={short(value)} (the input shape gives it)")
    renamed += _objects(config)
    parts = renamed + [f"dropped {text}" for text in dropped]
    if parts:
        context.repaired("keras1-argument", site.path, "; ".join(parts))


def _data_format(site: Site, context: Context, value: Any) -> Any:
    if value in DATA_FORMATS:
        return DATA_FORMATS[value]
    raise context.refuse(
        site.path, f"argument dim_ordering={short(value)} is not th, tf or default"
    )


def _padding(site: Site, context: Context, value: Any) -> Any:
    if value in ("valid", "same", "causal"):
        return value
    raise context.refuse(
        site.path,
        f"argument border_mode={short(value)} (Theano's full convolution) has no Keras 3 padding",
    )


def _kernel_size(config: dict[str, Any]) -> list[str]:
    keys: tuple[str, ...] = ("nb_row", "nb_col") if "nb_row" in config else ()
    if not keys and "kernel_dim1" in config:
        keys = ("kernel_dim1", "kernel_dim2", "kernel_dim3")
    if not keys:
        return []
    config["kernel_size"] = [config.pop(key) for key in keys]
    return [f"{'/'.join(keys)} -> kernel_size {config['kernel_size']}"]


# Keras 1 wrote regularizers and constraints as {"name": class, arguments...}.
CONSTRAINTS = {
    "MaxNorm": {"m": "max_value", "axis": "axis"},
    "NonNeg": {},
    "UnitNorm": {"axis": "axis"},
}


def _objects(config: dict[str, Any]) -> list[str]:
    """Keras 1 regularizer and constraint configs -> Keras 2's; those without one are
    dropped (they shape training, not what the layer computes)."""
    texts = []
    for key in list(config):
        value = config[key]
        if not (key.endswith(("_regularizer", "_constraint")) and isinstance(value, dict)):
            continue
        if "class_name" in value:
            continue  # already Keras 2's
        name = value.get("name")
        if key.endswith("_regularizer") and name in ("WeightRegularizer", "ActivityRegularizer"):
            l1, l2 = float(value.get("l1", 0.0)), float(value.get("l2", 0.0))
            config[key] = {"class_name": "L1L2", "config": {"l1": l1, "l2": l2}}
            texts.append(f"{key} {name} -> L1L2(l1={l1}, l2={l2})")
        elif key.endswith("_constraint") and name in CONSTRAINTS:
            inner = {new: value[old] for old, new in CONSTRAINTS[name].items() if old in value}
            config[key] = {"class_name": name, "config": inner}
            texts.append(
                f"{key} {name} -> {name}({', '.join(f'{k}={v}' for k, v in inner.items())})"
            )
        else:
            config[key] = None
            texts.append(f"dropped {key} {short(name)} (it shapes training only)")
    return texts


def batchnorm_mode(site: Site, context: Context) -> None:
    """Keras 1's BatchNormalization mode 0 is Keras 2's layer; modes 1 (per sample) and 2
    (batch statistics at inference too) were removed."""
    if site.class_name != "BatchNormalization" or "mode" not in site.config:
        return
    mode = site.config.pop("mode")
    if mode != 0:
        raise context.refuse(
            site.path,
            f"argument mode={short(mode)} of BatchNormalization ("
            + ("per-sample normalization" if mode == 1 else "batch statistics at inference")
            + ") was removed in Keras 2 and has no Keras 3 equivalent",
        )
    context.repaired(
        "keras1-batchnorm-mode",
        site.path,
        "dropped mode=0 (feature-wise, moving statistics at inference: Keras 2's layer; "
        "Keras 1's running_std holds the moving variance)",
    )


def input_dtype(site: Site, context: Context) -> None:
    """Keras 1 wrote `input_dtype` on input layers and on a Sequential's first layer;
    Keras 2 calls it `dtype` on an InputLayer. Elsewhere the InputLayer gives the input
    its dtype (a Sequential's first layer is given one by `sequential_input`)."""
    config = site.config
    if "input_dtype" not in config:
        return
    value = config.pop("input_dtype")
    if site.class_name == "InputLayer":
        config["dtype"] = value
        context.repaired("keras1-input", site.path, f"input_dtype={short(value)} -> dtype")
    else:
        context.repaired(
            "keras1-input",
            site.path,
            f"dropped input_dtype={short(value)} (the model's InputLayer gives the input dtype)",
        )


# ---------------------------------------------------------------------------- Merge

MERGE_MODES = {
    "sum": "Add",
    "mul": "Multiply",
    "ave": "Average",
    "max": "Maximum",
    "concat": "Concatenate",
    "dot": "Dot",
}
MERGE_BOOKKEEPING = (
    "mode", "mode_type", "concat_axis", "dot_axes", "output_shape", "output_shape_type",
    "output_mask", "output_mask_type", "arguments", "node_indices", "tensor_indices",
)  # fmt: skip


def merge(site: Site, context: Context) -> None:
    """Keras 1's functional `Merge` (and `merge()`) -> Keras 2's merge layers, by mode."""
    if site.class_name != "Merge":
        return
    config = site.config
    if config.get("layers"):
        raise context.refuse(
            site.path,
            "a Merge of models inside a Sequential (Keras 1's branching Sequential) is not "
            "translated; rebuild it as a functional Model",
        )
    mode = config.get("mode", "sum")
    if config.get("mode_type") in ("lambda", "function") or not isinstance(mode, str):
        raise context.refuse(
            site.path,
            f"argument mode={short(mode)} of Merge is a Python function, which no Keras 3 "
            "merge layer computes (and safe loading would not run)",
        )
    if mode == "cos":
        raise context.refuse(
            site.path,
            "argument mode='cos' of Merge (cosine proximity with an extra axis of size 1 "
            "and Keras 1's epsilon) has no Keras 3 merge layer computing the same",
        )
    if mode not in MERGE_MODES:
        raise context.refuse(site.path, f"argument mode={short(mode)} of Merge is unknown")
    new = MERGE_MODES[mode]
    kept: dict[str, Any] = {"name": config["name"], "trainable": config.get("trainable", True)}
    if mode == "concat":
        kept["axis"] = config.get("concat_axis", -1)
    if mode == "dot":
        axes = config.get("dot_axes", -1)
        kept["axes"] = axes
        kept["normalize"] = False
    for key in MERGE_BOOKKEEPING:
        config.pop(key, None)
    extra = ", ".join(sorted(set(config) - {"name", "trainable"}))
    config.clear()
    config.update(kept)
    site.entry["class_name"] = new
    detail = "".join(f" {key}={short(kept[key])}" for key in ("axis", "axes") if key in kept)
    context.repaired(
        "keras1-merge",
        site.path,
        f"Merge(mode={mode!r}) -> {new}{detail}" + (f" (dropped {extra})" if extra else ""),
    )


# ---------------------------------------------------------------------------- models


def sequential_input(site: ModelSite, context: Context) -> None:
    """A Keras 1 Sequential's first layer carries `batch_input_shape` and `input_dtype`:
    the InputLayer Keras 2 and 3 want gets both (the layer itself keeps its own dtype, so
    an Embedding reading int32 indices keeps float32 weights)."""
    entry = site.entry
    if entry.get("class_name") != "Sequential":
        return
    layers = layers_of(entry)
    if not layers or not is_entry(layers[0]) or not isinstance(layers[0]["config"], dict):
        return
    first = layers[0]["config"]
    if layers[0].get("class_name") == "InputLayer" or first.get("batch_input_shape") is None:
        return
    shape = first.pop("batch_input_shape")
    dtype = first.pop("input_dtype", None)
    name = f"{first.get('name', 'input')}_input"
    config: dict[str, Any] = {"batch_input_shape": shape, "name": name}
    if isinstance(dtype, str):
        config["dtype"] = dtype
    layers.insert(0, {"class_name": "InputLayer", "config": config})
    context.repaired(
        "keras1-input",
        site.prefix + str(first.get("name")),
        f"batch_input_shape {shape_text(shape)}"
        + (f", input_dtype {dtype}" if isinstance(dtype, str) else "")
        + f" -> new InputLayer {name}",
    )


MODEL_RULES = (keras2.sequential_list, sequential_input)


# ---------------------------------------------------------------------------- weights


def weights(site: Site, context: Context) -> None:
    """What Keras 2's `preprocess_weights_for_loading` did to a Keras 1 layer's weights:
    per-gate recurrent matrices concatenated in Keras 2's gate order, Theano-ordered
    kernels transposed, Conv1D kernels squeezed, and kernels a Theano backend convolved
    with flipped. Only for files whose weights group records no Keras version (what
    Keras 2's loader took for Keras 1 weights)."""
    if not context.origin.keras1_weights:
        return
    class_name = str(site.class_name)
    config = site.config
    functions = []
    texts = []
    if class_name == "LSTM":
        # Keras 1: (W, U, b) for gates i, c, f, o; Keras 2: kernel, recurrent, bias in i, f, c, o
        functions.append(_when_count(12, weight_math.concatenate_gates((0, 2, 1, 3), 3)))
        texts.append("12 per-gate arrays (gates i, c, f, o) -> kernel, recurrent_kernel, bias "
                     "(i, f, c, o)")  # fmt: skip
    elif class_name == "GRU":
        functions.append(_when_count(9, weight_math.concatenate_gates((0, 1, 2), 3)))
        texts.append("9 per-gate arrays (gates z, r, h) -> kernel, recurrent_kernel, bias")
    elif class_name == "Conv1D":
        size = config.get("kernel_size")
        length = size[0] if isinstance(size, list) else size
        filters = config.get("filters")
        if isinstance(length, int) and isinstance(filters, int):
            functions.append(weight_math.squeeze_conv1d_kernel(filters, length))
            texts.append("kernel (length, 1, inputs, filters) -> (length, inputs, filters)")
    elif config.get("data_format") == "channels_first" and class_name in CONVOLUTIONS:
        axes, text = _theano_layout(class_name)
        count = 2 if class_name == "SeparableConv2D" else 1
        functions.append(_transpose(axes, count))
        texts.append(text)
    elif class_name == "Conv2DTranspose":
        functions.append(weight_math.transpose_first((0, 1, 3, 2)))
        texts.append("kernel (rows, cols, inputs, filters) -> (rows, cols, filters, inputs)")
    if class_name in CONVOLUTIONS and class_name != "SeparableConv2D" and _theano(context):
        functions.append(weight_math.flip_kernels())
        texts.append("kernel flipped in space (the file records the Theano backend, which "
                     "convolves; Keras 3 correlates)")  # fmt: skip
    if not functions:
        return
    context.repaired("keras1-weights", site.path, "; ".join(texts))
    function = weight_math.chain(*functions)
    context.weights(
        keras2._weights_key(site), "keras1-weights", keras2._in_wrapper(site, function, context)
    )


def _theano(context: Context) -> bool:
    return (context.origin.backend or "").lower() == "theano"


THEANO_LAYOUTS = {
    "Conv3D": ((2, 3, 4, 1, 0), "kernel (filters, inputs, d1, d2, d3) -> (d1, d2, d3, inputs, filters)"),  # noqa: E501
    "Conv2DTranspose": ((2, 3, 0, 1), "kernel (filters, inputs, rows, cols) -> (rows, cols, filters, inputs)"),  # noqa: E501
    "SeparableConv2D": ((2, 3, 1, 0), "kernels (out, in, rows, cols) -> (rows, cols, in, out)"),
}  # fmt: skip


def _theano_layout(class_name: str) -> tuple[tuple[int, ...], str]:
    default = (
        (2, 3, 1, 0),
        "kernel (filters, inputs, rows, cols) -> (rows, cols, inputs, filters)",
    )
    return THEANO_LAYOUTS.get(class_name, default)


def _transpose(axes: tuple[int, ...], count: int) -> weight_math.WeightFunction:
    def apply(arrays: weight_math.Arrays) -> weight_math.Arrays:
        import numpy as np

        return [
            np.transpose(array, axes) if index < count and array.ndim == len(axes) else array
            for index, array in enumerate(arrays)
        ]

    return apply


def _when_count(count: int, function: weight_math.WeightFunction) -> weight_math.WeightFunction:
    """`function` when the layer holds `count` arrays (Keras 1's per-gate layout); a
    Keras 1 layer saved with `consume_less="gpu"` already held Keras 2's three."""

    def apply(arrays: weight_math.Arrays) -> weight_math.Arrays:
        return function(arrays) if len(arrays) == count else arrays

    return apply


LAYER_RULES = (layer_class, merge, arguments, batchnorm_mode, input_dtype, weights)

STAGE = Stage("Keras 1", MODEL_RULES, LAYER_RULES)

__all__ = ["STAGE"]
