"""Lambda layers whose code an older Python compiled (normify.formats.bytecode).

The code objects are written here byte by byte in the marshal layouts of Python 3.4 to
3.7 and 3.8 to 3.10, with the instruction encodings of Python 3.5 (one byte, two more for
an argument) and 3.6 on (two bytes), as the Keras 1 and 2 files of self-driving-car
course models hold them (`lambda x: x / 255.0 - 0.5`, compiled by Python 3.5).
"""

from __future__ import annotations

import base64
import marshal
import struct

import numpy as np
import pytest
from helpers import as_numpy, keras2_file_with_lambda

from normify.errors import ModelLoadError
from normify.formats import bytecode
from normify.loading import load_model

LOAD_FAST, STORE_FAST, LOAD_CONST, LOAD_GLOBAL, CALL_FUNCTION = 124, 125, 100, 116, 131
TRUE_DIVIDE, SUBTRACT, ADD, MULTIPLY, POWER, SUBSCR, NEGATIVE = 27, 24, 23, 20, 19, 25, 11
BUILD_SLICE, BUILD_TUPLE, RETURN = 133, 102, 83


def python35(*instructions: tuple[int, ...]) -> bytes:
    """Python 3.5's encoding: an opcode byte, and two argument bytes from opcode 90 on."""
    out = b""
    for op, *argument in instructions:
        out += bytes([op]) + (struct.pack("<H", argument[0]) if op >= 90 else b"")
    return out


def wordcode(*instructions: tuple[int, ...]) -> bytes:
    return b"".join(bytes([op, (argument or [0])[0]]) for op, *argument in instructions)


def marshalled(value: object) -> bytes:
    """Version-independent marshal values: None, floats, ints, short strings, tuples."""
    if value is None:
        return b"N"
    if isinstance(value, float):
        return b"g" + struct.pack("<d", value)
    if isinstance(value, int):
        return b"i" + struct.pack("<i", value)
    if isinstance(value, str):
        return b"z" + bytes([len(value)]) + value.encode()
    assert isinstance(value, tuple)
    return b")" + bytes([len(value)]) + b"".join(marshalled(item) for item in value)


def old_code(code: bytes, consts: tuple, names: tuple = (), posonly: bool = False) -> bytes:
    """A code object of `lambda x: ...` as Python 3.4-3.7 (or, `posonly`, 3.8-3.10)
    marshals it."""
    counts = (1, 0, 0, 1, 2, 0x43) if posonly else (1, 0, 1, 2, 0x43)
    return (
        b"\xe3"  # code, with marshal's reference flag as Python sets it
        + b"".join(struct.pack("<i", count) for count in counts)
        + b"s" + struct.pack("<i", len(code)) + code
        + marshalled(consts) + marshalled(names) + marshalled(("x",))
        + marshalled(()) + marshalled(())
        + marshalled("model.py") + marshalled("<lambda>")
        + struct.pack("<i", 1) + b"s" + struct.pack("<i", 0)
    )  # fmt: skip


NORMALIZE_35 = old_code(
    python35(
        (LOAD_FAST, 0), (LOAD_CONST, 1), (TRUE_DIVIDE,), (LOAD_CONST, 2), (SUBTRACT,), (RETURN,)
    ),
    (None, 255.0, 0.5),
)  # fmt: skip


def encoded(raw: bytes) -> str:
    return base64.b64encode(raw).decode("ascii")


def run(code: str, x: np.ndarray) -> np.ndarray:
    function = type(run)(marshal.loads(bytecode.function_bytes(code)), {})
    return function(x)


def test_python35_arithmetic_is_recompiled_to_the_same_function() -> None:
    assert not bytecode.readable_here(NORMALIZE_35)  # what Keras itself runs into
    translated = bytecode.translate_lambda(encoded(NORMALIZE_35))
    assert translated is not None
    code, expression, pythons = translated
    assert expression == "((x / 255.0) - 0.5)" and pythons == "3.4 to 3.7"
    x = np.random.default_rng(0).uniform(0, 255, (4, 3)).astype("float32")
    np.testing.assert_array_equal(run(code, x), x / 255.0 - 0.5)


def test_keras1_raw_text_code_is_read_too() -> None:
    """Keras 1 and 2.0 kept the bytes as `raw_unicode_escape` text, not base64."""
    translated = bytecode.translate_lambda(NORMALIZE_35.decode("raw_unicode_escape"))
    assert translated is not None and translated[1] == "((x / 255.0) - 0.5)"


