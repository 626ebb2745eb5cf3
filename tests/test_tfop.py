"""TFOpLambda and SlicingOpLambda layers (tf.keras 2.4+) translated into Keras 3
operations (`normify.formats.tfop`).

Every mapping is checked three ways on a one-op model config written as tf.keras writes
it: the translated entry is the entry Keras 3 itself serializes for the equivalent
`keras.ops` call (class, module, constructor config, call arguments); the translated
model, deserialized by Keras 3, computes what TensorFlow's function computes on the same
arrays; and the translation reports itself. Calls no Keras 3 operation reproduces are
refused with one line naming the layer and the op, and a file holding TFOpLambda layers
is audited without a backend. The fixtures made by `fixtures/formats/make_tfop_fixtures.py`
get the end-to-end checks of `test_format_fixtures.py`; here their graphs, built from the
translated config and from the loaded model, are checked to agree.
"""

from __future__ import annotations

import copy
import functools
import json
import math
import shutil
import subprocess
import sys
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import h5py
import numpy as np
import pytest
from conftest import FIXTURES

from normify import graph as graphs
from normify.errors import ModelLoadError
from normify.formats import TF_KERAS, FormatError, Origin, translate

FORMATS = FIXTURES / "formats"
TFOP_FIXTURES = ["tf_ops_dense.h5", "tf_ops_conv.h5", "tf_ops_keras_format.keras"]
ORIGIN = Origin(TF_KERAS, "2.21.0")

# The model inputs a case may use: shape without the batch axis, dtype, values.
SHAPES = {"x": (4, 6), "z": (4, 6), "w": (6, 4), "s": (1, 6), "b": (4, 6)}
DTYPES = {"b": "bool"}
BATCH = 2


def data() -> dict[str, np.ndarray]:
    rng = np.random.default_rng(11)
    return {
        "x": rng.uniform(0.5, 2.0, size=(BATCH, *SHAPES["x"])).astype("float32"),  # positive
        "z": rng.normal(size=(BATCH, *SHAPES["z"])).astype("float32"),  # signed
        "w": rng.normal(size=(BATCH, *SHAPES["w"])).astype("float32"),
        "s": rng.normal(size=(BATCH, *SHAPES["s"])).astype("float32"),
        "b": rng.normal(size=(BATCH, *SHAPES["b"])) > 0,
    }


# --------------------------------------------------------------- configs as tf.keras wrote


def T(name: str) -> list[Any]:
    """A tf.keras reference to model input `name`."""
    return [name, 0, 0]


def is_ref(value: Any) -> bool:
    return isinstance(value, list) and len(value) == 3 and isinstance(value[0], str)


def node(first: Any, **kwargs: Any) -> list[Any]:
    """A tf.keras op-layer node: the first argument (a reference, a tuple of references
    for a list of tensors, or a constant) with the other arguments as keywords."""
    if is_ref(first):
        return [*first, kwargs]
    if isinstance(first, tuple):
        return [[*item, kwargs] for item in first]
    return ["_CONSTANT_VALUE", -1, first, kwargs]


def S(start: int | None = None, stop: int | None = None, step: int | None = None) -> dict:
    """A slice as tf.keras wrote it in a slice spec."""
    return {"start": start, "stop": stop, "step": step}


ELLIPSIS = {"class_name": "__ellipsis__"}


def references(value: Any) -> list[str]:
    """The layers a node or argument refers to (a node item is a reference with kwargs)."""
    if isinstance(value, list) and len(value) >= 3 and isinstance(value[0], str):
        return [value[0], *references(value[3:])]
    if isinstance(value, list):
        return [name for item in value for name in references(item)]
    if isinstance(value, dict):
        return [name for item in value.values() for name in references(item)]
    return []


def input_names(tf_node: list[Any]) -> list[str]:
    return sorted(set(references(tf_node)) & set(SHAPES))


