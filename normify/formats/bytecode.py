"""Lambda layers whose Python code an older Python compiled, recompiled for this one.

Keras 1 and 2 saved a Lambda's function as its marshalled code object, which only the
Python version that wrote it can read (Python 3.11 cannot read a Python 3.5 code object,
the version of most Keras 1 and 2 files). The commonest such Lambda is plain arithmetic
on its input, `lambda x: x / 255.0 - 0.5` in every self-driving-car course model. Such a
function is read here without running it: the marshal format is parsed by this module,
the bytecode is decoded for a small set of instructions (the input, constants, unary and
binary arithmetic, subscripts with slices, local variables set from these), and the
expression it computes is compiled again by this Python. Anything else (a call, a global
such as `K` or `tf`, a closure) is left as it was, and loading names the layer and the
Python version.

Needs neither Keras nor NumPy: it runs within the config translation, which audit uses.
"""

from __future__ import annotations

import base64
import binascii
import marshal
import math
import struct
from dataclasses import dataclass
from typing import Any


class Unreadable(Exception):
    """Code this module does not read: another layout, or instructions outside its set."""


@dataclass(frozen=True)
class OldCode:
    """What a code object of Python 3.4 to 3.10 holds that the translation needs."""

    pythons: str
    argcount: int
    code: bytes
    consts: tuple[Any, ...]
    freevars: tuple[Any, ...]


def function_bytes(code: str) -> bytes:
    """A Lambda config's `code` string as Keras encoded it: base64 (Keras 2.1+) or the
    raw bytes as `raw_unicode_escape` text (Keras 1 and 2.0)."""
    try:
        return base64.b64decode(code.encode("ascii"), validate=False)
    except (UnicodeEncodeError, binascii.Error):
        return code.encode("raw_unicode_escape")


def readable_here(raw: bytes) -> bool:
    try:
        marshal.loads(raw)
    except (ValueError, EOFError, TypeError):
        return False
    return True


def translate_lambda(code: str) -> tuple[str, str, str] | None:
    """For a Lambda's `code` string this Python cannot read and that computes plain
    arithmetic: (the code string for this Python, the expression, which Pythons wrote it).
    None when this Python reads it as it is."""
    raw = function_bytes(code)
    if readable_here(raw):
        return None
    old = read_code(raw)
    if old.argcount != 1 or old.freevars:
        raise Unreadable("it takes more than its input")
    expression = _expression(old)
    source = f"lambda x: {expression}"
    module = compile(source, "<normify: recompiled Lambda>", "eval")
    function = next(c for c in module.co_consts if hasattr(c, "co_code"))
    encoded = base64.b64encode(marshal.dumps(function)).decode("ascii")
    return encoded, expression, old.pythons


# ------------------------------------------------------------------- the marshal format

_FLAG_REF = 0x80


class _Reader:
    """Python's marshal format (version 4, Python 3.4 and later) for the values a
    function's code object holds."""

    def __init__(self, data: bytes) -> None:
        self.data, self.at = data, 0
        self.refs: list[Any] = []

    def take(self, count: int) -> bytes:
        if self.at + count > len(self.data):
            raise Unreadable("its code ends early")
        chunk = self.data[self.at : self.at + count]
        self.at += count
        return chunk

    def int32(self) -> int:
        return int(struct.unpack("<i", self.take(4))[0])

    def peek_type(self) -> int:
        if self.at >= len(self.data):
            raise Unreadable("its code ends early")
        return self.data[self.at] & ~_FLAG_REF

    def value(self) -> Any:
        head = self.take(1)[0]
        kind, keep = chr(head & ~_FLAG_REF), bool(head & _FLAG_REF)
        slot = len(self.refs)
        if keep:
            self.refs.append(None)
        value = self._value(kind)
        if keep:
            self.refs[slot] = value
        return value

    def _value(self, kind: str) -> Any:
        simple = {"N": None, "F": False, "T": True, ".": Ellipsis}
        if kind in simple:
            return simple[kind]
        if kind == "i":
            return self.int32()
        if kind == "g":
            return float(struct.unpack("<d", self.take(8))[0])
        if kind == "l":
            count = self.int32()
            digits = [struct.unpack("<H", self.take(2))[0] for _ in range(abs(count))]
            number = sum(digit << (15 * place) for place, digit in enumerate(digits))
            return -number if count < 0 else number
        if kind == "s":
            return self.take(self.int32())
        if kind in "tuaA":
            return self.take(self.int32()).decode("utf-8", "surrogatepass")
        if kind in "zZ":
            return self.take(self.take(1)[0]).decode("ascii")
        if kind == ")":
            return tuple(self.value() for _ in range(self.take(1)[0]))
        if kind == "(":
            return tuple(self.value() for _ in range(self.int32()))
        if kind == "r":
            index = self.int32()
            if not 0 <= index < len(self.refs):
                raise Unreadable("its code is corrupt")
            return self.refs[index]
        if kind == "c":
            return self._code()
        raise Unreadable(f"its code holds a value of marshal type {kind!r}")

    def _code(self) -> OldCode:
        argcount = self.int32()
        for _ in range(4):
            self.int32()
        # Python 3.8 to 3.10 put posonlyargcount second: then a sixth count comes where
        # Python 3.4 to 3.7 have the bytecode (marshal type 's').
        if self.peek_type() == ord("s"):
            pythons = "3.4 to 3.7"
        else:
            pythons = "3.8 to 3.10"
            self.int32()
        code = self.value()
        consts, _names, _varnames, freevars, _cellvars = (self.value() for _ in range(5))
        self.value(), self.value()  # file name, function name
        self.int32()  # first line number
        self.value()  # line number table
        if not isinstance(code, bytes) or not isinstance(consts, tuple):
            raise Unreadable("its code is corrupt")
        return OldCode(pythons, argcount, code, consts, tuple(freevars or ()))


