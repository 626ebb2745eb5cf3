"""TFOpLambda and SlicingOpLambda layers (tf.keras 2.4+) as Keras 3 operations.

tf.keras recorded a raw TensorFlow call on a Keras tensor (`tf.math.multiply(x, 2.0)`,
`x + 1.0`, `tf.reshape(x, ...)`, `x[:, 1:3]`) as a layer naming the TensorFlow function
(`"function": "math.multiply"`). Keras 3 has no such layer, but records `keras.ops` calls
on symbolic tensors as operation entries of the functional config (module
`keras.src.ops.*`). Each TFOpLambda entry is rewritten, in place and keeping its name, as
the entry Keras 3 itself writes for the equivalent `keras.ops` call: the operation's
constructor arguments (an axis, a shape) in its config, its call arguments (tensors and
constants) in its node.

By the time this stage runs, `normify.formats.keras2` has turned the Keras 2 nodes into
Keras 3 ones: the op's first argument is the node's one positional argument, every other
argument a keyword argument named as the TensorFlow function's parameter (tf.keras's
serialization). The arguments are bound to the TensorFlow function's parameters, so a
mapping reads them by name whichever way the call passed them. A function without a
mapping, or an argument a Keras 3 operation cannot express, is refused with one line
naming the layer and the op.

Keras 3 accepts operation names with dots (`tf.math.multiply`), so every reference to a
layer by name stays valid. Nothing here imports Keras or NumPy.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from normify.formats.base import Context, Site, Stage, short

OP_CLASSES = frozenset({"TFOpLambda", "SlicingOpLambda"})
NUMPY = "keras.src.ops.numpy"
NN = "keras.src.ops.nn"
MATH = "keras.src.ops.math"
CORE = "keras.src.ops.core"
KERAS_TENSOR = "__keras_tensor__"


class NotMapped(Exception):
    """A call no Keras 3 operation reproduces; the text completes "TFOpLambda runs tf.xyz"."""


@dataclass(frozen=True)
class KerasOp:
    """A `keras.ops` call as Keras 3 serializes it: the operation's class and module, its
    constructor arguments (besides the name) and its call arguments."""

    function: str  # the keras.ops function, for the notice
    class_name: str
    module: str
    config: dict[str, Any]
    args: list[Any]
    kwargs: dict[str, Any] = field(default_factory=dict)


class Call(dict[str, Any]):
    """A TensorFlow call's arguments by parameter name; a required one it lacks refuses
    the call. `float_dtype` is the dtype of the floats of a constant array operand."""

    float_dtype: str = "float32"

    def __missing__(self, key: str) -> Any:
        raise NotMapped(f"without argument {key}")

    def operand(self, key: str) -> Any:
        """A call argument: a tensor, a Python number, or a constant array, which
        tf.keras wrote as nested lists and Keras 3 takes as a NumPy array (its ops read a
        list as a dtype-less sequence)."""
        return numpy_constant(self[key], self.float_dtype)

    def operands(self, key: str) -> list[Any]:
        """The tensors (or constants) of a concatenation or stack."""
        return [numpy_constant(item, self.float_dtype) for item in as_list(self[key])]


Translator = Callable[[Call], KerasOp]


@dataclass(frozen=True)
class Mapping:
    """How to translate calls of one TensorFlow function: its parameters in order (what
    its arguments are bound to; `name` is always accepted and dropped) and the
    translation of a bound call."""

    parameters: tuple[str, ...]
    translate: Translator


# ------------------------------------------------------------------------- arguments


def is_tensor(value: Any) -> bool:
    return isinstance(value, dict) and value.get("class_name") == KERAS_TENSOR


def holds_tensor(value: Any) -> bool:
    if is_tensor(value):
        return True
    if isinstance(value, list):
        return any(holds_tensor(item) for item in value)
    if isinstance(value, dict):
        return any(holds_tensor(item) for item in value.values())
    return False


def constant(call: Call, name: str, default: Any = None) -> Any:
    """An argument that becomes a constructor argument of the Keras operation, which
    takes no tensors there."""
    value = call.get(name, default)
    if holds_tensor(value):
        raise NotMapped(
            f"with {name} computed by the model (a tensor), which the Keras 3 operation "
            "takes only as a constant"
        )
    return value


def require(call: Call, name: str, neutral: tuple[Any, ...], why: str) -> None:
    """Refuse an argument whose value changes what the call computes in a way no Keras 3
    operation takes."""
    value = call.get(name, neutral[0])
    if not any(value == option and type(value) is type(option) for option in neutral):
        raise NotMapped(f"with {name}={short(value)}, {why}")


def numpy_constant(value: Any, float_dtype: str) -> Any:
    """A constant array as Keras 3 serializes a NumPy array argument; anything else as
    it is. Floats take the layer's dtype (TensorFlow converted a list to the other
    operand's dtype), integers int32, booleans bool."""
    if not isinstance(value, list) or holds_tensor(value):
        return value
    leaves = _leaves(value)
    if leaves and all(isinstance(leaf, bool) for leaf in leaves):
        dtype = "bool"
    elif all(_is_int(leaf) for leaf in leaves):
        dtype = "int32"
    else:
        dtype = float_dtype
    return {"class_name": "__numpy__", "config": {"value": value, "dtype": dtype}}