def tf_keras_config(
    function: str, tf_node: list[Any], class_name: str = "TFOpLambda", outputs: int = 1
) -> dict[str, Any]:
    """A Functional config as tf.keras wrote it: the inputs the node reads, then one op
    layer named as tf.keras names them (`tf.<function>`), which is the model's output."""
    name = f"tf.{function}"
    layers: list[dict[str, Any]] = [
        {
            "class_name": "InputLayer",
            "config": {
                "batch_input_shape": [None, *SHAPES[input_name]],
                "dtype": DTYPES.get(input_name, "float32"),
                "sparse": False,
                "ragged": False,
                "name": input_name,
            },
            "name": input_name,
            "inbound_nodes": [],
        }
        for input_name in input_names(tf_node)
    ]
    layers.append(
        {
            "class_name": class_name,
            "config": {"name": name, "trainable": True, "dtype": "float32", "function": function},
            "name": name,
            "inbound_nodes": [copy.deepcopy(tf_node)],
        }
    )
    return {
        "class_name": "Functional",
        "config": {
            "name": "model",
            "layers": layers,
            "input_layers": [T(input_name) for input_name in input_names(tf_node)],
            "output_layers": [[name, 0, index] for index in range(outputs)],
        },
    }


def op_entry(config: dict[str, Any]) -> dict[str, Any]:
    return config["config"]["layers"][-1]


# --------------------------------------------------------------------------- the cases


@dataclass(frozen=True)
class Case:
    id: str
    function: str
    node: list[Any]
    keras: Callable[[dict[str, Any]], Any]  # the keras.ops call on the inputs by name
    class_name: str = "TFOpLambda"
    outputs: int = 1


def ops() -> Any:
    import keras

    return keras.ops


def K(function: str, *args: Any, **kwargs: Any) -> Callable[[dict[str, Any]], Any]:
    """`keras.ops.<function>(*args, **kwargs)` on the inputs `T(name)` refers to."""

    def call(inputs: dict[str, Any]) -> Any:
        def value(item: Any) -> Any:
            if is_ref(item):
                return inputs[item[0]]
            return [value(inner) for inner in item] if isinstance(item, list) else item

        return getattr(ops(), function)(*[value(arg) for arg in args], **kwargs)

    return call


def unary(function: str, keras_name: str, operand: str = "z") -> Case:
    return Case(function, function, node(T(operand)), K(keras_name, T(operand)))


def getitem(id: str, spec: Any, key: Any) -> Case:
    return Case(
        f"getitem {id}",
        "__operators__.getitem",
        node(T("x"), slice_spec=spec),
        lambda t: t["x"][key],
        class_name="SlicingOpLambda",
    )


VECTOR = [1.0, 2.0, 3.0, 4.0, 5.0, 6.0]
MATRIX = [[0.5 * row - column for column in range(3)] for row in range(6)]

