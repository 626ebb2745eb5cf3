"""Hostile model files for normify: a seeded mutation generator and a driver that runs
many cases in one Python process.

The generator (`mutations`, `mutation`) turns the bytes of a fixture into broken variants:
truncations, byte flips, zip members removed, replaced or declaring sizes they do not
hold, and `config.json` (or an `.h5` file's `model_config`) with wrong types, missing
keys, huge numbers, deep nesting, unknown classes and rewired graphs (cycles, dangling
references). Case `index` of seed `seed` depends on nothing else, so any case can be
rebuilt alone from its (seed, index).

The driver runs the command line in-process, one subprocess for a whole batch, because a
process that imports TensorFlow costs seconds. Each case runs exactly as
`python -m normify ...` would (click's standalone mode, stdout and stderr captured at the
file descriptor), in its own folder, under a per-case time limit (an interval timer in
the child; a watchdog in the parent kills a child stuck in C code). The child also runs
under an address-space limit, so a case that makes Keras allocate a huge tensor fails
with an error instead of exhausting the machine, and such errors count as problems.

The contract every case is held to (`judge`):
- the exit code is 0 or 2: never 1, never a traceback, a signal or a timeout;
- on exit 2, stderr is exactly one line `normify: error: ...` naming the input file, and
  the folder holds nothing but the input (no output, no temporary file);
- on exit 0, stderr is empty and the folder holds the input and, for `add`, the output;
  an `audit` of a file whose config survived the mutation equals the fixture's audit;
  an `add` output loads with Keras, keeps the input and output names of the (mutated)
  input as Keras loads it, and, since every insertion is an exact identity
  (`--rnn batchnorm`), predicts what that input predicts;
- the input file is never modified (bytes and mtime).
"""

from __future__ import annotations

import argparse
import contextlib
import io
import json
import os
import random
import resource
import shutil
import signal
import struct
import subprocess
import sys
import tempfile
import time
import traceback
import warnings
import zipfile
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from helpers import as_numpy

ROOT = Path(__file__).resolve().parent.parent
FIXTURES = ROOT / "fixtures"
ERROR_PREFIX = "normify: error: "
TOLERANCE = 1e-5  # max abs prediction difference relative to the output scale

# ------------------------------------------------------------------------ the generator

KINDS = (
    "truncate",
    "flip",
    "drop_member",
    "replace_member",
    "declared_size",
    "wrong_type",
    "missing_key",
    "huge_number",
    "deep_nesting",
    "unknown_class",
    "graph_cycle",
)

Mutator = Callable[[bytes, random.Random], tuple[str, bytes]]


def mutations(fixture_bytes: bytes, seed: int, count: int) -> Iterator[tuple[str, bytes]]:
    """`count` mutated copies of a `.keras` or `.h5` file: (label, bytes), every kind in
    turn (case `i` is of kind `KINDS[i % len(KINDS)]`)."""
    for index in range(count):
        yield mutation(fixture_bytes, seed, index)


def mutation(fixture_bytes: bytes, seed: int, index: int) -> tuple[str, bytes]:
    """Case `index` of `seed`, independent of every other case."""
    rng = random.Random(f"{seed}/{index}")
    kind = KINDS[index % len(KINDS)]
    is_zip = fixture_bytes.startswith(b"PK")
    label, data = _MUTATORS[kind][0 if is_zip else 1](fixture_bytes, rng)
    return f"{kind}:{label}", data


# ---------------------------------------------------------------------------- raw bytes


def _truncate(data: bytes, rng: random.Random) -> tuple[str, bytes]:
    regions = _regions(data)
    name = rng.choice(sorted(regions))
    start, end = regions[name]
    offset = rng.randrange(start, max(end, start + 1))
    return f"{name}@{offset}", data[:offset]


def _flip(data: bytes, rng: random.Random) -> tuple[str, bytes]:
    regions = _regions(data)
    name = rng.choice(sorted(regions))
    start, end = regions[name]
    mutated = bytearray(data)
    offsets = sorted({rng.randrange(start, max(end, start + 1)) for _ in range(_flip_count(rng))})
    for offset in offsets:
        mutated[offset] ^= rng.randrange(1, 256)  # never 0: the byte really changes
    return f"{name}@{','.join(map(str, offsets))}", bytes(mutated)


def _flip_count(rng: random.Random) -> int:
    return rng.choice((1, 1, 1, 2, 3, 8, 32))


def _regions(data: bytes) -> dict[str, tuple[int, int]]:
    """Named byte ranges worth aiming at: the whole file, and for a zip its headers,
    directory and member data; for HDF5 the superblock."""
    regions = {"anywhere": (0, len(data)), "head": (0, min(len(data), 64))}
    if data.startswith(b"PK"):
        with contextlib.suppress(Exception):
            regions.update(_zip_regions(data))
    else:
        regions["superblock"] = (0, min(len(data), 96))
    return regions


def _zip_regions(data: bytes) -> dict[str, tuple[int, int]]:
    archive = zipfile.ZipFile(io.BytesIO(data))
    directory = _central_directory_offset(data)
    regions = {
        "central_directory": (directory, len(data)),
        "end_record": (len(data) - 22, len(data)),
    }
    for info in archive.infolist():
        start = info.header_offset + 30 + len(info.filename.encode()) + len(info.extra)
        regions[f"local_header:{info.filename}"] = (info.header_offset, start)
        regions[f"data:{info.filename}"] = (start, start + info.compress_size)
    return regions


def _central_directory_offset(data: bytes) -> int:
    end = data.rfind(b"PK\x05\x06")
    return struct.unpack_from("<I", data, end + 16)[0]


# ------------------------------------------------------------------------- zip members


def _members(data: bytes) -> list[tuple[zipfile.ZipInfo, bytes]]:
    with zipfile.ZipFile(io.BytesIO(data)) as archive:
        return [(info, archive.read(info)) for info in archive.infolist()]