def _leaves(value: Any) -> list[Any]:
    if isinstance(value, list):
        return [leaf for item in value for leaf in _leaves(item)]
    return [value]


FLOAT_DTYPES = frozenset({"float16", "bfloat16", "float32", "float64"})


def float_dtype(layer_dtype: Any) -> str:
    """The float dtype a layer of dtype (policy) `layer_dtype` computes in."""
    if isinstance(layer_dtype, str):
        name = layer_dtype.removeprefix("mixed_")
        if name in FLOAT_DTYPES:
            return name
    return "float32"


def as_list(value: Any) -> list[Any]:
    """A value that is a list in TensorFlow's call: the values of a concatenation or a
    stack (`normify.formats.nodes` writes a one-tensor list as the tensor alone), the
    entries of a slice spec (tf.keras wrote one entry alone)."""
    return value if isinstance(value, list) else [value]


# ------------------------------------------------------------------------- translators


def elementwise(function: str, class_name: str, module: str = NUMPY) -> Mapping:
    """A binary TensorFlow op `f(x, y)` as the Keras op of the same arithmetic; either
    operand may be a constant."""
    return Mapping(
        ("x", "y"),
        lambda call: KerasOp(
            function, class_name, module, {}, [call.operand("x"), call.operand("y")]
        ),
    )


def unary(function: str, class_name: str, module: str = NUMPY, parameter: str = "x") -> Mapping:
    return Mapping(
        (parameter,), lambda call: KerasOp(function, class_name, module, {}, [call[parameter]])
    )


def scalar_mul() -> Mapping:
    """`tf.math.scalar_mul(scalar, x)`: tf.keras records the scalar as the constant first
    argument and `x` by keyword."""
    return Mapping(
        ("scalar", "x"),
        lambda call: KerasOp(
            "multiply", "Multiply", NUMPY, {}, [call.operand("scalar"), call.operand("x")]
        ),
    )


def with_axis(function: str, class_name: str, module: str, parameter: str) -> Mapping:
    """softmax and log_softmax: TensorFlow's `axis=None` is the last axis."""

    def translate(call: Call) -> KerasOp:
        axis = constant(call, "axis")
        config = {"axis": -1 if axis is None else axis}
        return KerasOp(function, class_name, module, config, [call[parameter]])

    return Mapping((parameter, "axis"), translate)


def silu() -> Mapping:
    def translate(call: Call) -> KerasOp:
        require(call, "beta", (1.0, 1), "which keras.ops.silu does not take")
        return KerasOp("silu", "Silu", NN, {}, [call["features"]])

    return Mapping(("features", "beta"), translate)


def gelu() -> Mapping:
    # TensorFlow's default is the exact (erf) gelu, Keras 3's the tanh approximation.
    def translate(call: Call) -> KerasOp:
        approximate = constant(call, "approximate", False)
        return KerasOp("gelu", "Gelu", NN, {"approximate": approximate}, [call["features"]])

    return Mapping(("features", "approximate"), translate)


def leaky_relu() -> Mapping:
    def translate(call: Call) -> KerasOp:
        slope = constant(call, "alpha", 0.2)
        return KerasOp("leaky_relu", "LeakyRelu", NN, {"negative_slope": slope}, [call["features"]])

    return Mapping(("features", "alpha"), translate)


def elu() -> Mapping:
    return Mapping(
        ("features",),
        lambda call: KerasOp("elu", "Elu", NN, {"alpha": 1.0}, [call["features"]]),
    )