CASES = [
    # binary arithmetic, constants on either side
    Case(
        "add operator", "__operators__.add", node(T("x"), y=1.0, name=None), K("add", T("x"), 1.0)
    ),
    Case("add tensors", "math.add", node(T("x"), y=T("z")), K("add", T("x"), T("z"))),
    Case(
        "add constant first",
        "__operators__.add",
        node(1.0, y=T("x"), name=None),
        K("add", 1.0, T("x")),
    ),
    Case(
        "subtract constant first", "math.subtract", node(2.0, y=T("x")), K("subtract", 2.0, T("x"))
    ),
    Case(
        "multiply vector",
        "math.multiply",
        node(T("x"), y=VECTOR),
        K("multiply", T("x"), np.array(VECTOR, "float32")),
    ),
    Case(
        "multiply vector first",
        "math.multiply",
        node(VECTOR, y=T("z"), name=None),
        K("multiply", np.array(VECTOR, "float32"), T("z")),
    ),
    Case(
        "scalar_mul",
        "compat.v1.math.scalar_mul",
        node(0.5, x=T("z"), name=None),
        K("multiply", 0.5, T("z")),
    ),
    Case("math.scalar_mul", "math.scalar_mul", node(0.5, x=T("z")), K("multiply", 0.5, T("z"))),
    Case("truediv", "math.truediv", node(T("z"), y=3.0), K("true_divide", T("z"), 3.0)),
    Case(
        "truediv constant first",
        "math.truediv",
        node(3.0, y=T("x"), name=None),
        K("true_divide", 3.0, T("x")),
    ),
    Case("divide", "math.divide", node(T("z"), y=T("x")), K("divide", T("z"), T("x"))),
    Case(
        "floor_div",
        "compat.v1.floor_div",
        node(T("z"), y=0.7, name=None),
        K("floor_divide", T("z"), 0.7),
    ),
    Case("floordiv", "math.floordiv", node(T("z"), y=T("x")), K("floor_divide", T("z"), T("x"))),
    Case("floormod", "math.floormod", node(T("z"), y=0.7), K("mod", T("z"), 0.7)),
    Case("pow", "math.pow", node(T("x"), y=2), K("power", T("x"), 2)),
    Case("pow constant first", "math.pow", node(2.0, y=T("z")), K("power", 2.0, T("z"))),
    Case("maximum", "math.maximum", node(T("z"), y=0.0, name=None), K("maximum", T("z"), 0.0)),
    Case("minimum", "math.minimum", node(T("z"), y=T("x")), K("minimum", T("z"), T("x"))),
    # elementwise functions
    unary("math.negative", "negative"),
    unary("math.abs", "absolute"),
    unary("math.sign", "sign"),
    unary("math.square", "square"),
    unary("math.sqrt", "sqrt", "x"),
    unary("math.rsqrt", "rsqrt", "x"),
    unary("math.reciprocal", "reciprocal", "x"),
    unary("math.exp", "exp"),
    unary("math.log", "log", "x"),
    unary("math.log1p", "log1p", "x"),
    unary("math.floor", "floor"),
    unary("math.ceil", "ceil"),
    unary("math.erf", "erf"),
    unary("math.sigmoid", "sigmoid"),
    unary("nn.sigmoid", "sigmoid"),
    unary("math.tanh", "tanh"),
    unary("nn.tanh", "tanh"),
    unary("nn.relu", "relu"),
    unary("nn.relu6", "relu6"),
    unary("nn.selu", "selu"),
    unary("nn.elu", "elu"),
    unary("math.softplus", "softplus"),
    unary("nn.softplus", "softplus"),
    unary("nn.silu", "silu"),
    unary("nn.swish", "silu"),
    Case("silu beta 1", "nn.silu", node(T("z"), beta=1.0), K("silu", T("z"))),
    Case(
        "leaky_relu",
        "nn.leaky_relu",
        node(T("z"), alpha=0.1),
        K("leaky_relu", T("z"), negative_slope=0.1),
    ),
    Case(
        "leaky_relu default",
        "nn.leaky_relu",
        node(T("z")),
        K("leaky_relu", T("z"), negative_slope=0.2),
    ),
    # TensorFlow's gelu is exact by default, Keras 3's approximate
    Case("gelu", "nn.gelu", node(T("z")), K("gelu", T("z"), approximate=False)),
    Case(
        "gelu approximate",
        "nn.gelu",
        node(T("z"), approximate=True),
        K("gelu", T("z"), approximate=True),
    ),
    # TensorFlow's softmax axis=None is the last axis
    Case("softmax", "nn.softmax", node(T("z")), K("softmax", T("z"), axis=-1)),
    Case("softmax axis", "nn.softmax", node(T("z"), axis=1), K("softmax", T("z"), axis=1)),
    Case("math.softmax", "math.softmax", node(T("z"), axis=-1), K("softmax", T("z"), axis=-1)),
    Case("log_softmax", "nn.log_softmax", node(T("z")), K("log_softmax", T("z"), axis=-1)),
    Case(
        "math.log_softmax",
        "math.log_softmax",
        node(T("z"), axis=1),
        K("log_softmax", T("z"), axis=1),
    ),
    # TensorFlow's epsilon bounds the squared norm, Keras 3's the norm
    Case(
        "l2_normalize",
        "math.l2_normalize",
        node(T("z"), axis=-1),
        K("normalize", T("z"), axis=-1, order=2, epsilon=1e-6),
    ),
    Case(
        "l2_normalize epsilon",
        "nn.l2_normalize",
        node(T("z"), axis=[1, 2], epsilon=10.0),
        K("normalize", T("z"), axis=[1, 2], order=2, epsilon=math.sqrt(10.0)),
    ),
    Case(
        "l2_normalize dim",
        "linalg.l2_normalize",
        node(T("z"), dim=1),
        K("normalize", T("z"), axis=1, order=2, epsilon=1e-6),
    ),
    # reductions
    Case(
        "reduce_mean",
        "math.reduce_mean",
        node(T("z"), axis=1, keepdims=True),
        K("mean", T("z"), axis=1, keepdims=True),
    ),
    Case("reduce_sum", "math.reduce_sum", node(T("z"), axis=[1, 2]), K("sum", T("z"), axis=[1, 2])),
    Case("reduce_max", "math.reduce_max", node(T("z"), axis=1), K("max", T("z"), axis=1)),
    Case("reduce_min everything", "math.reduce_min", node(T("z")), K("min", T("z"))),
    Case("reduce_prod", "math.reduce_prod", node(T("x"), axis=-1), K("prod", T("x"), axis=-1)),
    Case("reduce_std", "math.reduce_std", node(T("z"), axis=1), K("std", T("z"), axis=1)),
    Case(
        "reduce_variance",
        "math.reduce_variance",
        node(T("z"), axis=-1, keepdims=True),
        K("var", T("z"), axis=-1, keepdims=True),
    ),
    Case(
        "reduce_logsumexp",
        "math.reduce_logsumexp",
        node(T("z"), axis=-1),
        K("logsumexp", T("z"), axis=-1),
    ),
    Case("reduce_any", "math.reduce_any", node(T("b"), axis=1), K("any", T("b"), axis=1)),
    Case("reduce_all", "math.reduce_all", node(T("b"), axis=[1, 2]), K("all", T("b"), axis=[1, 2])),
    # shapes
    Case("reshape", "reshape", node(T("x"), shape=[-1, 24]), K("reshape", T("x"), [-1, 24])),
    Case(
        "concat",
        "concat",
        node((T("x"), T("z")), axis=-1),
        K("concatenate", [T("x"), T("z")], axis=-1),
    ),
    Case("concat of one", "concat", node((T("x"),), axis=1), K("concatenate", [T("x")], axis=1)),
    Case("stack", "stack", node((T("x"), T("z")), axis=1), K("stack", [T("x"), T("z")], axis=1)),
    Case(
        "stack default axis", "stack", node((T("x"), T("z"))), K("stack", [T("x"), T("z")], axis=0)
    ),
    Case("expand_dims", "expand_dims", node(T("x"), axis=-1), K("expand_dims", T("x"), -1)),
    Case(
        "squeeze",
        "compat.v1.squeeze",
        node(T("s"), axis=1, name=None),
        K("squeeze", T("s"), axis=1),
    ),
    Case(
        "squeeze all", "compat.v1.squeeze", node(T("s"), axis=None, name=None), K("squeeze", T("s"))
    ),
    Case(
        "squeeze_dims",
        "compat.v1.squeeze",
        node(T("s"), squeeze_dims=[1]),
        K("squeeze", T("s"), axis=[1]),
    ),
    Case("squeeze v2", "squeeze", node(T("s"), axis=[1]), K("squeeze", T("s"), axis=[1])),
    Case(
        "transpose",
        "compat.v1.transpose",
        node(T("x"), perm=[0, 2, 1], name="transpose", conjugate=False),
        K("transpose", T("x"), [0, 2, 1]),
    ),
    Case(
        "transpose reversed",
        "compat.v1.transpose",
        node(T("x"), perm=None, name="transpose", conjugate=False),
        K("transpose", T("x")),
    ),
    Case(
        "transpose v2", "transpose", node(T("x"), perm=[0, 2, 1]), K("transpose", T("x"), [0, 2, 1])
    ),
    Case(
        "matrix_transpose", "linalg.matrix_transpose", node(T("x")), K("swapaxes", T("x"), -2, -1)
    ),
    Case("matmul", "linalg.matmul", node(T("x"), b=T("w")), K("matmul", T("x"), T("w"))),
    Case(
        "matmul transpose_b",
        "linalg.matmul",
        node(T("x"), b=T("z"), transpose_b=True),
        K("einsum", "...ij,...kj->...ik", T("x"), T("z")),
    ),
    Case(
        "matmul transpose_a",
        "linalg.matmul",
        node(T("x"), b=T("z"), transpose_a=True, a_is_sparse=False),
        K("einsum", "...ji,...jk->...ik", T("x"), T("z")),
    ),
    Case(
        "matmul adjoint_b",
        "matmul",
        node(T("x"), b=T("z"), adjoint_b=True),
        K("einsum", "...ij,...kj->...ik", T("x"), T("z")),
    ),
    Case(
        "matmul constant",
        "linalg.matmul",
        node(T("x"), b=MATRIX, name=None),
        K("matmul", T("x"), np.array(MATRIX, "float32")),
    ),
    Case("cast float16", "cast", node(T("z"), dtype="float16"), K("cast", T("z"), "float16")),
    Case("cast int32", "cast", node(T("z"), dtype="int32"), K("cast", T("z"), "int32")),
    Case(
        "clip_by_value",
        "clip_by_value",
        node(T("z"), clip_value_min=-0.5, clip_value_max=0.5),
        K("clip", T("z"), -0.5, 0.5),
    ),
    Case(
        "split",
        "split",
        node(T("x"), num_or_size_splits=2, axis=-1),
        K("split", T("x"), 2, axis=-1),
        outputs=2,
    ),
    Case(
        "split sizes",
        "split",
        node(T("x"), num_or_size_splits=[1, 2, 3], axis=-1),
        K("split", T("x"), [1, 3], axis=-1),
        outputs=3,
    ),
    Case(
        "tile", "tile", node(T("x"), multiples=[1, 2, 1], name=None), K("tile", T("x"), [1, 2, 1])
    ),
    # slicing, in every form tf.keras wrote a slice spec
    getitem("slices", [S(), S(1, 3)], (slice(None), slice(1, 3))),
    getitem("negative", [S(), S(-3, -1)], (slice(None), slice(-3, -1))),
    getitem("steps", [S(0, 2), S(None, None, -1), 2], (slice(0, 2), slice(None, None, -1), 2)),
    getitem("ellipsis", [ELLIPSIS, 0], (Ellipsis, 0)),
    getitem("newaxis", [S(), None, 1], (slice(None), None, 1)),
    getitem("ellipsis newaxis", [ELLIPSIS, None], (Ellipsis, None)),
    getitem("one slice", S(1), (slice(1, None),)),
    getitem("one index", 0, 0),
]