def read_code(raw: bytes) -> OldCode:
    try:
        value = _Reader(raw).value()
    except (struct.error, UnicodeDecodeError, RecursionError) as error:
        raise Unreadable("its code is corrupt") from error
    if not isinstance(value, OldCode):
        raise Unreadable("it is not a code object")
    return value


# ---------------------------------------------------------------------- the bytecode

# Opcodes of Python 3.4 to 3.10, which kept these numbers.
_UNARY = {10: "+", 11: "-"}
_BINARY = {19: "**", 20: "*", 22: "%", 23: "+", 24: "-", 26: "//", 27: "/"}
_SUBSCRIPT, _RETURN, _NOP = 25, 83, 9
_LOAD_CONST, _BUILD_TUPLE, _LOAD_FAST, _STORE_FAST = 100, 102, 124, 125
_BUILD_SLICE, _EXTENDED_ARG = 133, 144
_HAVE_ARGUMENT = 90


def _instructions(code: bytes, wordcode: bool) -> list[tuple[int, int]]:
    """(opcode, argument) pairs: two bytes each from Python 3.6 on, else one byte, and
    two more for an argument (Python 3.4 and 3.5)."""
    found, at, extended = [], 0, 0
    while at < len(code):
        op = code[at]
        if wordcode:
            if at + 1 >= len(code):
                raise Unreadable("its bytecode ends early")
            argument, at = code[at + 1], at + 2
        elif op >= _HAVE_ARGUMENT:
            if at + 2 >= len(code):
                raise Unreadable("its bytecode ends early")
            argument, at = code[at + 1] | code[at + 2] << 8, at + 3
        else:
            argument, at = 0, at + 1
        argument |= extended
        if op == _EXTENDED_ARG:
            extended = argument << (8 if wordcode else 16)
            continue
        extended = 0
        found.append((op, argument))
    return found


def _expression(old: OldCode) -> str:
    """The Python expression (in `x`) that the function returns. Python 3.4 and 3.5
    bytecode and 3.6 and 3.7 wordcode share a layout: the decoding that reads the whole
    function as one returned expression is the one."""
    layouts = (True,) if old.pythons == "3.8 to 3.10" else (False, True)
    results = set()
    for wordcode in layouts:
        try:
            results.add(_evaluate(_instructions(old.code, wordcode), old.consts))
        except Unreadable:
            continue
    if len(results) != 1:
        raise Unreadable("it does more than arithmetic on its input")
    return results.pop()


def _constant(value: Any) -> str:
    if isinstance(value, float) and not math.isfinite(value):
        raise Unreadable("it uses a constant that is not a finite number")
    if value is None or isinstance(value, (bool, int, float)):
        return repr(value)
    if isinstance(value, tuple):
        return "(" + "".join(_constant(item) + ", " for item in value) + ")"
    raise Unreadable("it uses a constant other than a number")


def _evaluate(instructions: list[tuple[int, int]], consts: tuple[Any, ...]) -> str:
    # The stack holds expressions as source text; ("slice", text) marks a slice, which is
    # only valid as (part of) a subscript.
    stack: list[tuple[str, str]] = []

    def pop() -> tuple[str, str]:
        if not stack:
            raise Unreadable("its bytecode is corrupt")
        return stack.pop()

    def plain(item: tuple[str, str]) -> str:
        if item[0] != "value":
            raise Unreadable("its bytecode is corrupt")
        return item[1]

    # Local variables other than the input (`lo = -0.1; return lo + x * ...`) hold the
    # expressions stored in them.
    local_values: dict[int, str] = {0: "x"}
    for position, (op, argument) in enumerate(instructions):
        if op == _NOP:
            continue
        if op == _LOAD_FAST:
            if argument not in local_values:
                raise Unreadable("it reads a local variable before setting it")
            stack.append(("value", local_values[argument]))
        elif op == _STORE_FAST:
            if argument == 0:
                raise Unreadable("it assigns to its input")
            local_values[argument] = plain(pop())
        elif op == _LOAD_CONST:
            if argument >= len(consts):
                raise Unreadable("its bytecode is corrupt")
            stack.append(("value", _constant(consts[argument])))
        elif op in _UNARY:
            stack.append(("value", f"({_UNARY[op]}{plain(pop())})"))
        elif op in _BINARY:
            right, left = plain(pop()), plain(pop())
            stack.append(("value", f"({left} {_BINARY[op]} {right})"))
        elif op == _BUILD_SLICE and argument in (2, 3):
            parts = [pop() for _ in range(argument)][::-1]
            texts = ["" if plain(part) == "None" else plain(part) for part in parts]
            stack.append(("slice", ":".join(texts)))
        elif op == _BUILD_TUPLE:
            items = [pop() for _ in range(argument)][::-1]
            stack.append(("index", ", ".join(text for _, text in items) + ("," * (argument == 1))))
        elif op == _SUBSCRIPT:
            index, target = pop(), plain(pop())
            stack.append(("value", f"{target}[{index[1]}]"))
        elif op == _RETURN:
            if position != len(instructions) - 1 or len(stack) != 1:
                raise Unreadable("it does more than return one expression")
            return plain(stack[0])
        else:
            raise Unreadable(f"it uses instruction {op}")
    raise Unreadable("its bytecode does not return")