TF_L2_EPSILON = 1e-12


def l2_normalize() -> Mapping:
    """TensorFlow computes x * rsqrt(max(sum(x²), ε)); Keras 3 computes
    x * min(rsqrt(sum(x²)), 1/ε'): the same for ε' = √ε."""

    def translate(call: Call) -> KerasOp:
        axis = constant(call, "axis")
        if axis is None:
            axis = constant(call, "dim")  # TensorFlow 1's name for the axis
        epsilon = constant(call, "epsilon", TF_L2_EPSILON)
        if not isinstance(epsilon, (int, float)) or isinstance(epsilon, bool) or epsilon <= 0:
            raise NotMapped(f"with epsilon={short(epsilon)}, which normify cannot carry over")
        config = {"axis": axis, "order": 2, "epsilon": math.sqrt(epsilon)}
        return KerasOp("normalize", "Normalize", NN, config, [call["x"]])

    return Mapping(("x", "axis", "epsilon", "dim"), translate)


def reduction(function: str, class_name: str, module: str = NUMPY) -> Mapping:
    """`tf.math.reduce_*(input_tensor, axis=None, keepdims=False)`: numpy's reductions,
    axis for axis (None: every axis)."""
    extra = {"Max": {"initial": None}, "Min": {"initial": None}, "Prod": {"dtype": None}}

    def translate(call: Call) -> KerasOp:
        config = {
            "axis": constant(call, "axis"),
            "keepdims": bool(constant(call, "keepdims", False)),
            **extra.get(class_name, {}),
        }
        return KerasOp(function, class_name, module, config, [call["input_tensor"]])

    return Mapping(("input_tensor", "axis", "keepdims"), translate)


def reshape() -> Mapping:
    def translate(call: Call) -> KerasOp:
        shape = constant(call, "shape")
        return KerasOp("reshape", "Reshape", NUMPY, {"newshape": shape}, [call["tensor"]])

    return Mapping(("tensor", "shape"), translate)


def joining(function: str, class_name: str, default_axis: int | None) -> Mapping:
    """`tf.concat(values, axis)` and `tf.stack(values, axis=0)`."""

    def translate(call: Call) -> KerasOp:
        axis = constant(call, "axis", default_axis)
        if axis is None:
            raise NotMapped("without an axis")
        return KerasOp(function, class_name, NUMPY, {"axis": axis}, [call.operands("values")])

    return Mapping(("values", "axis"), translate)


def expand_dims() -> Mapping:
    def translate(call: Call) -> KerasOp:
        axis = constant(call, "axis")
        if axis is None:
            raise NotMapped("without an axis")
        return KerasOp("expand_dims", "ExpandDims", NUMPY, {"axis": axis}, [call["input"]])

    return Mapping(("input", "axis"), translate)


def squeeze(parameters: tuple[str, ...]) -> Mapping:
    def translate(call: Call) -> KerasOp:
        axis = constant(call, "axis")
        if axis is None:
            axis = constant(call, "squeeze_dims")  # TensorFlow 1's name for the axis
        return KerasOp("squeeze", "Squeeze", NUMPY, {"axis": axis}, [call["input"]])

    return Mapping(parameters, translate)


REAL_ONLY = "which Keras 3 operations do not take (complex conjugation)"


def transpose(parameters: tuple[str, ...]) -> Mapping:
    def translate(call: Call) -> KerasOp:
        require(call, "conjugate", (False, None), REAL_ONLY)
        perm = constant(call, "perm")
        return KerasOp("transpose", "Transpose", NUMPY, {"axes": perm}, [call["a"]])

    return Mapping(parameters, translate)


def matrix_transpose() -> Mapping:
    def translate(call: Call) -> KerasOp:
        require(call, "conjugate", (False, None), REAL_ONLY)
        config = {"axis1": -2, "axis2": -1}
        return KerasOp("swapaxes", "Swapaxes", NUMPY, config, [call["a"]])

    return Mapping(("a", "conjugate"), translate)


MATMUL_PARAMETERS = (
    "a", "b", "transpose_a", "transpose_b", "adjoint_a", "adjoint_b", "a_is_sparse",
    "b_is_sparse", "output_type", "grad_a", "grad_b",
)  # fmt: skip


