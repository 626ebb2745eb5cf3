"""Keras 2's config language (standalone Keras 2.0 to 2.3, and tf.keras, which kept it)
translated into Keras 3's.

Model rules reshape what Keras 2 wrote around the layers: a Sequential saved as a bare
list, the `Model` class, the input shape on a Sequential's first layer, and inbound nodes
as `[layer, node, tensor, kwargs]` lists, which become Keras 3's `{"args", "kwargs"}`
nodes (with nested models' node numbers as Keras 3 counts them). Layer rules repair what a
layer means: arguments Keras 3 reads differently, the cuDNN layers, the Keras 2
`hard_sigmoid`, GRUs saved before `reset_after` existed, and recurrent layers given their
initial states as extra inputs.

Arguments that Keras 3's constructors refuse are checked against those constructors when
the model is deserialized (`normify.formats.arguments`), not here: this module imports no
Keras, so `normify audit` can read Keras 2 files without a backend.
"""

from __future__ import annotations

import copy
from typing import Any

from normify.formats import bytecode
from normify.formats import weightmath as weight_math
from normify.formats.base import (
    MODEL_CLASSES,
    Context,
    ModelSite,
    Site,
    Stage,
    is_entry,
    layer_name,
    layers_of,
    model_name,
    shape_text,
)
from normify.formats.nodes import convert_model_nodes, is_reference, tensor
from normify.formats.tfop import OP_CLASSES

FUNCTIONAL_MODULE = "keras.src.models.functional"
RECURRENT_CLASSES = frozenset(
    {"LSTM", "GRU", "SimpleRNN", "RNN", "ConvLSTM1D", "ConvLSTM2D", "ConvLSTM3D"}
)

# ---------------------------------------------------------------------------- models


def sequential_list(site: ModelSite, context: Context) -> None:
    """Keras 2.0 to 2.2.2 saved a Sequential's config as the bare list of its layers."""
    entry = site.entry
    if entry.get("class_name") != "Sequential" or not isinstance(entry.get("config"), list):
        return
    name = entry.get("name") if isinstance(entry.get("name"), str) else "sequential"
    entry["config"] = {"name": name, "layers": entry["config"]}
    context.repaired(
        "keras2-sequential-list",
        site.label,
        f"Sequential config saved as a list -> layers of {name!r}",
    )


def model_class(site: ModelSite, context: Context) -> None:
    if site.entry.get("class_name") == "Model":
        site.entry["class_name"] = "Functional"
        context.repaired("keras2-model-class", site.label, "class Model -> Functional")


def model_module(site: ModelSite, context: Context) -> None:
    entry = site.entry
    sequential = entry.get("class_name") == "Sequential"
    module = "keras" if sequential else FUNCTIONAL_MODULE
    old = entry.get("module")
    if old is not None and not is_keras3_module(old):
        context.repaired("keras2-module", site.label, f"module {old} -> {module}")
    entry["module"] = module
    entry["registered_name"] = None if sequential else "Functional"


def sequential_input(site: ModelSite, context: Context) -> None:
    """Keras 2 wrote a Sequential's input shape on its first layer, without an InputLayer;
    Keras 3 wants the InputLayer."""
    entry = site.entry
    if entry.get("class_name") != "Sequential":
        return
    layers = layers_of(entry)
    if not layers or not is_entry(layers[0]) or not isinstance(layers[0]["config"], dict):
        return
    first = layers[0]
    first_config = first["config"]
    shape = first_config.get("batch_input_shape")
    if first.get("class_name") == "InputLayer" or shape is None:
        return
    name = f"{first_config.get('name', 'input')}_input"
    input_config: dict[str, Any] = {"batch_shape": shape, "name": name}
    if isinstance(first_config.get("dtype"), str):
        input_config["dtype"] = first_config["dtype"]
    layers.insert(0, {"class_name": "InputLayer", "config": input_config})
    first_config.pop("batch_input_shape")
    context.repaired(
        "keras2-input-shape",
        site.prefix + str(first_config.get("name")),
        f"batch_input_shape {shape_text(shape)} -> new InputLayer {name} "
        f"(batch_shape {shape_text(shape)})",
    )


def keras3_nodes(site: ModelSite, context: Context) -> None:
    """Keras 2 inbound nodes (`[[layer, node, tensor, kwargs], ...]`) become Keras 3 nodes
    (`{"args": [...], "kwargs": {...}}` with `__keras_tensor__` references)."""
    if layers_of(site.entry) is None or site.entry.get("class_name") == "Sequential":
        return
    convert_model_nodes(site, context)


