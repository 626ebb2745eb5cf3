"""The public Python API: `audit`, `add`, `swap`, `strip`, `fold`, `recalibrate`, `verify`.

Every function accepts a path to a `.keras` / `.h5` file or an in-memory `keras.Model`,
and never modifies a model it is given. Nothing here prints.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import numpy as np

import os
import warnings
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from normify import files, kinds
from normify import graph as graphs
from normify.audit import AuditReport, audit_graph
from normify.errors import NormifyError, UnsupportedModelError
from normify.flow import build_flow
from normify.formats import Origin
from normify.incell import POSITION as IN_CELL_POSITION
from normify.passes.add import Insertion, add_norms
from normify.passes.edit import Kept
from normify.rules import IN_CELL, Decision, Rules, decide
from normify.verify import VerifyReport, verify

ModelOrPath = Any  # keras.Model | str | os.PathLike


@dataclass
class AddReport:
    """What `add` did: every insertion, every skip with its reason, and measured drift."""

    model: str
    insertions: list[Insertion]
    skipped: list[Decision]
    drift: dict[str, Any] | None = None
    notices: list[str] = field(default_factory=list)
    output: str | None = None
    init: str = "identity"
    layer_drift: dict[str, dict[str, float]] = field(default_factory=dict)

    def to_json(self) -> dict[str, Any]:
        return {
            "command": "add",
            "model": self.model,
            "init": self.init,
            "insertions": [
                {**insertion.to_json(), "drift": self.layer_drift.get(insertion.name)}
                for insertion in self.insertions
            ],
            "skipped": [{"target": d.path, "reason": d.reason} for d in self.skipped],
            "drift": self.drift,
            "notices": list(self.notices),
            "output": self.output,
        }


CHANGE_KEYS = {"swap": "swaps", "strip": "removals", "fold": "folds", "recalibrate": "layers"}


@dataclass
class RewriteReport:
    """What `swap`, `strip`, `fold` or `recalibrate` did: the changes (records with
    `to_json`), the layers left alone with the reason, and measured drift."""

    command: str
    model: str
    changes: list[Any]
    kept: list[Kept]
    drift: dict[str, Any] | None = None
    layer_drift: dict[str, dict[str, float]] = field(default_factory=dict)
    notices: list[str] = field(default_factory=list)
    output: str | None = None

    def to_json(self) -> dict[str, Any]:
        changes = []
        for change in self.changes:
            entry = change.to_json()
            if self.layer_drift.get(change.path) is not None:
                entry["drift"] = self.layer_drift[change.path]
            changes.append(entry)
        return {
            "command": self.command,
            "model": self.model,
            CHANGE_KEYS[self.command]: changes,
            "kept": [kept.to_json() for kept in self.kept],
            "drift": self.drift,
            "notices": list(self.notices),
            "output": self.output,
        }


@dataclass
class Result:
    """The rewritten model and the report of what was done to it. `origin` is which Keras
    wrote the file the model was read from (None for a model passed in)."""

    model: Any
    report: Any  # AddReport for add, RewriteReport for the other commands
    origin: Origin | None = None


def audit(
    model_or_path: ModelOrPath,
    *,
    custom_objects: dict[str, Any] | None = None,
    load: bool = False,
    safe_mode: bool = True,
) -> AuditReport:
    """Audit which dense, conv and recurrent layers are normalized, by what, and where.

    A path is audited from its config alone, without importing a Keras backend. With
    `load`, the model is loaded with Keras and its live graph audited: what a library's
    Functional subclass (keras-hub) shows only once built. A library model audited from
    its config alone is refused with what to do instead of an empty table.
    """
    if isinstance(model_or_path, (str, os.PathLike)):
        path = Path(model_or_path)
        if load:
            from normify.loading import load_model

            loaded = load_model(path, safe_mode=safe_mode, custom_objects=custom_objects)
            return audit_graph(graphs.from_model(loaded.model, flatten=True), model_name=str(path))
        model_file = files.read_model_file(path, frozenset(custom_objects or ()))
        graph = graphs.from_config(model_file.config, source=path)
        if graph.opaque_reason is not None and kinds.library_of(model_file.config.get("module")):
            raise UnsupportedModelError(
                f"cannot audit {graph.class_name} from its config: {graph.opaque_reason}", path
            )
        return audit_graph(graph, model_name=str(path))
    return audit_graph(graphs.from_model(model_or_path, flatten=load))


def plan(
    model_or_path: ModelOrPath,
    rules: Rules | None = None,
) -> AddReport:
    """The `add` plan (insertions and skips) without building anything.

    For a path this reads the config only, without a Keras backend.
    """
    rules = rules or Rules()
    if isinstance(model_or_path, (str, os.PathLike)):
        path = Path(model_or_path)
        graph = graphs.from_config(files.read_model_file(path).config, source=path)
        name = str(path)
    else:
        graph = graphs.from_model(model_or_path)
        name = graph.name
    _require_rewritable(graph, name)
    decisions = decide(graph, build_flow(graph), rules)
    _, insertions = add_norms(graph, decisions, rules)
    return AddReport(name, insertions, [d for d in decisions if not d.insert])


def add(
    model_or_path: ModelOrPath,
    *,
    dense: str = "batchnorm",
    conv: str = "batchnorm",
    rnn: str = "layernorm",
    position: str = "pre",
    include: Iterable[str] = (),
    exclude: Iterable[str] = (),
    include_output: bool = False,
    init: str = "identity",
    data: Any = None,
    batch_size: int = 64,
    max_samples: int = 1024,
    measure_drift: bool | None = None,
    quiet: bool = True,
    safe_mode: bool = True,
    custom_objects: dict[str, Any] | None = None,
    flatten: bool = False,
) -> Result:
    """Insert norm layers after dense, conv and recurrent layers, by rule.

    Args:
        model_or_path: a `keras.Model`, or a path to a `.keras` or `.h5` file.
        dense, conv, rnn: `batchnorm`, `layernorm`, `groupnorm`, `rmsnorm` or `none`;
            `rnn` also `layernorm-cell`: recurrent layers replaced by normify's
            layer-normalized ones (`normify.cells`), weights carried; the result needs
            normify to load.
        position: `pre` (between the linear op and its activation) or `post` (after the
            activation) for dense and conv layers; recurrent layers are always
            normalized after their output.
        include, exclude: glob patterns on layer paths (`encoder/dense_*`).
        include_output: also normalize layers whose output is a model output.
        init: `identity` (exact at inference, no data), `calibrate` (statistics from
            `data`; an identity at inference, close to one in training) or `fresh`
            (gamma 1, beta 0; moving statistics from `data` when given).
        data: calibration data: a path to an `.npz`/`.npy`, arrays, a dict of arrays, or
            an iterable of batches (see `normify.data.load_data`).
        batch_size, max_samples: how `data` is batched and how much of it is used.
        measure_drift: measure the output drift; by default whenever the insertion is
            not an exact identity (another norm than BatchNormalization, or `fresh`).
        quiet: no progress bar while passing data through the model.
        safe_mode: keep Keras' safe mode when loading a file (refuses Python lambdas).
        custom_objects: classes and functions needed to load a file.

    Returns:
        A `Result` with the new `model` and its `report`. The new model never shares
        layers or variables with a model passed in; the caller's model is untouched.
    """
    rules = Rules(dense, conv, rnn, position, tuple(include), tuple(exclude), include_output)
    if init not in INITS:
        raise NormifyError(f"--init must be one of {', '.join(INITS)}, not {init!r}")
    if init == "calibrate" and data is None:
        raise NormifyError("--init calibrate needs calibration data (--data)")
    built, model_file = None, None
    if isinstance(model_or_path, (str, os.PathLike)):
        model_file = files.read_model_file(model_or_path, frozenset(custom_objects or ()))
        if init == "identity" and data is None and not measure_drift and not flatten:
            built = _add_in_one_build(model_file, rules, safe_mode, custom_objects)
    if built is None:
        source = _open(model_file or model_or_path, safe_mode, custom_objects, flatten)
        decisions = decide(source.graph, build_flow(source.graph), rules)
        new_graph, insertions = add_norms(source.graph, decisions, rules)
        model = _rebuild(source, new_graph, changed=bool(insertions))
    else:
        source, decisions, insertions, model = built
    skipped = [d for d in decisions if not d.insert]
    report = AddReport(source.name, insertions, skipped, notices=source.notices, init=init)
    report.notices.extend(f"{i.target}: {i.note}" for i in insertions if i.note)
    calibration = _calibration_data(
        data, source.model, batch_size, max_samples, quiet, "calibrating inserted norms"
    )
    # A converted recurrent layer's norms start at gamma 1, beta 0: there are no moving
    # statistics to calibrate inside a cell.
    paths = [insertion.name for insertion in insertions if insertion.position != IN_CELL_POSITION]
    if init != "identity" and paths:
        from normify.calibrate import initialize_from_data

        if calibration is not None:
            initialize_from_data(model, paths, calibration.batches, init)
        else:
            _fresh_without_data(model, paths)
    inexact = [i for i in insertions if not i.exact] if init == "identity" else insertions
    not_identity = sorted(
        {i.norm_class for i in insertions if i.norm not in ("batchnorm", IN_CELL)}
    )
    if any(i.position == IN_CELL_POSITION for i in insertions):
        report.notices.append(
            "layer normalization inside a recurrent cell cannot start as an identity: "
            "predictions change until retraining (see drift); loading the result needs "
            "normify installed (import normify registers its layers with Keras)"
        )
    if init == "fresh":
        report.notices.append(
            "--init fresh is not an identity at inference: predictions change until "
            "retraining (see drift)"
        )
    elif not_identity:
        report.notices.append(
            f"{', '.join(not_identity)} cannot start as an identity: predictions change "
            "until retraining (see drift)"
        )
    if measure_drift or (measure_drift is None and inexact):
        from normify.drift import output_drift, tensor_drift

        batches = _batches(calibration, source.model)
        report.drift = output_drift(source.model, model, batches, _source_label(calibration))
        # each insertion: the tensor its chain now produces against the one it stands in for
        before = {i.name: (i.replaces, "output") for i in insertions}
        after = {i.name: (i.chain_end, "output") for i in insertions}
        report.layer_drift = tensor_drift(source.model, before, model, after, batches)
    return Result(model, report, source.origin)


INITS = ("identity", "calibrate", "fresh")


def _add_in_one_build(
    model_file: files.ModelFile,
    rules: Rules,
    safe_mode: bool,
    custom_objects: dict[str, Any] | None,
) -> tuple[_Source, list[Decision], list[Insertion], Any] | None:
    """`add` planned on the file's config and built once, with the weights read from the
    file (`normify.weightfile`), when nothing needs the original model afterwards: every
    insertion an exact identity, no drift to measure. None when that does not apply or
    fails: the caller then loads the model with Keras, which says what is wrong."""
    from normify.rebuild import rebuild
    from normify.weightfile import WeightFile, readable

    path, config = model_file.path, model_file.config
    graph = graphs.from_config(config, source=path)
    _require_rewritable(graph, str(path))
    if not readable(model_file):
        return None
    decisions = decide(graph, build_flow(graph), rules)
    new_graph, insertions = add_norms(graph, decisions, rules)
    # exactness that hangs on a shape only the live model knows is for the live model to say
    if not insertions or not all(i.exact and not i.bias_shape_unknown for i in insertions):
        return None
    notices = list(model_file.notices)
    source = _Source(None, graph, str(path), True, notices, origin=model_file.origin)
    compile_config = config.get("compile_config")
    try:
        with (
            WeightFile(path, graph, safe_mode, custom_objects) as weights,
            warnings.catch_warnings(record=True) as caught,
        ):
            warnings.simplefilter("always")
            model = rebuild(new_graph, weights=weights)
            if compile_config:
                model.compile_from_config(compile_config)
                source.notices.append(COMPILED_NOTICE)
    except Exception:
        return None
    source.notices.extend(line for line in _warning_lines(caught) if line not in source.notices)
    return source, decisions, insertions, model


def _fresh_without_data(model: Any, paths: list[str]) -> None:
    """gamma 1, beta 0 and (BatchNormalization) Keras' default moving statistics."""
    import numpy as np

    from normify.calibrate import layer_at

    defaults = {"gamma": 1.0, "scale": 1.0, "beta": 0.0, "moving_mean": 0.0}
    defaults["moving_variance"] = 1.0
    for path in paths:
        for variable in layer_at(model, path).weights:
            name = variable.path.rsplit("/", 1)[-1]
            if name in defaults:
                variable.assign(np.full(variable.shape, defaults[name], variable.dtype))