def matmul() -> Mapping:
    """`tf.linalg.matmul`; a transposed operand makes it an einsum over the last two axes
    (the leading axes broadcast, as matmul's batch axes do). The sparsity and gradient
    flags are hints that change no result; adjoint is transpose for real tensors."""

    def translate(call: Call) -> KerasOp:
        require(call, "output_type", (None,), "which keras.ops.matmul does not take")
        transposed = []
        for operand in ("a", "b"):
            flags = [
                constant(call, f"{kind}_{operand}", False) for kind in ("transpose", "adjoint")
            ]
            transposed.append(any(bool(flag) for flag in flags))
        operands = [call.operand("a"), call.operand("b")]
        if not any(transposed):
            return KerasOp("matmul", "Matmul", NUMPY, {}, operands)
        left = "...ji" if transposed[0] else "...ij"
        right = "...kj" if transposed[1] else "...jk"
        config = {"subscripts": f"{left},{right}->...ik"}
        return KerasOp("einsum", "Einsum", NUMPY, config, operands)

    return Mapping(MATMUL_PARAMETERS, translate)


def cast() -> Mapping:
    def translate(call: Call) -> KerasOp:
        dtype = constant(call, "dtype")
        if not isinstance(dtype, str):
            raise NotMapped(f"with dtype={short(dtype)}, which normify cannot read")
        return KerasOp("cast", "Cast", CORE, {"dtype": dtype}, [call["x"]])

    return Mapping(("x", "dtype"), translate)


def clip_by_value() -> Mapping:
    def translate(call: Call) -> KerasOp:
        config = {
            "x_min": constant(call, "clip_value_min"),
            "x_max": constant(call, "clip_value_max"),
        }
        return KerasOp("clip", "Clip", NUMPY, config, [call["t"]])

    return Mapping(("t", "clip_value_min", "clip_value_max"), translate)


def split() -> Mapping:
    """`tf.split` takes a number of equal parts or the parts' sizes; `keras.ops.split`
    a number of parts or the indices where the parts start (numpy's)."""

    def translate(call: Call) -> KerasOp:
        splits = constant(call, "num_or_size_splits")
        axis = constant(call, "axis", 0)
        if isinstance(splits, list):
            if not splits or not all(_is_int(size) and size >= 0 for size in splits):
                raise NotMapped(
                    f"with num_or_size_splits={short(splits)} (a size the model works out, "
                    "-1), which keras.ops.split cannot take without the axis's length"
                )
            count = len(splits)
            sections: Any = [sum(splits[:end]) for end in range(1, count)]
        elif _is_int(splits):
            count, sections = splits, splits
        else:
            raise NotMapped(f"with num_or_size_splits={short(splits)}, which normify cannot read")
        num = constant(call, "num")
        if num is not None and num != count:
            raise NotMapped(f"with num={short(num)} for {count} part(s)")
        config = {"indices_or_sections": sections, "axis": axis}
        return KerasOp("split", "Split", NUMPY, config, [call["value"]])

    return Mapping(("value", "num_or_size_splits", "axis", "num"), translate)


def tile() -> Mapping:
    def translate(call: Call) -> KerasOp:
        multiples = constant(call, "multiples")
        return KerasOp("tile", "Tile", NUMPY, {"repeats": multiples}, [call["input"]])

    return Mapping(("input", "multiples"), translate)


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


# --------------------------------------------------------------------------- slicing

ELLIPSIS = {"class_name": "__ellipsis__", "config": {}}
SLICE_KEYS = frozenset({"start", "stop", "step"})


def getitem() -> Mapping:
    """`x[spec]` (SlicingOpLambda). tf.keras wrote a slice as `{start, stop, step}`,
    `...` as `{"class_name": "__ellipsis__"}` and `tf.newaxis` as null; Keras 3 writes
    `__slice__` and `__ellipsis__` entries, and its GetItem takes an index alone or a
    tuple (a list in the config), never a slice, `...` or a new axis alone."""

    def translate(call: Call) -> KerasOp:
        require(call, "var", (None,), "which only variables take")
        spec = call["slice_spec"]
        key = spec if _is_int(spec) else [slice_entry(item) for item in as_list(spec)]
        return KerasOp("get_item", "GetItem", NUMPY, {}, [call["tensor"], key])

    return Mapping(("tensor", "slice_spec", "var"), translate)