def translated(case: Case) -> Any:
    return translate(
        tf_keras_config(case.function, case.node, case.class_name, case.outputs), ORIGIN
    )


# ------------------------------------------------------------------------ config out


def comparable(entry: dict[str, Any]) -> dict[str, Any]:
    """An op entry without its name and with tensors as (layer, node, index): what a
    translation must agree on with Keras's own serialization."""

    def plain(value: Any) -> Any:
        if isinstance(value, dict) and value.get("class_name") == "__keras_tensor__":
            return ("tensor", *value["config"]["keras_history"])
        if isinstance(value, dict):
            return {key: plain(item) for key, item in value.items()}
        if isinstance(value, (list, tuple)):
            return [plain(item) for item in value]
        return value

    entry = json.loads(json.dumps(entry))
    return {
        "module": entry["module"],
        "class_name": entry["class_name"],
        "registered_name": entry["registered_name"],
        "config": {key: value for key, value in entry["config"].items() if key != "name"},
        "inbound_nodes": plain(entry["inbound_nodes"]),
    }


def keras_entry(case: Case) -> dict[str, Any]:
    """The entry Keras 3 writes for the case's keras.ops call in a functional model."""
    import keras

    inputs = {
        name: keras.Input(SHAPES[name], name=name, dtype=DTYPES.get(name, "float32"))
        for name in input_names(case.node)
    }
    model = keras.Model(list(inputs.values()), case.keras(inputs))
    layers = keras.saving.serialize_keras_object(model)["config"]["layers"]
    (entry,) = [layer for layer in layers if layer["class_name"] != "InputLayer"]
    return entry