def swap(
    model_or_path: ModelOrPath,
    *,
    from_norm: str,
    to_norm: str,
    groups: int | None = None,
    include: Iterable[str] = (),
    exclude: Iterable[str] = (),
    data: Any = None,
    allow_mask_loss: bool = False,
    batch_size: int = 64,
    max_samples: int = 1024,
    quiet: bool = True,
    safe_mode: bool = True,
    custom_objects: dict[str, Any] | None = None,
    flatten: bool = False,
) -> Result:
    """Replace norm layers of one class (`from_norm`) by another (`to_norm`).

    Names, axes, epsilon and dtype are kept; gamma and beta are carried where the shapes
    match. With `data`, each new layer is fitted (moving statistics and a per-channel
    least-squares gamma and beta) to reproduce the old layer's outputs. No swap is exact:
    the report gives the drift of every swapped layer and of the model outputs.
    """
    from normify.passes.swap import swap_norms

    source = _open(model_or_path, safe_mode, custom_objects, flatten)
    try:
        new_graph, swaps, kept, notices = swap_norms(
            source.graph,
            from_norm,
            to_norm,
            groups=groups,
            include=tuple(include),
            exclude=tuple(exclude),
            allow_mask_loss=allow_mask_loss,
        )
    except NormifyError as error:
        if error.path is not None:
            raise
        raise NormifyError(str(error), source.name) from None
    model = _rebuild(source, new_graph, changed=bool(swaps))
    report = RewriteReport("swap", source.name, swaps, kept, notices=source.notices + notices)
    calibration = _calibration_data(
        data, source.model, batch_size, max_samples, quiet, "fitting swapped norms"
    )
    paths = [replacement.path for replacement in swaps]
    if paths and calibration is not None:
        from normify.calibrate import fit_replacements

        fit_replacements(source.model, model, paths, calibration.batches)
    if paths:
        _measure(report, source.model, model, calibration, paths, "output")
    return Result(model, report, source.origin)