def slice_entry(item: Any) -> Any:
    """One entry of a slice spec, as Keras 3 serializes it."""
    if item is None or _is_int(item):
        return item  # newaxis, or an index
    if isinstance(item, dict) and item.get("class_name") == "__ellipsis__":
        return dict(ELLIPSIS)
    if isinstance(item, dict) and set(item) == SLICE_KEYS:
        bounds = [item[key] for key in ("start", "stop", "step")]
        if all(bound is None or _is_int(bound) for bound in bounds):
            return {"class_name": "__slice__", "config": dict(item)}
        # a bound the model computes: tf.keras wrote a `[layer, node, tensor]` reference
        if any(isinstance(bound, list) or holds_tensor(bound) for bound in bounds):
            raise NotMapped(
                "with a slice bound the model computes (a tensor), which Keras 3's GetItem "
                "cannot take"
            )
    raise NotMapped(f"with slice spec entry {short(item)}, which normify cannot translate")


# ------------------------------------------------------------------------------ table

# TensorFlow functions by the name tf.keras recorded (its canonical API name, which for
# some functions is a compat.v1 one), with the Keras 3 operation of each.
OPS: dict[str, Mapping] = {
    "__operators__.add": elementwise("add", "Add"),
    "math.add": elementwise("add", "Add"),
    "math.subtract": elementwise("subtract", "Subtract"),
    "math.multiply": elementwise("multiply", "Multiply"),
    "math.scalar_mul": scalar_mul(),
    "compat.v1.math.scalar_mul": scalar_mul(),
    # truediv (`/`) divides integers into floats, as keras.ops.true_divide does
    "math.truediv": elementwise("true_divide", "TrueDivide"),
    "math.divide": elementwise("divide", "Divide"),
    "math.floordiv": elementwise("floor_divide", "FloorDivide"),
    "compat.v1.floor_div": elementwise("floor_divide", "FloorDivide"),
    # floormod's result takes the divisor's sign, as numpy's mod does
    "math.floormod": elementwise("mod", "Mod"),
    "math.pow": elementwise("power", "Power"),
    "math.maximum": elementwise("maximum", "Maximum"),
    "math.minimum": elementwise("minimum", "Minimum"),
    "math.negative": unary("negative", "Negative"),
    "math.abs": unary("absolute", "Absolute"),
    "math.sign": unary("sign", "Sign"),
    "math.square": unary("square", "Square"),
    "math.sqrt": unary("sqrt", "Sqrt"),
    "math.rsqrt": unary("rsqrt", "Rsqrt", MATH),
    "math.reciprocal": unary("reciprocal", "Reciprocal"),
    "math.exp": unary("exp", "Exp"),
    "math.log": unary("log", "Log"),
    "math.log1p": unary("log1p", "Log1p"),
    "math.floor": unary("floor", "Floor"),
    "math.ceil": unary("ceil", "Ceil"),
    "math.erf": unary("erf", "Erf", MATH),
    "math.sigmoid": unary("sigmoid", "Sigmoid", NN),
    "nn.sigmoid": unary("sigmoid", "Sigmoid", NN),
    "math.tanh": unary("tanh", "Tanh"),
    "nn.tanh": unary("tanh", "Tanh"),
    "nn.relu": unary("relu", "Relu", NN, "features"),
    "nn.relu6": unary("relu6", "Relu6", NN, "features"),
    "nn.selu": unary("selu", "Selu", NN, "features"),
    "nn.elu": elu(),
    "nn.leaky_relu": leaky_relu(),
    "math.softplus": unary("softplus", "Softplus", NN, "features"),
    "nn.softplus": unary("softplus", "Softplus", NN, "features"),
    "nn.silu": silu(),
    "nn.swish": silu(),
    "nn.gelu": gelu(),
    "nn.softmax": with_axis("softmax", "Softmax", NN, "logits"),
    "math.softmax": with_axis("softmax", "Softmax", NN, "logits"),
    "nn.log_softmax": with_axis("log_softmax", "LogSoftmax", NN, "logits"),
    "math.log_softmax": with_axis("log_softmax", "LogSoftmax", NN, "logits"),
    "math.l2_normalize": l2_normalize(),
    "nn.l2_normalize": l2_normalize(),
    "linalg.l2_normalize": l2_normalize(),
    "math.reduce_mean": reduction("mean", "Mean"),
    "math.reduce_sum": reduction("sum", "Sum"),
    "math.reduce_max": reduction("max", "Max"),
    "math.reduce_min": reduction("min", "Min"),
    "math.reduce_prod": reduction("prod", "Prod"),
    # population statistics (ddof 0), as numpy's std and var
    "math.reduce_std": reduction("std", "Std"),
    "math.reduce_variance": reduction("var", "Var"),
    "math.reduce_logsumexp": reduction("logsumexp", "Logsumexp", MATH),
    "math.reduce_any": reduction("any", "Any"),
    "math.reduce_all": reduction("all", "All"),
    "reshape": reshape(),
    "concat": joining("concatenate", "Concatenate", None),
    "stack": joining("stack", "Stack", 0),
    "expand_dims": expand_dims(),
    "squeeze": squeeze(("input", "axis")),
    "compat.v1.squeeze": squeeze(("input", "axis", "squeeze_dims")),
    "transpose": transpose(("a", "perm", "conjugate")),
    "compat.v1.transpose": transpose(("a", "perm", "conjugate")),
    "linalg.matrix_transpose": matrix_transpose(),
    "linalg.matmul": matmul(),
    "matmul": matmul(),
    "cast": cast(),
    "clip_by_value": clip_by_value(),
    "split": split(),
    "tile": tile(),
    "__operators__.getitem": getitem(),
}