def test_python36_wordcode_with_a_cropping_subscript() -> None:
    # x[:, 2:-1] * 2.0
    code = wordcode(
        (LOAD_FAST, 0), (LOAD_CONST, 0), (LOAD_CONST, 0), (BUILD_SLICE, 2),
        (LOAD_CONST, 1), (LOAD_CONST, 2), (BUILD_SLICE, 2), (BUILD_TUPLE, 2), (SUBSCR, 0),
        (LOAD_CONST, 3), (MULTIPLY, 0), (RETURN, 0),
    )  # fmt: skip
    translated = bytecode.translate_lambda(encoded(old_code(code, (None, 2, -1, 2.0))))
    assert translated is not None
    assert translated[1] == "(x[:, 2:-1] * 2.0)"
    x = np.arange(12.0).reshape(2, 6)
    np.testing.assert_array_equal(run(translated[0], x), x[:, 2:-1] * 2.0)


def test_python38_layout_with_unary_and_power() -> None:
    code = wordcode((LOAD_FAST, 0), (LOAD_CONST, 1), (POWER, 0), (NEGATIVE, 0), (RETURN, 0))
    translated = bytecode.translate_lambda(encoded(old_code(code, (None, 2), posonly=True)))
    assert translated is not None and translated[1:] == ("(-(x ** 2))", "3.8 to 3.10")


def test_local_variables_set_from_constants_are_inlined() -> None:
    """`def normalize(x): lo = -0.1; hi = 0.1; return lo + x * (hi - lo) / 255` (Python
    3.5), as one real Keras 1 file has it."""
    code = python35(
        (LOAD_CONST, 1), (STORE_FAST, 1), (LOAD_CONST, 2), (STORE_FAST, 2),
        (LOAD_FAST, 1), (LOAD_FAST, 0), (LOAD_FAST, 2), (LOAD_FAST, 1), (SUBTRACT,),
        (MULTIPLY,), (LOAD_CONST, 3), (TRUE_DIVIDE,), (ADD,), (RETURN,),
    )  # fmt: skip
    translated = bytecode.translate_lambda(encoded(old_code(code, (None, -0.1, 0.1, 255))))
    assert translated is not None
    x = np.linspace(0, 255, 7)
    np.testing.assert_array_equal(run(translated[0], x), -0.1 + x * (0.1 - -0.1) / 255)


@pytest.mark.parametrize(
    "code",
    [
        # K.mean(x): a global and a call, which this module never translates
        python35((LOAD_GLOBAL, 0), (LOAD_FAST, 0), (CALL_FUNCTION, 1), (RETURN,)),
        python35((LOAD_FAST, 0), (LOAD_CONST, 1), (TRUE_DIVIDE,)),  # no return
        python35((LOAD_FAST, 0), (LOAD_CONST, 9), (TRUE_DIVIDE,), (RETURN,)),  # no const 9
        python35((LOAD_FAST, 3), (RETURN,)),  # a local never set
    ],
    ids=["call", "no-return", "bad-constant", "unset-local"],
)
def test_anything_but_arithmetic_is_left_alone(code: bytes) -> None:
    with pytest.raises(bytecode.Unreadable):
        bytecode.translate_lambda(encoded(old_code(code, (None, 255.0), names=("K",))))


def test_code_this_python_reads_is_left_as_it_is() -> None:
    assert bytecode.translate_lambda(encoded(marshal.dumps((lambda x: x + 1).__code__))) is None


def test_a_keras2_file_with_a_python35_lambda_loads_as_with_the_function_itself(tmp_path):
    old = load_model(keras2_file_with_lambda(tmp_path / "old.h5", NORMALIZE_35), safe_mode=False)
    here = marshal.dumps((lambda x: x / 255.0 - 0.5).__code__)
    native = load_model(keras2_file_with_lambda(tmp_path / "native.h5", here), safe_mode=False)
    assert (
        "repaired: dropout: Python 3.4 to 3.7 bytecode of `lambda x: ((x / 255.0) - 0.5)` "
        "recompiled for this Python [keras2-lambda-bytecode]"
    ) in old.notices
    x = np.random.default_rng(1).normal(size=(5, 16)).astype("float32")
    got, want = as_numpy(old.model(x)), as_numpy(native.model(x))
    np.testing.assert_array_equal(got, want)
    # still Python code in the model: safe mode refuses it as any Lambda
    with pytest.raises(ModelLoadError, match="Lambda layer with Python code.*--unsafe"):
        load_model(keras2_file_with_lambda(tmp_path / "safe.h5", NORMALIZE_35))
