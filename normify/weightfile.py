"""Building a rewritten model straight from a `.keras` file: one build instead of two.

Loading a model with Keras builds it (every layer called on symbolic tensors) and a
rewrite then builds the new model the same way: twice the cost of the larger part of a
load. Here the new graph is built once, its unchanged layers deserialized from their
entries in the file's config, as Keras would, and their weights read from the file's
`model.weights.h5` with Keras' own per-object loader.

Keras stores weights by position, not by layer name: the layers of a model are the
groups `layers/<class>`, `layers/<class>_1`, ... (the snake-cased class name, numbered in
the model's layer order, which is the order of its config), a nested model's layers
under its own group. `WeightFile` derives each original layer's group from the
original config graph, reads it into the layer through a store that records every
group read, and `check_all_read` refuses a result that left any stored weight unread
(so a file laid out otherwise is never silently half-loaded).

Only Keras 3 archives holding exactly `config.json`, `metadata.json` and
`model.weights.h5` (no assets, no sharded or npz weights) are read this way
(`readable`); everything else goes through `keras.saving.load_model`.
"""

from __future__ import annotations

import io
import tempfile
import warnings
import zipfile
from pathlib import Path
from typing import Any

from normify import kinds
from normify.backend import keras
from normify.errors import NormifyError
from normify.files import KERAS, ModelFile
from normify.graph import Graph, LayerSpec

CONFIG = "config.json"
METADATA = "metadata.json"
WEIGHTS = "model.weights.h5"
# Keras reads weights into memory when they take less than this share of the available
# memory (`saving_lib.is_memory_sufficient`), else from a file extracted from the archive.
MEMORY_SHARE = 0.5
# Groups at the top of a model's weights file: the layers, the model's own (empty)
# variables, and the optimizer's, which a rewrite does not carry.
TOP_GROUPS = {"layers", "vars", "optimizer"}


class WeightFileError(NormifyError):
    """The file's weights cannot be read straight into the rebuilt layers."""


def readable(model_file: ModelFile) -> bool:
    """Whether a file is an archive this module reads (see the module docstring)."""
    if model_file.format != KERAS or model_file.origin.legacy:
        return False
    try:
        with zipfile.ZipFile(model_file.path) as archive:
            return set(archive.namelist()) == {CONFIG, METADATA, WEIGHTS}
    except (OSError, zipfile.BadZipFile):
        return False