def strip(
    model_or_path: ModelOrPath,
    *,
    kind: str = "all",
    include: Iterable[str] = (),
    exclude: Iterable[str] = (),
    data: Any = None,
    batch_size: int = 64,
    max_samples: int = 1024,
    safe_mode: bool = True,
    custom_objects: dict[str, Any] | None = None,
    flatten: bool = False,
) -> Result:
    """Remove norm layers (`kind`: batchnorm, layernorm, groupnorm, rmsnorm, unitnorm or
    all). A BatchNormalization directly after a linear layer is folded into it first, so
    inference is unchanged; every other removal's drift is reported."""
    from normify.passes.strip import IN_CELL_KIND, STRIP_KINDS, strip_norms

    if kind not in (*STRIP_KINDS, IN_CELL_KIND, "all"):
        choices = ", ".join((*STRIP_KINDS, IN_CELL_KIND))
        raise NormifyError(f"--kind must be one of {choices} or all, not {kind!r}")
    source = _open(model_or_path, safe_mode, custom_objects, flatten)
    new_graph, removals, kept = strip_norms(source.graph, kind, tuple(include), tuple(exclude))
    model = _rebuild(source, new_graph, changed=bool(removals))
    report = RewriteReport("strip", source.name, removals, kept, notices=source.notices)
    if removals:
        calibration = _calibration_data(data, source.model, batch_size, max_samples)
        inexact = [r.path for r in removals if not r.exact and not r.in_cell]
        converted = [r.path for r in removals if r.in_cell]
        _measure(report, source.model, model, calibration, inexact, "removed", converted)
    return Result(model, report, source.origin)