def single_input_output(site: ModelSite, context: Context) -> None:
    """Keras 2 wrote a model's one input or output as a list of one reference; Keras 3
    reads that as a list-valued model, which, nested in a Sequential, hands a list to the
    next layer. Keras 3 writes the reference alone."""
    config = site.entry.get("config")
    if site.entry.get("class_name") != "Functional" or not isinstance(config, dict):
        return
    for key in ("input_layers", "output_layers"):
        value = config.get(key)
        if isinstance(value, list) and len(value) == 1 and is_reference(value[0]):
            config[key] = value[0]
            context.repaired(
                "keras2-single-io", site.label, f"{key} [{value[0]!r}] -> the reference alone"
            )


MODEL_RULES = (
    sequential_list,
    model_class,
    model_module,
    sequential_input,
    keras3_nodes,
    single_input_output,
)


# ---------------------------------------------------------------------------- layers


def layer_module(site: Site, context: Context) -> None:
    """tf_keras `.keras` files name tf_keras modules; Keras 3 looks its layers up in
    `keras.layers`. (Configs that name no module get one when the model is deserialized,
    for the classes Keras 3 has: `normify.formats.arguments`.)"""
    old = site.entry.get("module")
    if old is None or is_keras3_module(old) or not is_builtin_module(old):
        return  # Keras 3's, none, or a library's or the user's own class
    if site.class_name in OP_CLASSES:
        return  # no Keras 3 layer: `normify.formats.tfop` rewrites the whole entry
    context.repaired("keras2-module", site.path, f"module {old} -> keras.layers")
    site.entry["module"] = "keras.layers"
    site.entry.setdefault("registered_name", None)


def input_shape(site: Site, context: Context) -> None:
    config = site.config
    if "batch_input_shape" not in config:
        return
    shape = config.pop("batch_input_shape")
    if site.class_name == "InputLayer":
        config["batch_shape"] = shape
        context.repaired(
            "keras2-input-shape", site.path, f"batch_input_shape {shape_text(shape)} -> batch_shape"
        )
        return
    where = "the model's InputLayer"
    if site.model is not None and site.model.get("class_name") == "Sequential":
        where = "the Sequential's InputLayer"
    context.repaired(
        "keras2-input-shape",
        site.path,
        f"dropped batch_input_shape {shape_text(shape)} ({where} gives the shape)",
    )


def single_axis(site: Site, context: Context) -> None:
    """A built Keras 2 BatchNormalization saves its axis as a list; Keras 3 wants an int."""
    if site.class_name != "BatchNormalization":
        return
    axis = site.config.get("axis")
    if isinstance(axis, list) and len(axis) == 1 and isinstance(axis[0], int):
        site.config["axis"] = axis[0]
        context.repaired("keras2-batchnorm-axis", site.path, f"axis {axis} -> {axis[0]}")


LAMBDA_ARGUMENTS = ("function_type", "output_shape_type", "module", "output_shape_module")


def lambda_function(site: Site, context: Context) -> None:
    if site.class_name != "Lambda":
        return
    config = site.config
    function = config.get("function")
    if isinstance(function, list) and len(function) == 3:
        code, defaults, closure = function
        config["function"] = {
            "class_name": "__lambda__",
            "config": {"code": code, "defaults": defaults, "closure": closure},
        }
        context.repaired(
            "keras2-lambda",
            site.path,
            "Keras 2 function [code, defaults, closure] -> __lambda__ config",
        )
    _recompile_lambda(site, context)
    for key in LAMBDA_ARGUMENTS:
        if key in config:
            value = config.pop(key)
            context.repaired(
                "keras2-lambda",
                site.path,
                f"dropped {key}={value!r} (Keras 2 bookkeeping of the function)",
            )