@pytest.mark.parametrize("case", CASES, ids=[case.id for case in CASES])
def test_translation_is_the_entry_keras3_writes(case):
    entry = op_entry(translated(case).config)
    assert comparable(entry) == comparable(keras_entry(case))
    assert entry["name"] == entry["config"]["name"] == f"tf.{case.function}"


# -------------------------------------------------------------------------- numbers


def tf_function(function: str) -> Any:
    import tensorflow as tf

    return functools.reduce(getattr, function.split("."), tf)


def tf_arguments(case: Case, arrays: dict[str, np.ndarray]) -> tuple[list[Any], dict[str, Any]]:
    """The case's call as tf.keras's op layer made it: references become the arrays, slice
    dicts slices (as its SlicingOpLambda did)."""
    import tensorflow as tf

    def value(item: Any) -> Any:
        if is_ref(item):
            return tf.constant(arrays[item[0]])
        if item == ELLIPSIS:
            return Ellipsis
        if isinstance(item, dict) and set(item) == {"start", "stop", "step"}:
            return slice(item["start"], item["stop"], item["step"])
        if isinstance(item, list):
            return [value(inner) for inner in item]
        return item

    # tf.keras called the op on tensors, a constant first argument converted to one
    items = case.node if isinstance(case.node[0], list) else [case.node]
    firsts = [
        tf.constant(item[2], "float32")
        if item[0] == "_CONSTANT_VALUE"
        else tf.constant(arrays[item[0]])
        for item in items
    ]
    first = firsts[0] if case.node is items[0] else firsts
    return [first], {key: value(item) for key, item in items[0][3].items()}