def fold(
    model_or_path: ModelOrPath,
    *,
    include: Iterable[str] = (),
    exclude: Iterable[str] = (),
    data: Any = None,
    batch_size: int = 64,
    max_samples: int = 1024,
    safe_mode: bool = True,
    custom_objects: dict[str, Any] | None = None,
    flatten: bool = False,
) -> Result:
    """Fold every BatchNormalization that directly follows a dense or conv layer into that
    layer (for deployment). Those that cannot be folded stay, each with its reason."""
    from normify.passes.fold import fold_batchnorms

    source = _open(model_or_path, safe_mode, custom_objects, flatten)
    new_graph, folds, kept = fold_batchnorms(source.graph, tuple(include), tuple(exclude))
    model = _rebuild(source, new_graph, changed=bool(folds))
    report = RewriteReport("fold", source.name, folds, kept, notices=source.notices)
    if folds:
        calibration = _calibration_data(data, source.model, batch_size, max_samples)
        _measure(report, source.model, model, calibration, [], "output")
    return Result(model, report, source.origin)


def recalibrate(
    model_or_path: ModelOrPath,
    *,
    data: Any,
    include: Iterable[str] = (),
    exclude: Iterable[str] = (),
    batch_size: int = 64,
    max_samples: int = 1024,
    quiet: bool = True,
    safe_mode: bool = True,
    custom_objects: dict[str, Any] | None = None,
    flatten: bool = False,
) -> Result:
    """Recompute the exact moving mean and variance of every selected BatchNormalization
    over `data`, layer after layer, each seeing the recalibrated layers before it."""
    from normify.calibrate import recalibrate_batchnorms
    from normify.passes.fold import batchnorm_paths
    from normify.rebuild import rebuild
    from normify.rules import selected

    if data is None:
        raise NormifyError("recalibrate needs data (--data)")
    source = _open(model_or_path, safe_mode, custom_objects, flatten)
    calibration = _calibration_data(
        data, source.model, batch_size, max_samples, quiet, "recalibrating"
    )
    chosen, kept = [], []
    for path in batchnorm_paths(source.graph):
        reason = selected(path, tuple(include), tuple(exclude))
        if reason is None:
            chosen.append(path)
        else:
            kept.append(Kept(path, reason))
    model = rebuild(source.graph, share=False)  # a copy: the original stays for comparison
    report = RewriteReport("recalibrate", source.name, [], kept, notices=source.notices)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        _compile_like(source.model, model, report.notices)
    if chosen:
        report.changes = recalibrate_batchnorms(model, chosen, calibration.batches)
        _measure(report, source.model, model, calibration, [], "output")
    return Result(model, report, source.origin)


