"""Reading the metadata of an HDF5 file in pure Python: groups, attributes and the shapes
of datasets, never their data.

`normify audit` reads a Keras `.h5` file's `model_config` attribute and checks the
shapes of the weights it stores, and reads the shapes in a `.keras` file's
`model.weights.h5`, without h5py (which imports NumPy) and without the HDF5 C library
(which can loop forever on a corrupted file, and cannot be interrupted). Keras files are
written by h5py with its default format: superblock version 0 or 1, version 1 object
headers, groups as symbol tables (B-tree version 1 nodes and a local heap) or as link
messages, and attributes of fixed- or variable-length strings. That subset is read here;
anything else raises `Unsupported` (the caller then uses h5py), and any structure that
points outside the file, loops or does not parse raises `Corrupt`.
"""

from __future__ import annotations

import struct
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

SIGNATURE = b"\x89HDF\r\n\x1a\n"
UNDEFINED = 0xFFFFFFFFFFFFFFFF
MAX_OBJECTS = 1_000_000  # headers, nodes and messages one read may visit
_MESSAGE_HEADER = struct.Struct("<HH")  # an object header message's type and size


class Corrupt(Exception):
    """The file's structure does not parse: truncated, mangled or hostile."""


class Unsupported(Exception):
    """A valid HDF5 structure this reader does not know (a newer format)."""


class Window:
    """`size` bytes of `buffer` from `start` on, sliced and searched like bytes: an HDF5
    file stored uncompressed inside a zip archive, read in place."""

    def __init__(self, buffer: Any, start: int, size: int) -> None:
        self.buffer, self.start, self.size = buffer, start, size

    def __len__(self) -> int:
        return self.size

    def __getitem__(self, part: slice) -> bytes:
        start, stop, _ = part.indices(self.size)
        return self.buffer[self.start + start : self.start + stop]

    def find(self, sub: bytes, start: int, end: int) -> int:
        end = min(end, self.size)
        found = self.buffer.find(sub, self.start + start, self.start + end)
        return found - self.start if found >= 0 else -1


@dataclass
class Node:
    """A group or dataset: its attributes (name -> value), a dataset's shape, and a
    group's members (name -> object header address)."""

    address: int
    attributes: dict[str, Any] = field(default_factory=dict)
    shape: tuple[int, ...] | None = None
    members: dict[str, int] = field(default_factory=dict)
    is_group: bool = False