def as_arrays(outputs: Any) -> list[np.ndarray]:
    import keras

    outputs = outputs if isinstance(outputs, (list, tuple)) else [outputs]
    return [keras.ops.convert_to_numpy(output) for output in outputs]


@pytest.mark.parametrize("case", CASES, ids=[case.id for case in CASES])
def test_translated_op_computes_what_tensorflow_computes(case):
    # The reference is TensorFlow's own op, as the tf.keras file called it.
    pytest.importorskip("tensorflow", reason="the reference op is TensorFlow's; not installed")
    import keras

    from normify.formats import arguments

    config = arguments.fit(translated(case)).config
    model = keras.saving.deserialize_keras_object(copy.deepcopy(config))
    arrays = data()
    names = input_names(case.node)
    got = as_arrays(model([arrays[name] for name in names] if len(names) > 1 else arrays[names[0]]))
    args, kwargs = tf_arguments(case, arrays)
    want = as_arrays(tf_function(case.function)(*args, **kwargs))
    assert len(got) == len(want) == case.outputs
    for got_array, want_array in zip(got, want, strict=True):
        assert got_array.shape == want_array.shape
        assert got_array.dtype == want_array.dtype
        np.testing.assert_allclose(got_array, want_array, rtol=2e-6, atol=1e-6)


def test_every_mapped_function_has_a_case():
    from normify.formats.tfop import OPS

    assert set(OPS) == {case.function for case in CASES}


# -------------------------------------------------------------------------- notices