# ------------------------------------------------------------------------------- rule


def tf_op_layer(site: Site, context: Context) -> None:
    """A TFOpLambda or SlicingOpLambda entry replaced, in place, by the Keras 3 operation
    entry of the same call, under the same name."""
    class_name, function = site.class_name, site.config.get("function")
    if class_name not in OP_CLASSES:
        return
    label = f"{class_name} runs tf.{function}"
    mapping = OPS.get(function) if isinstance(function, str) else None
    if mapping is None:
        raise context.refuse(site.path, f"{label}, which has no Keras 3 equivalent normify knows")
    try:
        calls = translated_calls(site, mapping)
    except NotMapped as error:
        raise context.refuse(site.path, f"{label} {error}") from error
    op = calls[0]
    name = str(site.entry.get("name") or site.config.get("name"))
    replace_entry(site.entry, op, name, [{"args": c.args, "kwargs": c.kwargs} for c in calls])
    context.repaired(
        f"tfop-{op.function}", site.path, f"{class_name} tf.{function} -> keras.ops.{op.function}"
    )


def translated_calls(site: Site, mapping: Mapping) -> list[KerasOp]:
    """The Keras 3 operation of each call (node) of an op layer: one operation, so the
    same class and constructor arguments for every call."""
    nodes = site.entry.get("inbound_nodes")
    if not isinstance(nodes, list) or not nodes:
        raise NotMapped("with no recorded call (no inbound nodes)")
    dtype = float_dtype(site.config.get("dtype"))
    calls = [mapping.translate(bind(mapping.parameters, node, dtype)) for node in nodes]
    first = calls[0]
    if any((call.class_name, call.config) != (first.class_name, first.config) for call in calls):
        raise NotMapped("with other constant arguments in each of its calls")
    return calls


def bind(parameters: tuple[str, ...], node: Any, dtype: str = "float32") -> Call:
    """A Keras 3 node's arguments by the TensorFlow function's parameter names (as
    Python binds a call), `name` left out: the op's name is the layer's."""
    if not isinstance(node, dict) or not isinstance(node.get("args"), list):
        raise NotMapped(f"with a malformed call {short(node)}")
    args, kwargs = node["args"], node.get("kwargs") or {}
    if len(args) > len(parameters):
        raise NotMapped(f"with {len(args)} positional arguments")
    call = Call(zip(parameters, args, strict=False))
    call.float_dtype = dtype
    for key, value in kwargs.items():
        if key == "name":
            continue
        if key not in parameters:
            raise NotMapped(f"with argument {key}={short(value)}, which normify does not know")
        if key in call:
            raise NotMapped(f"with argument {key} given twice")
        call[key] = value
    return call


def replace_entry(
    entry: dict[str, Any], op: KerasOp, name: str, nodes: list[dict[str, Any]]
) -> None:
    """Make `entry` the Keras 3 operation entry, with Keras's keys in Keras's order."""
    entry.clear()
    entry.update(
        {
            "module": op.module,
            "class_name": op.class_name,
            "config": {"name": name, **op.config},
            "registered_name": op.class_name,
            "name": name,
            "inbound_nodes": nodes,
        }
    )


STAGE = Stage("TFOpLambda", layer_rules=(tf_op_layer,))