# ------------------------------------------------------------------------------ plans


def plan_swap(
    path: str | os.PathLike[str],
    *,
    from_norm: str,
    to_norm: str,
    groups: int | None = None,
    include: Iterable[str] = (),
    exclude: Iterable[str] = (),
    allow_mask_loss: bool = False,
) -> RewriteReport:
    """What `swap` would do to a model file, read from its config alone (no backend)."""
    from normify.passes.swap import swap_norms

    graph = _readable_graph(path)
    _, swaps, kept, notices = swap_norms(
        graph, from_norm, to_norm, groups=groups, include=tuple(include),
        exclude=tuple(exclude), allow_mask_loss=allow_mask_loss,
    )  # fmt: skip
    return RewriteReport("swap", str(path), swaps, kept, notices=notices)


def plan_strip(
    path: str | os.PathLike[str],
    *,
    kind: str = "all",
    include: Iterable[str] = (),
    exclude: Iterable[str] = (),
) -> RewriteReport:
    """What `strip` would do to a model file, read from its config alone (no backend)."""
    from normify.passes.strip import strip_norms

    _, removals, kept = strip_norms(_readable_graph(path), kind, tuple(include), tuple(exclude))
    return RewriteReport("strip", str(path), removals, kept)


def plan_fold(
    path: str | os.PathLike[str], *, include: Iterable[str] = (), exclude: Iterable[str] = ()
) -> RewriteReport:
    """What `fold` would do to a model file, read from its config alone (no backend)."""
    from normify.passes.fold import fold_batchnorms

    _, folds, kept = fold_batchnorms(_readable_graph(path), tuple(include), tuple(exclude))
    return RewriteReport("fold", str(path), folds, kept)