class File:
    """An HDF5 file's metadata, read on demand from its bytes."""

    def __init__(self, data: Any) -> None:
        """`data`: the file's bytes, or anything that slices and `find`s like them (an
        mmap, a `Window` on a zip member)."""
        self.data = data
        # Read through the underlying buffer at an offset, not through `Window` slicing:
        # the primitives below run tens of thousands of times for a large model.
        if isinstance(data, Window):
            self._buffer, self._base = data.buffer, data.start
        else:
            self._buffer, self._base = data, 0
        self._size = len(data)
        self.budget = MAX_OBJECTS
        self._nodes: dict[int, Node] = {}
        self._heaps: dict[int, _GlobalHeap] = {}
        if len(data) < 64 or data[:8] != SIGNATURE:
            raise Corrupt("no HDF5 signature")
        version = self._byte(8)
        if version not in (0, 1):
            raise Unsupported(f"superblock version {version}")
        self.offset_size = self._byte(13)
        self.length_size = self._byte(14)
        if self.offset_size not in (4, 8) or self.length_size not in (4, 8):
            raise Unsupported("offset or length size other than 4 or 8")
        position = 24 + (4 if version == 1 else 0)
        base = self._offset(position)
        if base != 0:
            raise Unsupported("a base address other than 0")
        position += 4 * self.offset_size  # base, free space, end of file, driver info
        self.root = self._symbol_entry(position)[1]

    # ------------------------------------------------------------------ navigation

    def node(self, path: str = "/") -> Node:
        """The group or dataset at `path` (`model_weights/dense_1`)."""
        current = self._node(self.root)
        for part in [part for part in path.split("/") if part]:
            if part not in current.members:
                raise KeyError(path)
            current = self._node(current.members[part])
        return current

    def datasets(self, path: str = "/") -> Iterator[tuple[str, tuple[int, ...]]]:
        """(path, shape) of every dataset under `path`, in name order, depth first."""
        stack = [(path.strip("/"), self.node(path))]
        seen: set[int] = set()
        while stack:
            prefix, node = stack.pop()
            if node.address in seen:
                continue
            seen.add(node.address)
            if node.shape is not None and not node.is_group:
                yield prefix, node.shape
            for name in sorted(node.members, reverse=True):
                child = self._node(node.members[name])
                stack.append((f"{prefix}/{name}" if prefix else name, child))

    # --------------------------------------------------------------- primitives

    def _spend(self) -> None:
        self.budget -= 1
        if self.budget < 0:
            raise Corrupt("too many objects (a loop?)")

    def _bytes(self, position: int, size: int) -> bytes:
        if position < 0 or size < 0 or position + size > self._size:
            raise Corrupt("a structure points past the end of the file")
        start = self._base + position
        return self._buffer[start : start + size]

    def _byte(self, position: int) -> int:
        if position < 0 or position >= self._size:
            raise Corrupt("a structure points past the end of the file")
        return self._buffer[self._base + position]

    def _unsigned(self, position: int, size: int) -> int:
        if position < 0 or size < 0 or position + size > self._size:
            raise Corrupt("a structure points past the end of the file")
        start = self._base + position
        return int.from_bytes(self._buffer[start : start + size], "little")

    def _offset(self, position: int) -> int:
        return self._unsigned(position, self.offset_size)

    def _length(self, position: int) -> int:
        return self._unsigned(position, self.length_size)

    def _symbol_entry(self, position: int) -> tuple[int, int, int, tuple[int, int] | None]:
        """(link name offset, object header address, size, cached B-tree and heap)."""
        name = self._offset(position)
        header = self._offset(position + self.offset_size)
        cache = self._unsigned(position + 2 * self.offset_size, 4)
        scratch = position + 2 * self.offset_size + 8
        cached = None
        if cache == 1:
            cached = (self._offset(scratch), self._offset(scratch + self.offset_size))
        return name, header, 2 * self.offset_size + 24, cached

    # ------------------------------------------------------------- object headers

    def _node(self, address: int) -> Node:
        if address in self._nodes:
            return self._nodes[address]
        node = Node(address)
        self._nodes[address] = node
        for kind, body, size in self._messages(address):
            self._message(node, kind, body, size)
        return node

    def _messages(self, address: int) -> Iterator[tuple[int, int, int]]:
        if self._bytes(address, 4) == b"OHDR":
            raise Unsupported("version 2 object headers")
        if self._byte(address) != 1:
            raise Corrupt("an object header of unknown version")
        count = self._unsigned(address + 2, 2)
        size = self._unsigned(address + 8, 4)
        blocks = [(address + 16, size)]
        read = 0
        while blocks and read < count:
            start, length = blocks.pop(0)
            position, end = start, start + length
            self._bytes(start, length)
            while position + 8 <= end and read < count:
                self._spend()
                kind, body_size = _MESSAGE_HEADER.unpack(self._bytes(position, 4))
                body = position + 8
                if body + body_size > end:
                    raise Corrupt("an object header message overruns its block")
                read += 1
                if kind == 0x10:  # continuation: more messages elsewhere
                    blocks.append((self._offset(body), self._length(body + self.offset_size)))
                else:
                    yield kind, body, body_size
                position = body + body_size

    def _message(self, node: Node, kind: int, body: int, size: int) -> None:
        if kind == 0x0001:
            node.shape = self._dataspace(body)[0]
        elif kind == 0x0011:
            node.is_group = True
            node.members.update(
                self._symbol_table(self._offset(body), self._offset(body + self.offset_size))
            )
        elif kind == 0x0006:
            node.is_group = True
            name, address = self._link(body)
            if address is not None:
                node.members[name] = address
        elif kind == 0x0002:
            node.is_group = True
            flags = self._byte(body + 1)
            heap = self._offset(body + 2 + (8 if flags & 1 else 0))
            if heap != UNDEFINED:
                raise Unsupported("groups with dense link storage")
        elif kind == 0x000C:
            name, value = self._attribute(body, size)
            node.attributes[name] = value
        elif kind == 0x0015:
            raise Unsupported("dense attribute storage")

    # ------------------------------------------------------------------- groups

    def _symbol_table(self, tree: int, heap: int) -> dict[str, int]:
        names = self._local_heap(heap)
        members: dict[str, int] = {}
        pending = [tree]
        while pending:
            self._spend()
            address = pending.pop()
            if self._bytes(address, 4) != b"TREE":
                raise Corrupt("a group's B-tree node has no TREE signature")
            level = self._byte(address + 5)
            used = self._unsigned(address + 6, 2)
            position = address + 8 + 2 * self.offset_size
            for _ in range(used):
                position += self.length_size  # key
                child = self._offset(position)
                position += self.offset_size
                if level > 0:
                    pending.append(child)
                else:
                    members.update(self._symbol_node(child, names))
        return members

    def _symbol_node(self, address: int, names: tuple[int, int]) -> dict[str, int]:
        if self._bytes(address, 4) != b"SNOD":
            raise Corrupt("a group's symbol node has no SNOD signature")
        count = self._unsigned(address + 6, 2)
        members = {}
        position = address + 8
        for _ in range(count):
            self._spend()
            name_offset, header, size, _ = self._symbol_entry(position)
            members[self._heap_string(names, name_offset)] = header
            position += size
        return members

    def _local_heap(self, address: int) -> tuple[int, int]:
        if self._bytes(address, 4) != b"HEAP":
            raise Corrupt("a group's name heap has no HEAP signature")
        size = self._length(address + 8)
        data = self._offset(address + 8 + 2 * self.length_size)
        self._bytes(data, size)
        return data, size

    def _heap_string(self, heap: tuple[int, int], offset: int) -> str:
        start, size = heap
        if offset >= size:
            raise Corrupt("a name outside its heap")
        base = self._base
        end = self._buffer.find(b"\0", base + start + offset, base + min(start + size, self._size))
        if end < 0:
            raise Corrupt("an unterminated name")
        return self._buffer[base + start + offset : end].decode("utf-8", errors="replace")

    def _link(self, body: int) -> tuple[str, int | None]:
        """A link message: (name, object header address), None for a soft or external
        link (which Keras never writes)."""
        flags = self._byte(body + 1)
        position = body + 2
        link_type = 0
        if flags & 0x8:
            link_type = self._byte(position)
            position += 1
        if flags & 0x4:
            position += 8  # creation order
        if flags & 0x10:
            position += 1  # name character set
        length_size = 1 << (flags & 0x3)
        name_length = self._unsigned(position, length_size)
        position += length_size
        name = self._bytes(position, name_length).decode("utf-8", errors="replace")
        position += name_length
        return name, (self._offset(position) if link_type == 0 else None)

    # ----------------------------------------------------------------- dataspaces

    def _dataspace(self, body: int) -> tuple[tuple[int, ...], int]:
        """(dimensions, number of elements) of a dataspace message."""
        version = self._byte(body)
        rank = self._byte(body + 1)
        if version == 1:
            position = body + 8
        elif version == 2:
            position = body + 4
            if self._byte(body + 3) == 2:  # a null dataspace
                return (), 0
        else:
            raise Unsupported(f"dataspace version {version}")
        if rank > 32:
            raise Corrupt("a dataspace of more than 32 dimensions")
        dims = tuple(self._length(position + i * self.length_size) for i in range(rank))
        count = 1
        for dim in dims:
            count *= dim
        return dims, count

    # ----------------------------------------------------------------- attributes

    def _attribute(self, body: int, size: int) -> tuple[str, Any]:
        version = self._byte(body)
        name_size = self._unsigned(body + 2, 2)
        type_size = self._unsigned(body + 4, 2)
        space_size = self._unsigned(body + 6, 2)
        if version == 1:
            position = body + 8

            def pad(n: int) -> int:
                return (n + 7) & ~7
        elif version in (2, 3):
            position = body + 8 + (1 if version == 3 else 0)

            def pad(n: int) -> int:
                return n
        else:
            raise Unsupported(f"attribute message version {version}")
        name = self._bytes(position, name_size).split(b"\0", 1)[0].decode("utf-8", "replace")
        position += pad(name_size)
        datatype = position
        position += pad(type_size)
        dims, count = self._dataspace(position)
        position += pad(space_size)
        if position > body + size:
            raise Corrupt(f"attribute {name!r} overruns its message")
        return name, self._value(datatype, position, dims, count, body + size)

    def _value(
        self, datatype: int, position: int, dims: tuple[int, ...], count: int, end: int
    ) -> Any:
        """An attribute's value: a string, a list of strings, or a number or list of
        numbers; None for other types (Keras attributes are strings)."""
        class_and_version = self._byte(datatype)
        type_class = class_and_version & 0x0F
        element = self._unsigned(datatype + 4, 4)
        if count > 10_000_000 or element * count > len(self.data):
            raise Corrupt("an attribute larger than the file")
        if type_class == 3:  # fixed-length string
            self._bytes(position, element * count)
            values = [
                self.data[position + i * element : position + (i + 1) * element]
                .split(b"\0", 1)[0]
                .decode("utf-8", errors="replace")
                for i in range(count)
            ]
        elif type_class == 9:  # variable-length (h5py writes str as vlen strings)
            if (self._byte(datatype + 1) & 0x0F) != 1:
                return None  # a vlen sequence, not a string
            step = 4 + self.offset_size + 4
            values = []
            for i in range(count):
                self._spend()
                item = position + i * step
                length = self._unsigned(item, 4)
                collection = self._offset(item + 4)
                index = self._unsigned(item + 4 + self.offset_size, 4)
                values.append(self._global(collection, index, length).decode("utf-8", "replace"))
        elif type_class in (0, 1) and element in (1, 2, 4, 8):
            signed = bool(self._byte(datatype + 1) & 0x08)
            formats = {(0, 1): "b", (0, 2): "h", (0, 4): "i", (0, 8): "q", (1, 4): "f", (1, 8): "d"}
            code = formats.get((type_class, element))
            if code is None:
                return None
            if type_class == 0 and not signed:
                code = code.upper()
            raw = self._bytes(position, element * count)
            values = list(struct.unpack(f"<{count}{code}", raw))
        else:
            return None
        return values[0] if not dims else values

    def _global(self, collection: int, index: int, length: int) -> bytes:
        # A collection holds every string attribute of many objects: it is walked once,
        # as far as the strings asked for so far, not again from its start for each.
        heap = self._heaps.get(collection)
        if heap is None:
            if self._bytes(collection, 4) != b"GCOL":
                raise Corrupt("a string's global heap has no GCOL signature")
            size = self._length(collection + 8)
            self._bytes(collection, size)
            heap = self._heaps[collection] = _GlobalHeap(collection + 8 + self.length_size)
            heap.end = collection + size
        found = heap.objects.get(index)
        while found is None and not heap.done and heap.position + 8 + self.length_size <= heap.end:
            self._spend()
            number = self._unsigned(heap.position, 2)
            object_size = self._length(heap.position + 8)
            data = heap.position + 8 + self.length_size
            heap.objects.setdefault(number, (data, object_size))
            if number == index:
                found = heap.objects[number]
                break
            if number == 0:
                heap.done = True
                break
            heap.position = data + ((object_size + 7) & ~7)
        if found is None:
            raise Corrupt("a string missing from its global heap")
        data, object_size = found
        return self._bytes(data, min(length, object_size))


@dataclass
class _GlobalHeap:
    """How far a global heap collection has been walked, and the objects seen so far
    (by number: the first of each, as a walk from the start would find it)."""

    position: int
    end: int = 0
    done: bool = False
    objects: dict[int, tuple[int, int]] = field(default_factory=dict)