def test_each_translation_reports_itself():
    translation = translated(CASES[0])
    assert translation.notices[-1] == (
        "repaired: tf.__operators__.add: TFOpLambda tf.__operators__.add -> keras.ops.add "
        "[tfop-add]"
    )
    slicing = translate(
        tf_keras_config("__operators__.getitem", node(T("x"), slice_spec=0), "SlicingOpLambda"),
        ORIGIN,
    )
    assert slicing.notices[-1].endswith(
        "SlicingOpLambda tf.__operators__.getitem -> keras.ops.get_item [tfop-get_item]"
    )


def test_a_constant_array_takes_the_layers_float_dtype():
    config = tf_keras_config("math.multiply", node(T("x"), y=VECTOR))
    op_entry(config)["config"]["dtype"] = "mixed_float16"
    (operand,) = op_entry(translate(config, ORIGIN).config)["inbound_nodes"][0]["args"][1:]
    assert operand == {"class_name": "__numpy__", "config": {"value": VECTOR, "dtype": "float16"}}
    config = tf_keras_config("math.add", node(T("x"), y=[1, 2, 3, 4, 5, 6]))
    (operand,) = op_entry(translate(config, ORIGIN).config)["inbound_nodes"][0]["args"][1:]
    assert operand["config"]["dtype"] == "int32"


# ------------------------------------------------------------------------- refusals

REFUSALS = [
    (
        "image.resize",
        node(T("x"), size=[8, 12]),
        "TFOpLambda",
        "which has no Keras 3 equivalent normify knows",
    ),
    (
        "boolean_mask",
        node(T("x"), mask=T("b")),
        "SlicingOpLambda",
        "which has no Keras 3 equivalent normify knows",
    ),
    (
        "nn.silu",
        node(T("z"), beta=2.0),
        "TFOpLambda",
        "with beta=2.0, which keras.ops.silu does not take",
    ),
    (
        "reshape",
        node(T("x"), shape=T("z")),
        "TFOpLambda",
        "with shape computed by the model (a tensor)",
    ),
    (
        "split",
        node(T("x"), num_or_size_splits=[2, -1], axis=-1),
        "TFOpLambda",
        "num_or_size_splits=[2, -1]",
    ),
    (
        "__operators__.getitem",
        node(T("x"), slice_spec=[S(), {"start": 1, "stop": ["z", 0, 0], "step": None}]),
        "SlicingOpLambda",
        "a slice bound the model computes",
    ),
    (
        "__operators__.getitem",
        node(T("x"), slice_spec=[S(), 1.5]),
        "SlicingOpLambda",
        "with slice spec entry 1.5",
    ),
    (
        "math.multiply",
        node(T("x"), y=2.0, out=None),
        "TFOpLambda",
        "with argument out=None, which normify does not know",
    ),
    ("math.multiply", node(T("x")), "TFOpLambda", "without argument y"),
    (
        "compat.v1.transpose",
        node(T("x"), perm=[0, 2, 1], conjugate=True),
        "TFOpLambda",
        "with conjugate=True",
    ),
    (
        "linalg.matmul",
        node(T("x"), b=T("w"), output_type="float64"),
        "TFOpLambda",
        "with output_type='float64'",
    ),
    ("concat", node((T("x"), T("z"))), "TFOpLambda", "without an axis"),
]


@pytest.mark.parametrize(
    "function, tf_node, class_name, cause", REFUSALS, ids=[f"{r[0]} {r[3][:24]}" for r in REFUSALS]
)
def test_an_unmappable_call_is_refused_in_one_line(function, tf_node, class_name, cause):
    with pytest.raises(FormatError) as raised:
        translate(tf_keras_config(function, tf_node, class_name), ORIGIN)
    message = str(raised.value)
    assert "\n" not in message
    assert message.startswith(
        f"layer 'tf.{function}' (tf.keras (2.21.0)): {class_name} runs tf.{function}"
    )
    assert cause in message


def edit_model_config(path, old: str, new: str) -> None:
    with h5py.File(path, "r+") as handle:
        text = handle.attrs["model_config"]
        text = text.decode() if isinstance(text, bytes) else text
        assert old in text
        handle.attrs["model_config"] = text.replace(old, new)