def _recompile_lambda(site: Site, context: Context) -> None:
    """Most Keras 1 and 2 files were written by a Python whose code objects this Python
    cannot read; a Lambda that computes plain arithmetic on its input is recompiled."""
    function = site.config.get("function")
    if not isinstance(function, dict) or function.get("class_name") != "__lambda__":
        return
    settings = function.get("config")
    if not isinstance(settings, dict):
        return
    code = settings.get("code")
    if not isinstance(code, str) or settings.get("defaults") or settings.get("closure"):
        return
    try:
        translated = bytecode.translate_lambda(code)
    except bytecode.Unreadable:
        return  # loading names the layer and why Python cannot read it
    if translated is None:
        return
    settings["code"], expression, pythons = translated
    context.repaired(
        "keras2-lambda-bytecode",
        site.path,
        f"Python {pythons} bytecode of `lambda x: {expression}` recompiled for this Python",
    )


def cudnn_layers(site: Site, context: Context) -> None:
    """CuDNNLSTM and CuDNNGRU (Keras 2.0 to 2.3, GPU only) compute LSTM and
    GRU(reset_after=True) with tanh and sigmoid; their weights are cuDNN's buffers,
    translated when they are read."""
    class_name = site.class_name
    if class_name not in ("CuDNNLSTM", "CuDNNGRU"):
        return
    config = site.config
    gru = class_name == "CuDNNGRU"
    site.entry["class_name"] = "GRU" if gru else "LSTM"
    site.entry["module"] = "keras.layers"
    site.entry.setdefault("registered_name", None)
    config["activation"] = "tanh"
    config["recurrent_activation"] = "sigmoid"
    config["use_bias"] = True
    if gru:
        config["reset_after"] = True
    context.repaired(
        "keras2-cudnn",
        site.path,
        f"{class_name} -> {'GRU(reset_after=True, ' if gru else 'LSTM('}tanh, sigmoid) "
        "with its cuDNN weights translated",
    )
    convert = weight_math.cudnn_gru if gru else weight_math.cudnn_lstm
    context.weights(_weights_key(site), "keras2-cudnn", _in_wrapper(site, convert, context))


def gru_reset_after(site: Site, context: Context) -> None:
    """GRUs saved before `reset_after` existed (Keras < 2.1.3) apply the reset gate before
    the recurrent kernel; Keras 3's default applies it after."""
    if site.class_name not in ("GRU", "GRUCell") or "reset_after" in site.config:
        return
    site.config["reset_after"] = False
    context.repaired(
        "keras2-gru-reset-after",
        site.path,
        "no reset_after in the config (saved before it existed) -> reset_after=False, "
        "what the layer computed",
    )


# Where each recurrent cell applies its activations, by gate block along the last axis
# of its kernels and biases (Keras' gate order).
GATES = {
    "LSTM": ("i", "f", "c", "o"),
    "GRU": ("z", "r", "h"),
    "SimpleRNN": ("h",),
}
RECURRENT_GATES = {"LSTM": ("i", "f", "o"), "GRU": ("z", "r"), "SimpleRNN": ()}
CANDIDATE_GATES = {"LSTM": ("c",), "GRU": ("h",), "SimpleRNN": ("h",)}
LINEAR_LAYERS = frozenset(
    {
        "Dense", "EinsumDense", "Conv1D", "Conv2D", "Conv3D", "Conv1DTranspose",
        "Conv2DTranspose", "Conv3DTranspose", "DepthwiseConv1D", "DepthwiseConv2D",
        "SeparableConv1D", "SeparableConv2D", "LocallyConnected1D", "LocallyConnected2D",
    }
)  # fmt: skip
HARD_SIGMOID_SCALE = 1.2