def plan_recalibrate(
    path: str | os.PathLike[str], *, include: Iterable[str] = (), exclude: Iterable[str] = ()
) -> RewriteReport:
    """Which BatchNormalizations `recalibrate` would update (config only, no backend)."""
    from normify.calibrate import PlannedRecalibration
    from normify.passes.fold import batchnorm_paths
    from normify.rules import selected

    changes, kept = [], []
    for layer_path in batchnorm_paths(_readable_graph(path)):
        reason = selected(layer_path, tuple(include), tuple(exclude))
        if reason is None:
            changes.append(PlannedRecalibration(layer_path))
        else:
            kept.append(Kept(layer_path, reason))
    return RewriteReport("recalibrate", str(path), changes, kept)


def _readable_graph(path: str | os.PathLike[str]) -> graphs.Graph:
    graph = graphs.from_config(files.read_model_file(path).config, source=path)
    _require_rewritable(graph, str(path))
    return graph


# --------------------------------------------------------------------------- plumbing


@dataclass
class _Source:
    model: Any
    graph: graphs.Graph
    name: str
    share: bool
    notices: list[str]
    origin: Origin | None = None
    flattened: bool = False


def _open(
    model_or_path: Any, safe_mode: bool, custom_objects: Any, flatten: bool = False
) -> _Source:
    """Load (or take) the model and build its graph, refusing models normify cannot rewrite.
    `model_or_path` is a model, a path, or the `ModelFile` the caller has read already.
    With `flatten`, Functional subclasses (keras-hub backbones) are read as plain graphs."""
    from normify.loading import load_model

    notices: list[str] = []
    if isinstance(model_or_path, (str, os.PathLike, files.ModelFile)):
        model_file = model_or_path
        if not isinstance(model_file, files.ModelFile):
            model_file = files.read_model_file(model_file, frozenset(custom_objects or ()))
        # A model normify cannot rewrite is refused from its config, before Keras loads it
        # (a subclass to flatten shows its graph only once loaded).
        config_graph = graphs.from_config(model_file.config, source=model_file.path)
        if not flatten:
            _require_rewritable(config_graph, str(model_file.path))
        loaded = load_model(model_file, safe_mode=safe_mode, custom_objects=custom_objects)
        model, share, name, origin = loaded.model, True, str(loaded.path), loaded.origin
        notices.extend(loaded.notices)
    else:
        model, share, name, origin = model_or_path, False, model_or_path.name, None
    graph = graphs.from_model(model, flatten=flatten)
    _require_rewritable(graph, name)
    flattened = list(graph.flattened)
    for _, spec, _ in graphs.walk_layers(graph):
        if spec.subgraph is not None:
            flattened.extend(part for part in spec.subgraph.flattened if part not in flattened)
    notices.extend(_flattened_notice(*part) for part in flattened)
    return _Source(model, graph, name, share, notices, origin, flattened=bool(flattened))


def _flattened_notice(name: str, class_name: str, module: str) -> str:
    library = kinds.library_of(module)
    needs = (
        f"its layers are {library[0]}'s registered classes, so {library[1]} must be "
        "installed to load the result"
        if library is not None
        else "its layers' classes must be importable to load the result"
    )
    return (
        f"{name}: flattened {class_name} into a plain Functional model of the same layers "
        f"and weights; the {class_name} class is gone (its constructor arguments and "
        f"methods are not kept); {needs}"
    )


