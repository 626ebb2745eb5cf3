"""Classifying layers into the kinds normify reasons about.

Classification looks only at a layer's class name, module and config, so it works the
same on a config read from a file and on a live layer's `get_config()`.
"""

from __future__ import annotations

from typing import Any

DENSE = "dense"
CONV = "conv"
RNN = "rnn"
NORM = "norm"
PASS = "pass"
INPUT = "input"
MODEL = "model"
OP = "op"
OTHER = "other"

TARGET_KINDS = (DENSE, CONV, RNN)

DENSE_CLASSES = frozenset({"Dense", "EinsumDense"})
CONV_CLASSES = frozenset(
    {
        "Conv1D", "Conv2D", "Conv3D",
        "Convolution1D", "Convolution2D", "Convolution3D",
        "SeparableConv1D", "SeparableConv2D",
        "SeparableConvolution1D", "SeparableConvolution2D",
        "DepthwiseConv1D", "DepthwiseConv2D",
        "Conv1DTranspose", "Conv2DTranspose", "Conv3DTranspose",
        "Convolution2DTranspose", "Convolution3DTranspose", "Deconvolution2D",
    }
)  # fmt: skip
RNN_CLASSES = frozenset(
    {"LSTM", "GRU", "SimpleRNN", "RNN", "ConvLSTM1D", "ConvLSTM2D", "ConvLSTM3D"}
)
NORM_CLASSES = frozenset(
    {
        "BatchNormalization",
        "LayerNormalization",
        "GroupNormalization",
        "RMSNormalization",
        "UnitNormalization",
        "SyncBatchNormalization",
    }
)
ACTIVATION_CLASSES = frozenset(
    {"Activation", "ReLU", "LeakyReLU", "ELU", "PReLU", "Softmax", "ThresholdedReLU"}
)
SHAPE_KEEPING_CLASSES = frozenset(
    {
        "Dropout", "SpatialDropout1D", "SpatialDropout2D", "SpatialDropout3D",
        "GaussianNoise", "GaussianDropout", "AlphaDropout", "ActivityRegularization",
        "Identity", "Masking",
    }
)  # fmt: skip
MODEL_CLASSES = frozenset({"Functional", "Sequential", "Model"})
_LAYER_NORMALIZED_RNN_CLASSES = frozenset({"LayerNormLSTM", "LayerNormGRU", "LayerNormSimpleRNN"})
LINEAR_ACTIVATIONS = frozenset({None, "linear", "identity"})

# Where a norm sits relative to the layer it normalizes (audit positions, add insertions).
PRE = "pre-activation"
POST = "post-activation"
IN_CELL = "in-cell"  # inside a recurrent layer's cells (normify's layer-normalized layers)
# The norm choice that puts layer normalization inside recurrent cells (add, strip, audit).
LAYERNORM_CELL = "layernorm-cell"
# Norms `add` inserts and `swap` exchanges (UnitNormalization has nothing to fit).
INSERTABLE_NORMS = ("batchnorm", "layernorm", "groupnorm", "rmsnorm")

# Short names used on the command line and in reports.
NORM_NAMES = {
    "batchnorm": "BatchNormalization",
    "layernorm": "LayerNormalization",
    "groupnorm": "GroupNormalization",
    "rmsnorm": "RMSNormalization",
    "unitnorm": "UnitNormalization",
}


def is_builtin(module: str | None) -> bool:
    """Whether a layer comes from Keras itself (a config without a module is Keras 2's)."""
    return module is None or module.split(".")[0] == "keras"