def hard_sigmoid(site: Site, context: Context) -> None:
    """Keras 2's hard_sigmoid is clip(0.2·x + 0.5, 0, 1), Keras 3's clip(x/6 + 0.5, 0, 1):
    Keras 2's hard_sigmoid(z) is Keras 3's hard_sigmoid(1.2·z). A layer whose activation
    takes an affine function of its weights gets those weights scaled by 1.2; an
    Activation layer gets a Rescaling(1.2) before it."""
    config = site.config
    keys = [
        key for key in ("activation", "recurrent_activation") if _is_hard_sigmoid(config.get(key))
    ]
    if not keys:
        return
    class_name = str(site.class_name)
    if class_name == "Activation":
        _rescale_before_activation(site, context)
        return
    cell = _cell_family(class_name)
    if cell is not None:
        gates: list[str] = []
        if "recurrent_activation" in keys:
            gates += RECURRENT_GATES[cell]
        if "activation" in keys:
            if cell == "LSTM":
                raise context.refuse(
                    site.path,
                    "activation='hard_sigmoid' also squashes the LSTM's cell state, which "
                    "no rescaling of its weights reproduces in Keras 3",
                )
            gates += CANDIDATE_GATES[cell]
        blocks = [GATES[cell].index(gate) for gate in GATES[cell] if gate in gates]
        scale = weight_math.scale_gate_blocks(len(GATES[cell]), blocks, HARD_SIGMOID_SCALE)
        named = ", ".join(gate for gate in GATES[cell] if gate in gates)
        what = "kernel, recurrent_kernel and bias"
        if len(GATES[cell]) > 1:
            what = f"the {named} gate columns of {what}"
    elif class_name in LINEAR_LAYERS and keys == ["activation"]:
        separable = class_name.startswith("Separable")
        scale = weight_math.scale_all(HARD_SIGMOID_SCALE, skip_first=separable)
        what = "the pointwise kernel and bias" if separable else "the kernel and bias"
    else:
        raise context.refuse(
            site.path,
            f"{class_name} uses Keras 2's hard_sigmoid (clip(0.2x + 0.5)), which differs "
            "from Keras 3's (clip(x/6 + 0.5)) and cannot be rescaled in this layer",
        )
    context.repaired(
        "keras2-hard-sigmoid",
        site.path,
        f"{' = '.join(keys)} = hard_sigmoid, which is clip(0.2x + 0.5) in Keras 2 but "
        f"clip(x/6 + 0.5) in Keras 3: {what} scaled by 1.2",
    )
    context.weights(_weights_key(site), "keras2-hard-sigmoid", _in_wrapper(site, scale, context))


def _is_hard_sigmoid(value: Any) -> bool:
    if isinstance(value, dict):
        value = (
            value.get("config") if isinstance(value.get("config"), str) else value.get("class_name")
        )
    return value == "hard_sigmoid"


def _cell_family(class_name: str) -> str | None:
    for family in ("LSTM", "GRU", "SimpleRNN"):
        if (
            class_name in (family, f"{family}Cell")
            or class_name.startswith("ConvLSTM")
            and family == "LSTM"
        ):
            return family
    return None


def _rescale_before_activation(site: Site, context: Context) -> None:
    model = site.model
    if model is None:
        raise context.refuse(site.path, "a wrapped Activation('hard_sigmoid') cannot be rescaled")
    name = _unique_name(model, f"{layer_name(site.entry)}_keras2_scale")
    rescaling: dict[str, Any] = {
        "module": "keras.layers",
        "class_name": "Rescaling",
        "config": {
            "name": name,
            "scale": HARD_SIGMOID_SCALE,
            "offset": 0.0,
            "trainable": False,
            "dtype": site.config.get("dtype", "float32"),
        },
        "registered_name": None,
    }
    layers = model["config"]["layers"]
    index = next(i for i, layer in enumerate(layers) if layer is site.entry)
    if model.get("class_name") != "Sequential":
        rescaling["name"] = name
        rescaling["inbound_nodes"] = site.entry.get("inbound_nodes", [])
        site.entry["inbound_nodes"] = [
            {"args": [tensor(name, call, 0)], "kwargs": {}}
            for call in range(len(rescaling["inbound_nodes"]))
        ]
    layers.insert(index, rescaling)
    context.repaired(
        "keras2-hard-sigmoid",
        site.path,
        "hard_sigmoid is clip(0.2x + 0.5) in Keras 2 but clip(x/6 + 0.5) in Keras 3: "
        f"new Rescaling(1.2) {name} before it",
    )


def _unique_name(model: dict[str, Any], wanted: str) -> str:
    taken = {layer_name(layer) for layer in model["config"]["layers"] if is_entry(layer)}
    name, count = wanted, 1
    while name in taken:
        name, count = f"{wanted}_{count}", count + 1
    return name


def _weights_key(site: Site) -> str:
    """Weights are read layer by layer of a model: a wrapped layer's belong to its
    wrapper, whose path is the wrapped layer's without its last part."""
    return site.path if site.wrapper is None else site.path.rsplit("/", 1)[0]


def _in_wrapper(site: Site, function: Any, context: Context) -> Any:
    """`function` applied to the part of the wrapper's weights that is this layer's."""
    wrapper = site.wrapper
    if wrapper is None:
        return function
    kind = wrapper.get("class_name")
    if kind == "TimeDistributed" or (kind == "RNN" and wrapper["config"].get("cell") is site.entry):
        return function
    if kind == "Bidirectional":
        backward = wrapper["config"].get("backward_layer") is site.entry
        both = not isinstance(wrapper["config"].get("backward_layer"), dict)
        return weight_math.in_halves(function, forward=not backward, backward=backward or both)
    raise context.refuse(
        site.path, f"its weights need translating, which normify cannot do inside a {kind}"
    )