def _rebuild(source: _Source, graph: graphs.Graph, changed: bool) -> Any:
    """The new model (compiled like the original), with Keras' warnings as notices."""
    from normify.rebuild import rebuild

    if not changed and source.share and not source.flattened:
        return source.model  # nothing to change in a model we loaded ourselves
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        model = rebuild(graph, share=source.share)
        _compile_like(source.model, model, source.notices)
    source.notices.extend(line for line in _warning_lines(caught) if line not in source.notices)
    return model


@dataclass
class _ShownData:
    """Calibration data whose passes show a progress bar on a terminal (unless quiet)."""

    data: Any
    description: str
    quiet: bool

    def batches(self) -> Any:
        from normify.data import progress

        return progress(self.data.batches(), len(self.data), self.description, self.quiet)


def _calibration_data(
    data: Any,
    model: Any,
    batch_size: int,
    max_samples: int,
    quiet: bool = True,
    description: str = "passing data",
) -> _ShownData | None:
    if data is None:
        return None
    from normify.data import input_specs, load_data

    label = str(data) if isinstance(data, (str, os.PathLike)) else None
    loaded = load_data(
        data, input_specs(model), batch_size=batch_size, max_samples=max_samples, path_label=label
    )
    return _ShownData(loaded, description, quiet)


def _batches(calibration: Any, model: Any) -> list[list[np.ndarray]]:
    from normify.drift import random_inputs

    if calibration is None:
        return [random_inputs(model)]
    return list(calibration.data.batches())


def _source_label(calibration: Any) -> str:
    return "random" if calibration is None else "data"


def _measure(
    report: RewriteReport,
    original: Any,
    model: Any,
    calibration: Any,
    paths: list[str],
    mode: str,
    converted: Iterable[str] = (),
) -> None:
    """Output drift, and per-layer drift: for swaps (and layers converted in place) the
    layer's output before and after, for removals what the removed layer did (its output
    against its input)."""
    from normify.drift import output_drift, tensor_drift

    batches = _batches(calibration, original)
    report.drift = output_drift(original, model, batches, _source_label(calibration))
    if paths:
        before = {path: (path, "output") for path in paths}
        if mode == "output":
            report.layer_drift = tensor_drift(original, before, model, before, batches)
        else:
            after = {path: (path, "input") for path in paths}
            report.layer_drift = tensor_drift(original, before, original, after, batches)
    if converted:
        outputs = {path: (path, "output") for path in converted}
        report.layer_drift = {
            **report.layer_drift,
            **tensor_drift(original, outputs, model, outputs, batches),
        }


def _require_rewritable(graph: graphs.Graph, name: str) -> None:
    if graph.opaque_reason is not None:
        raise UnsupportedModelError(
            f"cannot rewrite {graph.class_name}: {graph.opaque_reason}; normify rewrites "
            "Functional and Sequential models",
            name,
        )


def _compile_like(original: Any, model: Any, notices: list[str]) -> None:
    """Compile `model` as `original` was (fresh optimizer state); say what was not carried."""
    if model is original or not getattr(original, "compiled", False):
        return
    config = original.get_compile_config()
    if config is None:
        return
    try:
        model.compile_from_config(config)
    except Exception as error:
        notices.append(
            f"the model could not be compiled like the original ({error}); it is uncompiled"
        )
        return
    notices.append(COMPILED_NOTICE)


COMPILED_NOTICE = (
    "compiled with the original loss, metrics and optimizer configuration; "
    "optimizer state (moments, step count) was not carried"
)


def _warning_lines(caught: list[warnings.WarningMessage]) -> list[str]:
    lines = []
    for warning in caught:
        text = str(warning.message).strip().splitlines()
        if text and text[0] not in lines:
            lines.append(text[0])
    return lines


__all__ = [
    "AddReport",
    "NormifyError",
    "Result",
    "RewriteReport",
    "VerifyReport",
    "add",
    "audit",
    "fold",
    "plan",
    "plan_fold",
    "plan_recalibrate",
    "plan_strip",
    "plan_swap",
    "recalibrate",
    "strip",
    "swap",
    "verify",
]