def classify(class_name: str, module: str | None, config: dict[str, Any]) -> str:
    """The kind of a layer: dense, conv, rnn, norm, pass, input, model, op or other."""
    if class_name == "InputLayer":
        return INPUT
    if module is not None and module.startswith("keras.src.ops"):
        return OP
    if module == "normify.cells" and class_name in _LAYER_NORMALIZED_RNN_CLASSES:
        return RNN  # normify's own layer-normalized recurrent layers
    if not is_builtin(module):
        return OTHER
    if class_name in MODEL_CLASSES:
        return MODEL
    if class_name in DENSE_CLASSES:
        return DENSE
    if class_name in CONV_CLASSES:
        return CONV
    if class_name in RNN_CLASSES:
        return RNN
    if class_name in NORM_CLASSES:
        return NORM
    if class_name in ACTIVATION_CLASSES or class_name in SHAPE_KEEPING_CLASSES:
        return PASS
    if class_name in WRAPPERS:
        inner = wrapped_layer(config)
        if inner is None:
            return OTHER
        inner_kind = classify(inner["class_name"], inner.get("module"), inner["config"])
        if class_name == "Bidirectional":
            return RNN if inner_kind == RNN else OTHER
        if class_name == SPECTRAL:  # normalizes the weights; computes as its layer does
            return inner_kind if inner_kind in (DENSE, CONV) else OTHER
        return inner_kind if inner_kind in (DENSE, CONV, PASS) else OTHER
    return OTHER


SPECTRAL = "SpectralNormalization"
WRAPPERS = ("TimeDistributed", "Bidirectional", SPECTRAL)


def wrapped_layer(config: dict[str, Any]) -> dict[str, Any] | None:
    """The serialized inner layer of a TimeDistributed, Bidirectional or
    SpectralNormalization config."""
    inner = config.get("layer")
    if isinstance(inner, dict) and "class_name" in inner and isinstance(inner.get("config"), dict):
        return inner
    return None


def innermost(class_name: str, config: dict[str, Any]) -> tuple[str, dict[str, Any]]:
    """The class name and config of the layer a wrapper wraps (the layer itself otherwise)."""
    while class_name in WRAPPERS:
        inner = wrapped_layer(config)
        if inner is None:
            break
        class_name, config = inner["class_name"], inner["config"]
    if class_name == "RNN" and isinstance(config.get("cell"), dict):
        cell = config["cell"]
        if isinstance(cell.get("config"), dict):
            return cell.get("class_name", class_name), cell["config"]
    return class_name, config


def display_name(class_name: str, config: dict[str, Any]) -> str:
    """`SpectralNormalization(Dense)` for a wrapped layer, the class name otherwise."""
    inner = wrapped_layer(config) if class_name == SPECTRAL else None
    return f"{class_name}({inner['class_name']})" if inner is not None else class_name


def activation_name(class_name: str, config: dict[str, Any]) -> str | None:
    """The name of a layer's own activation, or None for a layer that has none."""
    class_name, config = innermost(class_name, config)
    if class_name == "Activation" or "activation" in config:
        return _activation_to_name(config.get("activation"))
    return None


def _activation_to_name(value: Any) -> str | None:
    if value is None or isinstance(value, str):
        return value
    if isinstance(value, dict):
        inner = value.get("config")
        if isinstance(inner, str):
            return inner
        return value.get("registered_name") or value.get("class_name")
    return getattr(value, "__name__", type(value).__name__)


def has_nonlinear_activation(class_name: str, config: dict[str, Any]) -> bool:
    """Whether the layer applies a non-linear activation to its own output."""
    return activation_name(class_name, config) not in LINEAR_ACTIVATIONS


def is_activation_layer(class_name: str, config: dict[str, Any]) -> bool:
    """Whether a pass-through layer applies a non-linearity (an activation layer)."""
    if class_name == "Activation":
        return _activation_to_name(config.get("activation")) not in LINEAR_ACTIVATIONS
    return class_name in ACTIVATION_CLASSES


# Libraries whose model and layer classes saved files name by module, with the package
# that installs each.
LIBRARIES = {
    "keras_hub": "keras-hub",
    "keras_nlp": "keras-nlp",
    "keras_cv": "keras-cv",
    "tensorflow_addons": "tensorflow-addons",
}


def library_of(module: str | None) -> tuple[str, str] | None:
    """(import name, package to install) of the library a class's module belongs to."""
    top = str(module or "").split(".")[0]
    return (top, LIBRARIES[top]) if top in LIBRARIES else None