class WeightFile:
    """The weights of a `.keras` file, read layer by layer into objects built from its
    config. Use as a context manager (the store is open inside it)."""

    def __init__(
        self,
        path: str | Path,
        graph: Graph,
        safe_mode: bool = True,
        custom_objects: dict[str, Any] | None = None,
    ) -> None:
        self.path = Path(path)
        self.safe_mode = safe_mode
        self.custom_objects = custom_objects
        # keyed by the identity of a layer's config entry, which edited copies of its
        # spec keep (`LayerSpec.serialized`)
        self._groups = weight_groups(graph)
        self._originals: dict[int, Any] = {}
        self._store: Any = None
        self._sharing: Any = None
        self._extracted: tempfile.TemporaryDirectory[str] | None = None

    def __enter__(self) -> WeightFile:
        from normify.keras_internals import mend_saving_cache, serialization_lib

        mend_saving_cache()
        try:
            self._store = _recording_store(self._weights_source())
        except BaseException:
            self._remove_extracted()
            raise
        top = set(self._store.h5_file.keys())
        if not top <= TOP_GROUPS or len(self._store.h5_file.get("vars", ())):
            self.__exit__(None, None, None)
            raise WeightFileError(f"unexpected weight groups {sorted(top - TOP_GROUPS)}")
        # as `keras.saving.load_model` deserializes (objects shared by id in old configs)
        self._sharing = serialization_lib().ObjectSharingScope()
        self._sharing.__enter__()
        return self

    def __exit__(self, *exc: object) -> None:
        if self._sharing is not None:
            self._sharing.__exit__(*exc)
        self._store.close()
        self._remove_extracted()

    def _weights_source(self) -> io.BytesIO | Path:
        """The weights file in memory, or, as Keras does for weights that would take more
        than half the available memory, extracted to a temporary folder beside the model
        (the system's temporary folder if that is not writable)."""
        from normify.files import check_member_size

        with zipfile.ZipFile(self.path) as archive:
            info = archive.getinfo(WEIGHTS)
            check_member_size(info, self.path.stat().st_size, self.path)
            if info.file_size < MEMORY_SHARE * _available_memory():
                return io.BytesIO(archive.read(WEIGHTS))
            try:
                self._extracted = tempfile.TemporaryDirectory(
                    prefix=".normify-", dir=self.path.parent
                )
            except OSError:
                self._extracted = tempfile.TemporaryDirectory(prefix="normify-")
            return Path(archive.extract(WEIGHTS, self._extracted.name))

    def _remove_extracted(self) -> None:
        if self._extracted is not None:
            self._extracted.cleanup()
            self._extracted = None

    def deserialize(self, spec: LayerSpec) -> Any:
        """A new layer (or nested model, or operation) from its entry in the config,
        built as Keras builds it when loading (from its `build_config`)."""
        if spec.serialized is None:
            raise WeightFileError(f"layer {spec.name} has no entry in the file's config")
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # as normify's own load_model: not a notice
            return keras().saving.deserialize_keras_object(
                spec.serialized, custom_objects=self.custom_objects, safe_mode=self.safe_mode
            )

    def holds_weights(self, spec: LayerSpec) -> bool:
        return spec.serialized is not None and id(spec.serialized) in self._groups

    def load(self, layer: Any, spec: LayerSpec) -> None:
        """Read the original layer `spec`'s weights into `layer` (built, same class and
        config), with Keras' own loader: its variables and those of objects nested in it."""
        from normify.keras_internals import saving_lib

        group = self._groups.get(id(spec.serialized)) if spec.serialized is not None else None
        if group is None:
            raise WeightFileError(f"layer {spec.name} has no weights group in the file")
        if not getattr(layer, "built", True):
            raise WeightFileError(f"layer {spec.name} was not built from its config")
        saving_lib()._load_state(
            layer, weights_store=self._store, assets_store=None, inner_path=group,
            visited_saveables=set(),
        )  # fmt: skip

    def original(self, spec: LayerSpec) -> Any:
        """The original layer of `spec`, standing alone (not part of the new model) with
        its weights from the file: what a modified layer's variables are carried from."""
        key = id(spec.serialized)
        if key not in self._originals:
            layer = self.deserialize(spec)
            if self.holds_weights(spec):
                self.load(layer, spec)
            self._originals[key] = layer
        return self._originals[key]

    def check_all_read(self) -> None:
        """Every group of stored weights was read into some layer."""
        unread = []

        def visit(name: str, item: Any) -> None:
            if name.rsplit("/", 1)[-1] != "vars" or not name.startswith("layers/"):
                return
            owner = name[: -len("/vars")]
            if len(item) and owner not in self._store.read:
                unread.append(owner)

        self._store.h5_file.visititems(visit)
        if unread:
            raise WeightFileError(f"weights left unread: {', '.join(sorted(unread)[:3])}")


def weight_groups(graph: Graph, group: str = "") -> dict[int, str]:
    """The weights group of every layer of `graph` (built from a config), keyed by the
    identity of its config entry: Keras names a model's layers after their class, in
    layer order, numbered from the second of a class (`dense`, `dense_1`, ...)."""
    keras()  # imported quietly first (TensorFlow's notices)
    from normify.keras_internals import naming

    groups: dict[int, str] = {}
    used: dict[str, int] = {}
    for spec in graph.layers.values():
        if spec.kind == kinds.OP or spec.serialized is None:
            continue  # operations are not among a model's layers; an implied input
        base = naming().to_snake_case(spec.class_name)
        if base in used:
            used[base] += 1
            name = f"{base}_{used[base]}"
        else:
            used[base] = 0
            name = base
        path = f"{group}/layers/{name}" if group else f"layers/{name}"
        groups[id(spec.serialized)] = path
        if spec.subgraph is not None:
            groups.update(weight_groups(spec.subgraph, path))
    return groups


def _available_memory() -> int:
    """As Keras reckons it: psutil's figure when installed, else 1 GB."""
    try:
        import psutil
    except ImportError:
        return 1024**3
    return int(psutil.virtual_memory().available)


def _recording_store(content: io.BytesIO | Path) -> Any:
    """Keras' H5 store (its loader accepts no other), remembering each path asked for."""
    from normify.keras_internals import saving_lib

    H5IOStore = saving_lib().H5IOStore

    class RecordingStore(H5IOStore):  # type: ignore[misc,valid-type]  # a Keras-internal class
        def __init__(self, source: io.BytesIO | Path) -> None:
            super().__init__(source, mode="r")
            self.read: set[str] = set()

        def get(self, path: str) -> Any:
            self.read.add(path)
            return super().get(path)

    return RecordingStore(content)