def recurrent_initial_state(site: Site, context: Context) -> None:
    """Keras 2 recorded a recurrent layer's initial states (and constants) as extra
    inputs of its node (`[x, h, c]`); Keras 3 takes them as `initial_state`, and has no
    constants. tf.keras also recorded `initial_state=None, constants=None` keywords."""
    class_name = site.class_name
    if site.model is None or (
        class_name not in RECURRENT_CLASSES and class_name != "Bidirectional"
    ):
        return
    constants = site.config.pop("num_constants", None)
    if constants:
        raise context.refuse(
            site.path,
            f"it is called with {constants} constant(s), which Keras 3's recurrent layers "
            "do not take",
        )
    nodes = site.entry.get("inbound_nodes")
    for node in nodes if isinstance(nodes, list) else []:
        if not isinstance(node, dict) or not node.get("args"):
            continue
        kwargs = node.setdefault("kwargs", {})
        if kwargs.get("constants") is not None:
            raise context.refuse(
                site.path,
                "it is called with constants, which Keras 3's recurrent layers do not take",
            )
        for key in ("constants", "initial_state"):
            if key in kwargs and kwargs[key] is None:
                del kwargs[key]
        first = node["args"][0]
        if not isinstance(first, list) or len(first) < 2:
            continue
        node["args"] = [first[0], *node["args"][1:]]
        kwargs["initial_state"] = first[1:]
        # tf.keras `.keras` files built such a layer from the shapes of all its inputs;
        # Keras 3 builds it from the sequence's shape.
        text = f"{len(first) - 1} initial state(s) passed as extra inputs -> initial_state"
        build = site.entry.get("build_config")
        if isinstance(build, dict):
            shapes = build.get("input_shape")
            if isinstance(shapes, list) and shapes and isinstance(shapes[0], list):
                build["input_shape"] = shapes[0]
                text += " (built from the sequence's shape alone)"
        context.repaired("keras2-initial-state", site.path, text)


def bidirectional_backwards(site: Site, context: Context) -> None:
    """Keras 2 made a Bidirectional's backward layer run the other way from its forward
    layer; Keras 3 makes it run backwards always, so a forward layer that already runs
    backwards gets an explicit backward layer running forwards."""
    config = site.config
    inner = config.get("layer")
    if site.class_name != "Bidirectional" or config.get("backward_layer") is not None:
        return
    if not is_entry(inner) or inner["config"].get("go_backwards") is not True:
        return
    backward = copy.deepcopy(inner)
    backward["config"]["go_backwards"] = False
    backward["config"]["name"] = f"backward_{inner['config'].get('name', 'layer')}"
    config["backward_layer"] = backward
    context.repaired(
        "keras2-bidirectional",
        site.path,
        "the forward layer runs backwards: explicit backward layer running forwards, as "
        "Keras 2 made it",
    )


LAYER_RULES = (
    layer_module,
    input_shape,
    single_axis,
    lambda_function,
    cudnn_layers,
    gru_reset_after,
    hard_sigmoid,
    recurrent_initial_state,
    bidirectional_backwards,
)

STAGE = Stage("Keras 2", MODEL_RULES, LAYER_RULES)


def translate(serialized: dict[str, Any], context: Context) -> dict[str, Any]:
    """A Keras 3 config of a Keras 2 one (a deep copy); the repairs go to `context`."""
    config = copy.deepcopy(serialized)
    # A tf_keras `.keras` file keeps its compile config here; Keras 3 would compile from
    # it untranslated. `normify.formats.training` translates it instead.
    config.pop("compile_config", None)
    STAGE.apply(config, context)
    return config


# ------------------------------------------------------------------------- modules


def is_keras3_module(module: str) -> bool:
    return module == "keras" or (module.startswith("keras.") and ".engine" not in module)


def is_builtin_module(module: str) -> bool:
    return module.split(".")[0] in ("keras", "tf_keras", "tensorflow")


__all__ = ["MODEL_CLASSES", "STAGE", "model_name", "translate"]