def _build_zip(members: list[tuple[zipfile.ZipInfo, bytes]]) -> bytes:
    """A zip with these members, each with its original name, date and compression."""
    buffer = io.BytesIO()
    with warnings.catch_warnings(), zipfile.ZipFile(buffer, "w") as archive:
        warnings.simplefilter("ignore")  # "Duplicate name": wanted, for one mutation
        for info, content in members:
            copy = zipfile.ZipInfo(info.filename, info.date_time)
            copy.compress_type = info.compress_type
            copy.external_attr = info.external_attr
            archive.writestr(copy, content)
    return buffer.getvalue()


def replace_members(data: bytes, replace: dict[str, bytes | None]) -> bytes:
    """The zip `data` with members replaced (or dropped, for None); others kept as they are."""
    members = [(info, replace.get(info.filename, content)) for info, content in _members(data)]
    return _build_zip([(info, content) for info, content in members if content is not None])


def _drop_member(data: bytes, rng: random.Random) -> tuple[str, bytes]:
    members = _members(data)
    info, _ = rng.choice(members)
    return info.filename, _build_zip([m for m in members if m[0] is not info])


def _replace_member(data: bytes, rng: random.Random) -> tuple[str, bytes]:
    members = _members(data)
    index = rng.randrange(len(members))
    info, content = members[index]
    how, new = _replacement(content, members, rng)
    members[index] = (info, new)
    if how == "duplicate":  # a second member of the same name after the first
        members.insert(index + 1, (info, content[: len(content) // 2]))
        members[index] = (info, content)
    return f"{info.filename}={how}", _build_zip(members)


def _replacement(
    content: bytes, members: list[tuple[zipfile.ZipInfo, bytes]], rng: random.Random
) -> tuple[str, bytes]:
    kinds = ("empty", "garbage", "half", "other_member", "json", "duplicate", "fixture", "flipped")
    how = rng.choice(kinds)
    if how == "empty":
        return how, b""
    if how == "flipped":  # corrupt bytes under a correct CRC: the member's parser must cope
        label, flipped = _flip(content, rng)
        return f"flipped:{label.split('@')[1]}", flipped
    if how == "garbage":
        return how, rng.randbytes(rng.choice((1, 7, 100, len(content))))
    if how == "half":
        return how, content[: len(content) // 2]
    if how == "other_member":
        return how, rng.choice(members)[1]
    if how == "json":
        return how, rng.choice((b"[]", b"null", b'"model"', b'{"class_name": 5}', b"{}"))
    if how == "fixture":  # the same member of another model: a mismatch, not garbage
        other = rng.choice(sorted(FIXTURES.glob("*.keras")))
        name = rng.choice(members)[0].filename
        with zipfile.ZipFile(other) as archive, contextlib.suppress(KeyError):
            return f"{other.name}:{name}", archive.read(name)
    return how, content


def _declared_size(data: bytes, rng: random.Random) -> tuple[str, bytes]:
    """Patch a member's sizes in its local header and the central directory: a stored
    member declaring more than it holds, or one extending past the end of the file."""
    members = _members(data)
    info = rng.choice(members)[0]
    huge = rng.choice((2**31, 2**32 - 2, len(data) * 1000, 2**26 + 1))
    fields = rng.choice((("file_size",), ("compress_size",), ("file_size", "compress_size")))
    mutated = bytearray(data)
    directory = _central_directory_offset(data)
    for entry in _directory_entries(data, directory):
        if entry[1] == info.filename:
            _patch_sizes(mutated, entry[0], info.header_offset, fields, huge)
    return f"{info.filename}:{'+'.join(fields)}={huge}", bytes(mutated)


def _directory_entries(data: bytes, offset: int) -> Iterator[tuple[int, str]]:
    while data[offset : offset + 4] == b"PK\x01\x02":
        name_length, extra_length, comment_length = struct.unpack_from("<HHH", data, offset + 28)
        yield offset, data[offset + 46 : offset + 46 + name_length].decode("utf-8", "replace")
        offset += 46 + name_length + extra_length + comment_length


def _patch_sizes(
    data: bytearray, entry: int, local: int, fields: tuple[str, ...], value: int
) -> None:
    # central directory: compressed size at +20, uncompressed at +24; local header: +18, +22
    where = {"compress_size": (entry + 20, local + 18), "file_size": (entry + 24, local + 22)}
    for name in fields:
        for offset in where[name]:
            struct.pack_into("<I", data, offset, value)


# ------------------------------------------------------------------------ HDF5 structure


def _with_h5(data: bytes, edit: Callable[[Any], str]) -> tuple[str, bytes]:
    """Apply `edit` to an HDF5 file (open for writing) and return its label and bytes."""
    import h5py

    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / "model.h5"
        path.write_bytes(data)
        with h5py.File(path, "r+") as handle:
            label = edit(handle)
        return label, path.read_bytes()


def _h5_datasets(handle: Any) -> list[str]:
    names: list[str] = []
    handle.visititems(lambda name, obj: names.append(name) if hasattr(obj, "shape") else None)
    return names


def _h5_drop(data: bytes, rng: random.Random) -> tuple[str, bytes]:
    def edit(handle: Any) -> str:
        candidates = _h5_datasets(handle) + [f"attr:{key}" for key in handle.attrs]
        choice = rng.choice(candidates)
        if choice.startswith("attr:"):
            del handle.attrs[choice[5:]]
        else:
            del handle[choice]
        return choice

    return _with_h5(data, edit)


def _h5_replace(data: bytes, rng: random.Random) -> tuple[str, bytes]:
    import numpy as np

    def edit(handle: Any) -> str:
        name = rng.choice(_h5_datasets(handle))
        shape = handle[name].shape
        del handle[name]
        how = rng.choice(("scalar", "wrong_shape", "strings", "float64"))
        values = {
            "scalar": np.float32(1.0),
            "wrong_shape": np.ones(tuple(d + 1 for d in shape) or (2,), "float32"),
            "strings": np.array([b"x"] * 3),
            "float64": np.ones(shape, "float64"),
        }[how]
        handle.create_dataset(name, data=values)
        return f"{name}={how}"

    return _with_h5(data, edit)


def _h5_declared_size(data: bytes, rng: random.Random) -> tuple[str, bytes]:
    """A version-0 superblock's end-of-file address (offset 40) far past the real end."""
    huge = rng.choice((len(data) * 1000, 2**40, 2**63 - 1))
    mutated = bytearray(data)
    if data[8] == 0 and data[13] == 8:  # superblock v0 with 8-byte addresses
        struct.pack_into("<Q", mutated, 40, huge)
    return f"eof_address={huge}", bytes(mutated)


# ------------------------------------------------------------------------- config JSON


def _config_of(data: bytes) -> Any:
    if data.startswith(b"PK"):
        with zipfile.ZipFile(io.BytesIO(data)) as archive:
            return json.loads(archive.read("config.json"))
    import h5py

    with h5py.File(io.BytesIO(data), "r") as handle:
        raw = handle.attrs["model_config"]
    return json.loads(raw.decode() if isinstance(raw, bytes) else raw)


def _with_config(data: bytes, text: str) -> bytes:
    if data.startswith(b"PK"):
        return replace_members(data, {"config.json": text.encode()})

    def edit(handle: Any) -> str:
        handle.attrs["model_config"] = text.encode()
        return ""

    return _with_h5(data, edit)[1]


RAW = "\x00raw\x00"  # a marker replaced by raw JSON text (tokens json.dumps cannot write)


def _json_mutator(
    mutate: Callable[[dict[str, Any], random.Random], tuple[str, str | None]],
) -> Mutator:
    """A mutator that edits the parsed config, held as `holder["root"]` so it can be
    replaced whole; `mutate` returns its label and, when it placed the RAW marker, the raw
    text that stands there (tokens and depths that json.dumps cannot write)."""

    def apply(data: bytes, rng: random.Random) -> tuple[str, bytes]:
        holder = {"root": _config_of(data)}
        label, raw = mutate(holder, rng)
        text = json.dumps(holder["root"])
        if raw is not None:
            text = text.replace(json.dumps(RAW), raw, 1)
        return label, _with_config(data, text)

    return apply


IMPORTANT_KEYS = {
    "class_name", "config", "name", "layers", "inbound_nodes", "input_layers",
    "output_layers", "args", "kwargs", "keras_history", "units", "filters", "batch_shape",
    "batch_input_shape", "module", "registered_name", "build_config", "shape", "dtype",
    "activation", "kernel_size", "data_format", "axis", "layer", "node_index",
}  # fmt: skip
SIZE_KEYS = {"units", "filters", "kernel_size", "input_dim", "output_dim", "batch_shape"}


def _slots(root: Any) -> list[tuple[Any, Any]]:
    """Every (container, key) of a JSON tree, iteratively (configs can be deep)."""
    found: list[tuple[Any, Any]] = []
    stack = [root]
    while stack:
        node = stack.pop()
        items = node.items() if isinstance(node, dict) else enumerate(node)
        for key, value in items:
            found.append((node, key))
            if isinstance(value, (dict, list)):
                stack.append(value)
    return found


def _pick(slots: list[tuple[Any, Any]], rng: random.Random, keys: set[str]) -> tuple[Any, Any]:
    preferred = [(c, k) for c, k in slots if isinstance(c, dict) and k in keys]
    return rng.choice(preferred if preferred and rng.random() < 0.6 else slots)


def _wrong_type(holder: dict[str, Any], rng: random.Random) -> tuple[str, None]:
    container, key = _pick(_slots(holder), rng, IMPORTANT_KEYS)
    old = container[key]
    pool = [None, True, 0, -1, 2.5, "", "relu", [], [None], {}, {"a": 1}, [[0, 0, 0]]]
    new = rng.choice([value for value in pool if type(value) is not type(old)])
    container[key] = new
    return f"{key}={json.dumps(new)}", None


def _missing_key(holder: dict[str, Any], rng: random.Random) -> tuple[str, None]:
    slots = [(c, k) for c, k in _slots(holder["root"]) if isinstance(c, dict)]
    container, key = _pick(slots, rng, IMPORTANT_KEYS)
    del container[key]
    return str(key), None


HUGE_TOKENS = (
    "1e999", "-1e999", "NaN", "Infinity", "2147483648", "4294967296", "9223372036854775808",
    "-9223372036854775809", "18446744073709551617", "1" + "0" * 30, "9" * 5000, "1e-400",
    "1e308", "-1", "0", "100000000", "1000000", "65536",
)  # fmt: skip


def _huge_number(holder: dict[str, Any], rng: random.Random) -> tuple[str, str]:
    slots = _slots(holder)
    numbers = [(c, k) for c, k in slots if _is_number(c[k])]
    sized = [(c, k) for c, k in numbers if isinstance(c, list) or k in SIZE_KEYS]
    pool = sized if sized and rng.random() < 0.5 else numbers or slots
    container, key = rng.choice(pool)
    token = rng.choice(HUGE_TOKENS)
    container[key] = RAW
    return f"{key}={token[:24]}", token


def _is_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def _deep_nesting(holder: dict[str, Any], rng: random.Random) -> tuple[str, str | None]:
    if rng.random() < 0.35:
        return _nested_models(holder, rng)
    container, key = rng.choice(_slots(holder))
    depth = rng.choice((20, 200, 900, 5000, 100_000))
    if rng.random() < 0.5:
        raw = "[" * depth + "]" * depth
    else:
        raw = '{"a": ' * depth + "1" + "}" * depth
    container[key] = RAW
    return f"{key}:depth={depth}", raw


def _nested_models(holder: dict[str, Any], rng: random.Random) -> tuple[str, str]:
    """The model wrapped in `levels` Sequential models, each holding the previous."""
    levels = rng.choice((2, 40, 70, 400))
    prefix = '{"module": "keras", "class_name": "Sequential", "config": {"name": "wrap_%d", '
    text = json.dumps(holder["root"])
    for level in range(levels):
        text = (prefix % level) + '"layers": [' + text + "]}}"
    holder["root"] = RAW
    return f"models:levels={levels}", text


OTHER_CLASSES = (
    "NoSuchLayer", "Conv2D", "LSTM", "Dense", "BatchNormalization", "Functional",
    "Sequential", "Lambda", "InputLayer", "Add", "TimeDistributed", "Bidirectional",
)  # fmt: skip


def _layer_entries(config: Any) -> list[dict[str, Any]]:
    entries = []
    for container, key in _slots(config):
        value = container[key]
        if key == "layers" and isinstance(value, list):
            entries.extend(e for e in value if isinstance(e, dict) and "class_name" in e)
    return entries


def _unknown_class(holder: dict[str, Any], rng: random.Random) -> tuple[str, None]:
    config = holder["root"]
    entries = _layer_entries(config) or [config]
    entry = rng.choice(entries if rng.random() < 0.85 else [config])
    how = rng.choice(("class_name", "class_name", "module", "registered_name"))
    if how == "class_name":
        entry["class_name"] = rng.choice(OTHER_CLASSES)
    elif how == "module":
        entry["module"] = rng.choice(("no.such.module", "os", "keras.src.nothing", ""))
    else:
        entry["registered_name"] = "no_package>NoSuchLayer"
    name = entry.get("name") or (entry.get("config") or {}).get("name")
    return f"{name}.{how}={entry.get(how)}", None


def _graph_cycle(holder: dict[str, Any], rng: random.Random) -> tuple[str, None]:
    graphs = [
        c[k]
        for c, k in _slots(holder)
        if isinstance(c[k], dict) and isinstance(c[k].get("layers"), list)
    ]
    functional = [g for g in graphs if "input_layers" in g and _consumers(g)]
    if not functional:
        return _sequential_rewire(rng.choice(graphs), rng)
    return _functional_rewire(rng.choice(functional), rng)


def _consumers(graph: dict[str, Any]) -> list[tuple[dict[str, Any], list[list[Any]]]]:
    """Layers that consume tensors, with the [name, node, tensor] lists they consume."""
    found = []
    for entry in graph["layers"]:
        if isinstance(entry, dict):
            histories = [h for h in _slots_values(entry.get("inbound_nodes")) if _is_history(h)]
            if histories:
                found.append((entry, histories))
    return found


def _slots_values(structure: Any) -> list[Any]:
    if not isinstance(structure, (dict, list)):
        return []
    return [structure] + [c[k] for c, k in _slots(structure)]


def _is_history(value: Any) -> bool:
    return (
        isinstance(value, list)
        and len(value) in (3, 4)
        and isinstance(value[0], str)
        and all(isinstance(v, int) and not isinstance(v, bool) for v in value[1:3])
    )


def _entry_name(entry: dict[str, Any]) -> str:
    return entry.get("name") or (entry.get("config") or {}).get("name") or "?"


def _functional_rewire(graph: dict[str, Any], rng: random.Random) -> tuple[str, None]:
    consumers = _consumers(graph)
    entry, histories = rng.choice(consumers)
    history = rng.choice(histories)
    name = _entry_name(entry)
    last = _entry_name(graph["layers"][-1])
    how = rng.choice(("self", "from_output", "downstream", "dangling", "node", "tensor", "dup"))
    if how == "self":
        history[0] = name
    elif how == "from_output":  # the output layer usually depends on everything: a cycle
        history[0] = last
    elif how == "downstream":
        later = consumers[[e for e, _ in consumers].index(entry) :]
        history[0] = _entry_name(rng.choice(later)[0])
    elif how == "dangling":
        history[0] = "no_such_layer"
    elif how == "node":
        history[1] = rng.choice((1, 7, -1))
    elif how == "tensor":
        history[2] = rng.choice((1, 99, -1))
    else:
        return _duplicate_name(graph, rng)
    return f"{name}<-{history[:3]}:{how}", None


def _duplicate_name(graph: dict[str, Any], rng: random.Random) -> tuple[str, None]:
    entries = [e for e in graph["layers"] if isinstance(e, dict)]
    first, second = rng.sample(entries, 2) if len(entries) > 1 else (entries[0], entries[0])
    target = _entry_name(first)
    second["name"] = target
    if isinstance(second.get("config"), dict):
        second["config"]["name"] = target
    return f"duplicate_name={target}", None


def _sequential_rewire(graph: dict[str, Any], rng: random.Random) -> tuple[str, None]:
    layers = graph["layers"]
    if len(layers) < 2 or rng.random() < 0.4:
        return _duplicate_name(graph, rng)
    first, second = rng.sample(range(len(layers)), 2)
    layers[first], layers[second] = layers[second], layers[first]
    return f"swap_layers={first},{second}", None


_MUTATORS: dict[str, tuple[Mutator, Mutator]] = {
    "truncate": (_truncate, _truncate),
    "flip": (_flip, _flip),
    "drop_member": (_drop_member, _h5_drop),
    "replace_member": (_replace_member, _h5_replace),
    "declared_size": (_declared_size, _h5_declared_size),
    "wrong_type": (_json_mutator(_wrong_type),) * 2,
    "missing_key": (_json_mutator(_missing_key),) * 2,
    "huge_number": (_json_mutator(_huge_number),) * 2,
    "deep_nesting": (_json_mutator(_deep_nesting),) * 2,
    "unknown_class": (_json_mutator(_unknown_class),) * 2,
    "graph_cycle": (_json_mutator(_graph_cycle),) * 2,
}


# ------------------------------------------------------------------------------- cases


@dataclass
class Case:
    """One mutated file, ready to run: where it is and what it was made from."""

    id: int
    fixture: str  # relative to fixtures/
    seed: int
    index: int
    label: str
    path: str
    config_intact: bool  # its config reads back (zipfile/json/h5py) as the fixture's
    # crafted cases only: "ok" (must succeed), "error" (must fail), a fragment the error
    # line must hold, or "!" and a fragment it must not hold
    expect: str | None = None


def default_fixtures() -> list[str]:
    """The fixtures of the manifest (relative to fixtures/): stable, described models."""
    return sorted(json.loads((FIXTURES / "manifest.json").read_text()))


def build_cases(
    fixtures: list[str], seed: int, count: int, folder: Path, first: int = 0
) -> list[Case]:
    """Cases `first` .. `first + count - 1`: case `i` mutates fixture `i % len(fixtures)`
    with kind `i % len(KINDS)`, so every fixture meets every kind."""
    folder.mkdir(parents=True, exist_ok=True)
    originals = {name: (FIXTURES / name).read_bytes() for name in fixtures}
    configs = {name: _config_of(data) for name, data in originals.items()}
    cases = []
    for index in range(first, first + count):
        fixture = fixtures[index % len(fixtures)]
        label, data = mutation(originals[fixture], seed, index)
        path = folder / f"case_{index}{Path(fixture).suffix}"
        path.write_bytes(data)
        intact = _intact(data, label, configs[fixture])
        cases.append(Case(index, fixture, seed, index, label, str(path), intact))
    return cases


def _intact(data: bytes, label: str, config: Any) -> bool:
    """Whether the mutated file's config reads back as the fixture's. Not asked of HDF5
    files whose bytes were mangled: the HDF5 library can hang on those (normify reads
    them in a child process with a time limit; the generator would have to as well)."""
    if not data.startswith(b"PK") and label.split(":")[0] in ("truncate", "flip", "declared_size"):
        return False
    try:
        return _config_of(data) == config
    except Exception:
        return False


# ----------------------------------------------------------------- crafted size bombs


def crafted_cases(folder: Path, first_id: int = 100_000) -> list[Case]:
    """Hand-made hostile files with the answer each must get: zip members declaring sizes
    they do not hold, decompression bombs, configs declaring weights no file backs, and
    legitimate files that must not be refused (a deflated archive, a model larger than
    its neighbours)."""
    folder.mkdir(parents=True, exist_ok=True)
    mlp = (FIXTURES / "mlp.keras").read_bytes()
    cases = []
    for offset, (label, fixture, data, expect) in enumerate(_crafted(mlp)):
        path = folder / f"crafted_{offset}{Path(fixture).suffix}"
        path.write_bytes(data)
        cases.append(Case(first_id + offset, fixture, -1, offset, label, str(path), False, expect))
    return cases


def _crafted(mlp: bytes) -> Iterator[tuple[str, str, bytes, str]]:
    """(label, fixture, bytes, expectation) of every crafted case."""
    for member in ("config.json", "model.weights.h5"):
        yield (
            f"bomb:{member} declares 2 GiB, stores less",
            "mlp.keras",
            _patched(mlp, member, ("file_size",), 2**31),
            "declares 2147483648 bytes but stores",
        )
        yield (
            f"bomb:{member} extends past the end",
            "mlp.keras",
            _patched(mlp, member, ("file_size", "compress_size"), 2**31),
            "past the end",
        )
    yield (
        "bomb:deflated weights, 256 MiB of zeros",
        "mlp.keras",
        deflate_bomb(mlp, "model.weights.h5", 256),
        "decompression bomb",
    )
    yield (
        "bomb:deflated config.json, 80 MiB of spaces",
        "mlp.keras",
        deflate_bomb(mlp, "config.json", 80),
        "decompression bomb",
    )
    yield "ok:the fixture deflated", "mlp.keras", _deflated(mlp), "ok"
    yield "size:units=10**8", "mlp.keras", _config_edit(mlp, _set_units(10**8)), "declares units"
    yield (
        "size:input dimension 10**8",
        "mlp.keras",
        _config_edit(mlp, _set_input_dimension(10**8)),
        "declares a dimension of 100000000",
    )
    yield (
        "size:units=64, within budget",
        "mlp.keras",
        _config_edit(mlp, _set_units(64)),
        "!refusing to build",
    )
    tokens = (FIXTURES / "text_bilstm.keras").read_bytes()
    yield (
        "size:embedding input_dim=10**9",
        "text_bilstm.keras",
        _config_edit(tokens, _set_embedding(10**9)),
        "declares input_dim",
    )


def _patched(data: bytes, member: str, fields: tuple[str, ...], value: int) -> bytes:
    mutated = bytearray(data)
    with zipfile.ZipFile(io.BytesIO(data)) as archive:
        local = archive.getinfo(member).header_offset
    for entry, name in _directory_entries(data, _central_directory_offset(data)):
        if name == member:
            _patch_sizes(mutated, entry, local, fields, value)
    return bytes(mutated)


def deflate_bomb(data: bytes, member: str, mebibytes: int) -> bytes:
    """The zip with `member` replaced by a deflated stream of `mebibytes` MiB (zeros for
    weights; spaces then the real config for config.json, so it is even valid JSON)."""
    members = _members(data)
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as archive:
        for info, content in members:
            if info.filename != member:
                archive.writestr(info, content)
                continue
            fill = b" " if member == "config.json" else b"\0"
            target = zipfile.ZipInfo(member, info.date_time)
            target.compress_type = zipfile.ZIP_DEFLATED
            with archive.open(target, "w") as stream:
                chunk = fill * 2**20
                for _ in range(mebibytes):
                    stream.write(chunk)
                if member == "config.json":
                    stream.write(content)
    return buffer.getvalue()


def _deflated(data: bytes) -> bytes:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", compression=zipfile.ZIP_DEFLATED) as archive:
        for info, content in _members(data):
            archive.writestr(info.filename, content)
    return buffer.getvalue()


def _config_edit(data: bytes, edit: Callable[[dict[str, Any]], None]) -> bytes:
    config = _config_of(data)
    edit(config)
    return _with_config(data, json.dumps(config))


def _set_units(units: int) -> Callable[[dict[str, Any]], None]:
    def edit(config: dict[str, Any]) -> None:
        first_dense = next(e for e in config["config"]["layers"] if e["class_name"] == "Dense")
        first_dense["config"]["units"] = units

    return edit


def _set_input_dimension(dimension: int) -> Callable[[dict[str, Any]], None]:
    def edit(config: dict[str, Any]) -> None:
        config["config"]["layers"][0]["config"]["batch_shape"] = [None, dimension]

    return edit


def _set_embedding(rows: int) -> Callable[[dict[str, Any]], None]:
    def edit(config: dict[str, Any]) -> None:
        entry = next(e for e in _layer_entries(config) if e["class_name"] == "Embedding")
        entry["config"]["input_dim"] = rows

    return edit


# ------------------------------------------------------------------ running one batch


@dataclass
class Outcome:
    """What one case did, and every way it broke the contract (`problems`)."""

    id: int
    fixture: str
    label: str
    command: str
    exit: int | None = None
    status: str = "done"  # done, timeout, crash, hang, not run
    seconds: float = 0.0  # the normify run
    checked_seconds: float = 0.0  # the run and the checks of its result
    stderr: str = ""
    problems: list[str] = field(default_factory=list)


def run_cases(
    cases: list[Case],
    command: str,
    folder: Path,
    case_seconds: float = 30.0,
    total_seconds: float = 900.0,
) -> list[Outcome]:
    """Run every case through `normify COMMAND` in as few child processes as possible.

    A child that dies or hangs is killed; its current case is recorded as a crash or a
    hang and a new child takes the remaining cases, until `total_seconds` have passed.
    """
    deadline = time.monotonic() + total_seconds
    outcomes: dict[int, Outcome] = {}
    remaining = list(cases)
    attempt = 0
    while remaining and time.monotonic() < deadline:
        attempt += 1
        batch = folder / f"batch_{attempt}"
        batch.mkdir(parents=True, exist_ok=True)
        done = _run_child(remaining, command, batch, case_seconds, deadline)
        outcomes.update(done)
        remaining = [case for case in remaining if case.id not in outcomes]
    for case in remaining:
        outcomes[case.id] = Outcome(case.id, case.fixture, case.label, command, status="not run")
        outcomes[case.id].problems.append("not run: the batch ran out of time")
    return [outcomes[case.id] for case in cases]


def _run_child(
    cases: list[Case], command: str, batch: Path, case_seconds: float, deadline: float
) -> dict[int, Outcome]:
    spec = batch / "spec.json"
    results = batch / "results.jsonl"
    payload = {
        "command": command,
        "case_seconds": case_seconds,
        "cases": [asdict(c) for c in cases],
    }
    spec.write_text(json.dumps(payload))
    results.touch()
    log = batch / "child.log"
    with open(log, "wb") as log_file:
        child = subprocess.Popen(
            [sys.executable, __file__, "--child", str(spec), str(results)],
            stdout=log_file,
            stderr=subprocess.STDOUT,
            cwd=batch,
            env=_child_environment(),
        )
        status = _watch(child, results, case_seconds + 15, deadline)
    return _collect(cases, command, results, status, log)


def _child_environment() -> dict[str, str]:
    # as a user runs it: TensorFlow's log level unset (normify must keep it quiet itself)
    env = {k: v for k, v in os.environ.items() if k != "TF_CPP_MIN_LOG_LEVEL"}
    env["PYTHONDONTWRITEBYTECODE"] = "1"
    return env


def _watch(child: subprocess.Popen[bytes], results: Path, per_case: float, deadline: float) -> str:
    """Wait for the child; kill it when one case (or the whole batch) takes too long."""
    started = time.monotonic()
    seen = 0
    startup = 120.0  # importing TensorFlow on a loaded machine
    while child.poll() is None:
        time.sleep(0.05)
        size = results.stat().st_size  # grows with every case started or finished
        if size != seen:
            seen, started, startup = size, time.monotonic(), 0.0
        out_of_time = time.monotonic() > deadline
        if time.monotonic() - started > per_case + startup or out_of_time:
            child.kill()
            child.wait()
            return "stopped (the batch ran out of time)" if out_of_time else "hang"
    return "exited" if child.returncode == 0 else f"crash (exit {child.returncode})"


def _collect(
    cases: list[Case], command: str, results: Path, status: str, log: Path
) -> dict[int, Outcome]:
    by_id = {case.id: case for case in cases}
    outcomes: dict[int, Outcome] = {}
    current = None
    for line in results.read_text().splitlines():
        record = json.loads(line)
        if "start" in record:
            current = record["start"]
        else:
            outcomes[record["id"]] = Outcome(**record)
            current = None
    if current is not None and current not in outcomes:
        case = by_id[current]
        tail = log.read_text(errors="replace")[-500:]
        outcome = Outcome(case.id, case.fixture, case.label, command, status=status.split()[0])
        outcome.problems.append(f"the child process {status} during this case: {tail!r}")
        outcomes[current] = outcome
    return outcomes


def failures(outcomes: list[Outcome]) -> list[Outcome]:
    return [outcome for outcome in outcomes if outcome.problems]


def describe(outcome: Outcome) -> str:
    return (
        f"case {outcome.id} {outcome.command} {outcome.fixture} [{outcome.label}] "
        f"exit={outcome.exit} {outcome.status}: {'; '.join(outcome.problems)}"
    )


# ---------------------------------------------------------------------- the child side


class CaseTimeout(BaseException):
    """Raised by the interval timer; a BaseException so normify's handlers let it pass."""


def _child_main(spec_path: Path, results_path: Path) -> None:
    spec = json.loads(spec_path.read_text())
    _limit_memory()
    signal.signal(signal.SIGALRM, _on_alarm)
    command = spec["command"]
    if command != "audit":
        from normify.backend import keras

        keras()  # once, quietly, before the first case
    references: dict[str, Any] = {}
    with open(results_path, "a") as results:
        for entry in spec["cases"]:
            case = Case(**entry)
            results.write(json.dumps({"start": case.id}) + "\n")
            results.flush()
            outcome = _run_case(case, command, spec["case_seconds"], references)
            results.write(json.dumps(asdict(outcome)) + "\n")
            results.flush()


def _limit_memory() -> None:
    """An address-space limit well below the machine's memory: an allocation bomb then
    fails inside the child (and is judged) instead of exhausting the machine."""
    physical = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    limit = int(min(16 * 2**30, max(6 * 2**30, physical * 0.6)))
    with contextlib.suppress(ValueError, OSError):
        resource.setrlimit(resource.RLIMIT_AS, (limit, limit))


def _on_alarm(signum: int, frame: Any) -> None:
    raise CaseTimeout()


def _run_case(case: Case, command: str, seconds: float, references: dict[str, Any]) -> Outcome:
    outcome = Outcome(case.id, case.fixture, case.label, command)
    folder = Path(tempfile.mkdtemp(prefix=f"case_{case.id}_", dir=Path(case.path).parent))
    try:
        target = folder / f"model{Path(case.fixture).suffix}"
        shutil.copyfile(case.path, target)
        os.utime(target, ns=(1_000_000_000, 1_000_000_000))
        before = _snapshot(folder)
        argv = _argv(command, target, folder / "out.keras")
        started = time.monotonic()
        code, stdout, stderr = invoke(argv, seconds)
        outcome.seconds = round(time.monotonic() - started, 3)
        outcome.exit, outcome.stderr = code, stderr
        outcome.status = "timeout" if code is None else "done"
        after = _snapshot(folder)
        outcome.problems = judge(case, command, target, code, stdout, stderr, before, after)
        if not outcome.problems and code == 0:
            outcome.problems = _check_success(case, command, target, stdout, references)
        outcome.checked_seconds = round(time.monotonic() - started, 3)
    except Exception as error:  # the harness itself: still a reported problem, not a crash
        outcome.problems.append(f"harness error: {type(error).__name__}: {error}")
    finally:
        shutil.rmtree(folder, ignore_errors=True)
        _reset_keras()
    return outcome


def _argv(command: str, target: Path, output: Path) -> list[str]:
    if command == "audit":
        return ["audit", str(target), "--json"]
    return ["add", str(target), "-o", str(output), "--json", "--rnn", "batchnorm"]


def invoke(argv: list[str], seconds: float) -> tuple[int | None, str, str]:
    """`python -m normify ARGV`, in-process: (exit code or None on timeout, stdout, stderr).

    Click's standalone mode (what the console script runs) and file-descriptor capture,
    so whatever reaches the terminal is seen, including what C libraries print; an
    exception escaping the CLI is printed as Python would print it, with exit code 1.
    """
    from normify.cli import main

    with _captured(1) as stdout, _captured(2) as stderr:
        signal.setitimer(signal.ITIMER_REAL, seconds)
        try:
            main(argv, prog_name="normify")
            code: int | None = 0
        except SystemExit as exit_:
            code = _exit_code(exit_)
        except CaseTimeout:
            code = None
        except BaseException:
            traceback.print_exc()
            code = 1
        finally:
            signal.setitimer(signal.ITIMER_REAL, 0)
    return code, stdout.text, stderr.text


def _exit_code(exit_: SystemExit) -> int:
    if exit_.code is None:
        return 0
    if isinstance(exit_.code, int):
        return exit_.code
    print(exit_.code, file=sys.stderr)  # what Python does with sys.exit("message")
    return 1


class _Captured:
    text = ""


@contextlib.contextmanager
def _captured(fd: int) -> Iterator[_Captured]:
    """Everything written to file descriptor `fd` (Python and C) while the block runs."""
    stream = sys.stdout if fd == 1 else sys.stderr
    result = _Captured()
    stream.flush()
    saved = os.dup(fd)
    with tempfile.TemporaryFile() as capture:
        os.dup2(capture.fileno(), fd)
        try:
            yield result
        finally:
            with contextlib.suppress(Exception):
                stream.flush()
            os.dup2(saved, fd)
            os.close(saved)
            capture.seek(0)
            result.text = capture.read().decode(errors="replace")


def _snapshot(folder: Path) -> dict[str, tuple[bytes, int]]:
    """Every path under `folder`, hidden ones too: its bytes (files) and mtime."""
    state = {}
    for path in sorted(folder.rglob("*")):
        content = path.read_bytes() if path.is_file() else b"<dir>"
        state[str(path.relative_to(folder))] = (content, path.stat().st_mtime_ns)
    return state


def _reset_keras() -> None:
    """A fresh Keras session, as a new process has (clear_session also collects garbage)."""
    if "keras" in sys.modules:
        with contextlib.suppress(Exception):
            sys.modules["keras"].backend.clear_session()


# --------------------------------------------------------------------------- judging


def judge(
    case: Case,
    command: str,
    target: Path,
    code: int | None,
    stdout: str,
    stderr: str,
    before: dict[str, tuple[bytes, int]],
    after: dict[str, tuple[bytes, int]],
) -> list[str]:
    """Every way this run broke the contract (an empty list when it kept it)."""
    problems = []
    if code is None:
        return ["timeout: the case did not finish in time"]
    if "Traceback" in stderr:
        problems.append(f"traceback on stderr: {stderr[-300:]!r}")
    if code not in (0, 2):
        problems.append(f"exit code {code}")
    if after.get(target.name) != before.get(target.name):
        problems.append("the input file was modified")
    if code == 2:
        problems.extend(_error_problems(stderr, target))
        problems.extend(_leftovers(before, after, set()))
    if code == 0:
        if stderr:
            problems.append(f"stderr on success: {stderr[:300]!r}")
        problems.extend(_leftovers(before, after, {"out.keras"} if command == "add" else set()))
    problems.extend(_allocation_problems(stderr))
    problems.extend(_expectation_problems(case.expect, code, stderr))
    return problems


def _expectation_problems(expect: str | None, code: int, stderr: str) -> list[str]:
    if expect is None:
        return []
    if expect == "ok":
        return [] if code == 0 else [f"expected success, got exit {code}: {stderr[:300]!r}"]
    if expect.startswith("!"):  # any outcome, but not this refusal
        return [f"refused with {expect[1:]!r}: {stderr[:300]!r}"] if expect[1:] in stderr else []
    if code != 2:
        return [f"expected a refusal ({expect!r}), got exit {code}"]
    if expect != "error" and expect not in stderr:
        return [f"expected {expect!r} in the error line: {stderr[:300]!r}"]
    return []


def _error_problems(stderr: str, target: Path) -> list[str]:
    lines = stderr.splitlines()
    if len(lines) != 1 or not stderr.endswith("\n"):
        return [f"stderr is not exactly one line: {stderr[:400]!r}"]
    line = lines[0]
    problems = []
    if not line.startswith(ERROR_PREFIX):
        problems.append(f"error line lacks the prefix: {line!r}")
    if target.name not in line:
        problems.append(f"error line does not name the file: {line!r}")
    if "rerun with --debug" in line:
        problems.append(f"unforeseen exception: {line!r}")
    return problems


# Words of an allocation that exhausted the memory limit: the config made Keras build a
# tensor it could never have had weights for, which normify should refuse from the config.
ALLOCATION_WORDS = ("ResourceExhaustedError", "MemoryError", "OOM when allocating")


def _allocation_problems(stderr: str) -> list[str]:
    if any(word in stderr for word in ALLOCATION_WORDS):
        return [f"memory exhausted instead of a refusal: {stderr[:300]!r}"]
    return []


def _leftovers(
    before: dict[str, tuple[bytes, int]], after: dict[str, tuple[bytes, int]], expected: set[str]
) -> list[str]:
    created = set(after) - set(before)
    problems = []
    if created - expected:
        problems.append(f"files left behind: {sorted(created - expected)}")
    if expected - created:
        problems.append(f"expected output missing: {sorted(expected - created)}")
    return problems


def _check_success(
    case: Case, command: str, target: Path, stdout: str, references: dict[str, Any]
) -> list[str]:
    try:
        report = json.loads(stdout)
    except ValueError:
        return [f"stdout is not the JSON report: {stdout[:200]!r}"]
    if command == "audit":
        return _check_audit(case, report, references)
    return _check_add(case, target, target.parent / "out.keras", report)


def _check_audit(case: Case, report: dict[str, Any], references: dict[str, Any]) -> list[str]:
    if not isinstance(report.get("layers"), list) or "summary" not in report:
        return [f"audit JSON lacks layers or summary: {sorted(report)}"]
    if not case.config_intact:
        return []
    if case.fixture not in references:
        references[case.fixture] = _reference_audit(case.fixture)
    report.pop("model", None)
    if report != references[case.fixture]:
        return ["audit differs from the fixture's although the config is intact"]
    return []


def _reference_audit(fixture: str) -> dict[str, Any]:
    code, stdout, _ = invoke(["audit", str(FIXTURES / fixture), "--json"], 60)
    assert code == 0, f"the fixture {fixture} does not audit"
    report = json.loads(stdout)
    report.pop("model", None)
    return report


def _check_add(case: Case, source: Path, output: Path, report: dict[str, Any]) -> list[str]:
    from normify.backend import keras

    saving = keras().saving
    try:
        new = saving.load_model(output, compile=False)
    except Exception as error:
        return [f"the output does not load: {type(error).__name__}: {str(error)[:200]}"]
    original = _load_as_normify_did(saving, source)
    if original is None:
        return []  # only the output's loading can be checked
    problems = []
    if _names(new) != _names(original):
        problems.append(f"names changed: {_names(original)} -> {_names(new)}")
    exact = all(insertion.get("exact") for insertion in report.get("changes", []))
    if exact and not problems:
        problems.extend(_compare_predictions(case.fixture, original, new))
    return problems


def _load_as_normify_did(saving: Any, source: Path) -> Any:
    """The (mutated) input as Keras loads it in a fresh session, as normify's run did: a
    layer whose name the mutation removed is named from the session's counters."""
    _reset_keras()
    try:
        return saving.load_model(source, compile=False)
    except Exception:
        return None


def _names(model: Any) -> tuple[list[str], list[str]]:
    outputs = [tensor._keras_history[0].name for tensor in model.outputs]
    return [tensor.name for tensor in model.inputs], outputs


def _compare_predictions(fixture: str, original: Any, new: Any) -> list[str]:
    import numpy as np

    inputs = _random_inputs(fixture, original)
    if inputs is None:
        return []
    try:
        before = _predict(original, inputs)
    except Exception:
        return []  # the mutation left a model Keras builds but cannot run: nothing to match
    try:
        after = _predict(new, inputs)
    except Exception as error:
        return [f"the output cannot predict where its input can: {str(error)[:200]}"]
    for a, b in zip(before, after, strict=True):
        if a.shape != b.shape:
            return [f"output shape changed: {a.shape} -> {b.shape}"]
        scale = max(1.0, float(np.nanmax(np.abs(a))) if np.isfinite(a).any() else 1.0)
        difference = np.abs(a - b)
        if np.isfinite(a).all() and float(np.max(difference)) / scale > TOLERANCE:
            return [f"predictions differ by {float(np.max(difference)) / scale:.3g} relative"]
    return []


def _random_inputs(fixture: str, model: Any) -> list[Any] | None:
    """Inputs for the model from the fixture manifest, or from its float input spec."""
    import numpy as np

    manifest = json.loads((FIXTURES / "manifest.json").read_text())
    rng = np.random.default_rng(7)
    arrays = []
    for index, tensor in enumerate(model.inputs):
        shape = [3, *tensor.shape[1:]]
        entry = list(manifest.get(fixture, {}).get("inputs", {}).values())
        spec = entry[index] if index < len(entry) else None
        if any(d is None for d in shape) or (spec is None and "int" in str(tensor.dtype)):
            return None
        if spec is not None and list(shape[1:]) != spec["shape"]:
            return None  # the mutation changed the input shape: no known-good inputs
        if spec is not None and spec["dtype"].startswith("int"):
            arrays.append(rng.integers(1, spec["int_high"] or 2, size=shape).astype(tensor.dtype))
        else:
            arrays.append(rng.standard_normal(shape).astype(str(tensor.dtype)))
    return arrays


def _predict(model: Any, inputs: list[Any]) -> list[Any]:

    # a direct call: predict() traces a function per model, seconds per case
    outputs = model(inputs[0] if len(inputs) == 1 else inputs, training=False)
    if isinstance(outputs, dict):
        return [as_numpy(outputs[key]) for key in sorted(outputs)]
    if isinstance(outputs, (list, tuple)):
        return [as_numpy(output) for output in outputs]
    return [as_numpy(outputs)]


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--child", nargs=2, metavar=("SPEC", "RESULTS"), required=True)
    arguments = parser.parse_args()
    _child_main(Path(arguments.child[0]), Path(arguments.child[1]))