def test_a_file_with_an_unmapped_op_is_refused_in_one_line(tmp_path):
    path = tmp_path / "unmapped.h5"
    shutil.copy(FORMATS / "tf_ops_conv.h5", path)
    edit_model_config(path, '"function": "nn.relu6"', '"function": "image.resize"')
    import normify

    with pytest.raises(ModelLoadError) as raised:
        normify.audit(path)
    assert str(raised.value) == (
        f"{path}: layer 'tf.nn.relu6' (tf.keras (2.21.0)): TFOpLambda runs tf.image.resize, "
        "which has no Keras 3 equivalent normify knows"
    )
    done = subprocess.run(
        [sys.executable, "-m", "normify", "audit", str(path)],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 2
    assert done.stderr.count("\n") == 1 and "TFOpLambda runs tf.image.resize" in done.stderr


# ---------------------------------------------------------------------- no backend


def test_tfop_files_are_audited_without_a_backend():
    script = (
        "import json, sys, normify\n"
        "summaries = {p: normify.audit(p).summary for p in sys.argv[1:]}\n"
        "assert 'keras' not in sys.modules and 'tensorflow' not in sys.modules\n"
        "print(json.dumps(summaries))\n"
    )
    paths = [str(FORMATS / name) for name in TFOP_FIXTURES]
    done = subprocess.run(
        [sys.executable, "-c", script, *paths], capture_output=True, text=True, timeout=120
    )
    assert done.returncode == 0, done.stderr[-2000:]
    summaries = json.loads(done.stdout)
    assert summaries[paths[1]]["conv"] == {"total": 2, "normalized": 0}


# Translates the configs on stdin with the formats package alone (normify's own
# `__init__` imports NumPy for its API), any import of NumPy, Keras or TensorFlow failing.
TRANSLATE_WITHOUT_IMPORTS = """
import json, sys, types
class Refuse:
    def find_spec(self, name, path=None, target=None):
        if name.split(".")[0] in ("numpy", "keras", "tensorflow"):
            raise ImportError(f"{name} imported")
        return None
sys.meta_path.insert(0, Refuse())
package = types.ModuleType("normify")
package.__path__ = [sys.argv[1]]
sys.modules["normify"] = package
from normify.formats import TF_KERAS, Origin, translate
for config in json.load(sys.stdin):
    translate(config, Origin(TF_KERAS, "2.21.0"))
print("translated")
"""


def test_translating_ops_imports_neither_keras_nor_numpy():
    configs = [
        tf_keras_config(case.function, case.node, case.class_name, case.outputs) for case in CASES
    ]
    done = subprocess.run(
        [sys.executable, "-c", TRANSLATE_WITHOUT_IMPORTS, str(FIXTURES.parent / "normify")],
        input=json.dumps(configs),
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 0, done.stderr[-2000:]
    assert done.stdout.strip() == "translated"


# -------------------------------------------------------------------------- graphs


def edges(graph: graphs.Graph) -> dict[str, list[tuple[str, int]]]:
    return {
        node.id: [(ref.node, ref.index) for ref in node.inputs] for node in graph.nodes.values()
    }


def kinds_of(graph: graphs.Graph) -> dict[str, tuple[str, str]]:
    return {path: (spec.kind, spec.class_name) for path, spec, _ in graphs.walk_layers(graph)}


@pytest.mark.parametrize("name", TFOP_FIXTURES)
def test_graph_from_the_translated_config_agrees_with_the_loaded_model(name):
    from normify.files import read_model_file
    from normify.loading import load_model

    model_file = read_model_file(FORMATS / name)
    from_config = graphs.from_config(model_file.config)
    from_model = graphs.from_model(load_model(model_file).model)
    assert kinds_of(from_config) == kinds_of(from_model)
    assert edges(from_config) == edges(from_model)
    ops = [spec for _, spec, _ in graphs.walk_layers(from_config) if spec.kind == "op"]
    assert ops and all(spec.name.startswith("tf.") for spec in ops)
    assert not any(spec.class_name in ("TFOpLambda", "SlicingOpLambda") for spec in ops)
