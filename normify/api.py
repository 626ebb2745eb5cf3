"""The public Python API: `audit`, `add`, `swap`, `strip`, `fold`, `recalibrate`, `verify`.

Every function accepts a path to a `.keras` / `.h5` file or an in-memory `keras.Model`,
and never modifies a model it is given. Nothing here prints.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import numpy as np

import importlib
import os
import warnings
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from normify import files, kinds
from normify import graph as graphs
from normify.audit import AuditReport, audit_graph
from normify.auditing import ModelOrPath, audit, audit_files
from normify.errors import ModelLoadError, NormifyError, UnsupportedModelError
from normify.flow import build_flow
from normify.passes import Kept, PassResult
from normify.passes.add import Insertion, add_norms
from normify.reports import PlannedRecalibration, Report
from normify.rules import IN_CELL, Rules, decide

if TYPE_CHECKING:
    from normify.formats import Origin
    from normify.verify import VerifyReport, verify


def __getattr__(name: str) -> Any:
    # `verify` and its report are part of this API, imported (with hashlib) on first use.
    if name in ("verify", "VerifyReport"):
        return getattr(importlib.import_module("normify.verify"), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


@dataclass
class Result:
    """The rewritten model and the report of what was done to it. `origin` is which Keras
    wrote the file the model was read from (None for a model passed in)."""

    model: Any
    report: Report
    origin: Origin | None = None


def _audit_with_data(
    model_or_path: ModelOrPath,
    data: Any,
    batch_size: int,
    max_samples: int,
    quiet: bool,
    safe_mode: bool,
    custom_objects: dict[str, Any] | None,
    load: bool,
) -> AuditReport:
    """The audit of the live model, with the activity the data shows inside it."""
    from normify.activity import measure

    if isinstance(model_or_path, (str, os.PathLike)):
        from normify.loading import load_model

        model = load_model(model_or_path, safe_mode=safe_mode, custom_objects=custom_objects).model
        name, flatten = str(model_or_path), True
    else:
        model, name, flatten = model_or_path, None, load
    graph = graphs.from_model(model, flatten=flatten)
    report = audit_graph(graph, model_name=name)
    calibration = _calibration_data(
        data, model, batch_size, max_samples, quiet, "passing data through the model"
    )
    if calibration is None:
        raise NormifyError("audit from data needs data to pass through the model")
    report.activity = measure(
        model, graph, report.rows, calibration.batches, calibration.data.samples
    )
    return report


def plan(
    model_or_path: ModelOrPath,
    rules: Rules | None = None,
) -> Report:
    """The `add` plan (insertions and skips) without building anything.

    For a path this reads the config only, without a Keras backend.
    """
    rules = rules or Rules()
    if isinstance(model_or_path, (str, os.PathLike)):
        graph, name = _readable_graph(model_or_path), str(model_or_path)
    else:
        graph = graphs.from_model(model_or_path)
        name = graph.name
        _require_rewritable(graph, name)
    planned = add_norms(graph, decide(graph, build_flow(graph), rules), rules)
    return Report("add", name, planned.changes, planned.kept, dry_run=True)


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
        model_or_path: a `keras.Model`, a path to a `.keras` or `.h5` file, or the
            `normify.files.ModelFile` read from one.
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
    model_file = model_or_path if isinstance(model_or_path, files.ModelFile) else None
    if isinstance(model_or_path, (str, os.PathLike)):
        model_file = files.read_model_file(model_or_path, frozenset(custom_objects or ()))
    # One way through, chosen before any planning: straight from the file when nothing
    # needs the original model afterwards, else through Keras's loader.
    if model_file is not None and builds_from_file(
        model_file, rules, init=init, data=data, measure_drift=measure_drift, flatten=flatten
    ):
        source = _from_file(model_file)
    else:
        source = _open(model_file or model_or_path, safe_mode, custom_objects, flatten)
    planned = add_norms(source.graph, decide(source.graph, build_flow(source.graph), rules), rules)
    insertions = planned.changes
    model = _build(source, planned.graph, bool(insertions), safe_mode, custom_objects)
    report = Report("add", source.name, insertions, planned.kept, notices=source.notices, init=init)
    report.notices.extend(f"{i.path}: {i.note}" for i in insertions if i.note)
    calibration = _calibration_data(
        data, source.model, batch_size, max_samples, quiet, "calibrating inserted norms"
    )
    # A converted recurrent layer's norms start at gamma 1, beta 0: there are no moving
    # statistics to calibrate inside a cell.
    paths = [insertion.name for insertion in insertions if insertion.position != kinds.IN_CELL]
    if init != "identity" and paths:
        from normify.calibrate import initialize_from_data

        if calibration is not None:
            initialize_from_data(model, paths, calibration.batches, init)
        else:
            _fresh_without_data(model, paths)
    report.notices.extend(_not_identity_notices(insertions, init))
    inexact = [i for i in insertions if not i.exact] if init == "identity" else insertions
    if measure_drift or (measure_drift is None and inexact):
        from normify.drift import output_drift, tensor_drift

        batches = _batches(calibration, source.model)
        report.drift = output_drift(source.model, model, batches, _source_label(calibration))
        # each insertion: the tensor its chain now produces against the one it stands in for
        before = {i.path: (i.replaces, "output") for i in insertions}
        after = {i.path: (i.chain_end, "output") for i in insertions}
        report.layer_drift = tensor_drift(source.model, before, model, after, batches)
    report.summary = _summary(source, planned.graph, model, report.drift)
    return Result(model, report, source.origin)


def _not_identity_notices(insertions: list[Insertion], init: str) -> list[str]:
    notices = []
    if any(i.position == kinds.IN_CELL for i in insertions):
        notices.append(
            "layer normalization inside a recurrent cell cannot start as an identity: "
            "predictions change until retraining (see drift); loading the result needs "
            "normify installed (import normify registers its layers with Keras)"
        )
    not_identity = sorted(
        {i.norm_class for i in insertions if i.norm not in ("batchnorm", IN_CELL)}
    )
    if init == "fresh":
        notices.append(
            "--init fresh is not an identity at inference: predictions change until "
            "retraining (see drift)"
        )
    elif not_identity:
        notices.append(
            f"{', '.join(not_identity)} cannot start as an identity: predictions change "
            "until retraining (see drift)"
        )
    return notices


INITS = ("identity", "calibrate", "fresh")


def builds_from_file(
    model_file: files.ModelFile,
    rules: Rules,
    *,
    init: str = "identity",
    data: Any = None,
    measure_drift: bool | None = None,
    flatten: bool = False,
) -> bool:
    """Whether `add` builds its result straight from the file (its config and stored
    weights, `normify.weightfile`) instead of loading the model with Keras first: when
    nothing needs the original model afterwards. Decided before any planning, from the
    file and the options: a Keras 3 archive of config and weights only; an identity init
    and no data; no drift to measure, which means every norm the rules could insert is an
    exact identity (BatchNormalization); no model subclass to flatten; and no
    channels_first convolution, whose moved bias may be one Keras misapplies (only the
    live model's shapes tell)."""
    from normify.weightfile import readable

    if not readable(model_file) or init != "identity" or data is not None:
        return False
    if measure_drift or flatten:
        return False
    present = _kinds_in_config(model_file.config)
    if any(
        rules.norm_for(kind) not in ("batchnorm", "none") for kind in present - {"channels_first"}
    ):
        return False
    return "channels_first" not in present


def _kinds_in_config(config: dict[str, Any]) -> set[str]:
    """The target kinds (dense, conv, rnn) of a config's layers, and `channels_first`
    when a layer computes channels first."""
    from normify.formats.base import walk_entries

    found = set()
    for entry in walk_entries(config):
        inner = entry["config"]
        if not isinstance(inner, dict):
            continue
        kind = kinds.classify(entry["class_name"], entry.get("module"), inner)
        if kind in kinds.TARGET_KINDS:
            found.add(kind)
        if inner.get("data_format") == "channels_first":
            found.add("channels_first")
    return found


def _from_file(model_file: files.ModelFile) -> _Source:
    """The model's graph from its config, its weights to be read from the file."""
    graph = graphs.from_config(model_file.config, source=model_file.path)
    _require_rewritable(graph, str(model_file.path))
    return _Source(
        None, graph, str(model_file.path), True, list(model_file.notices), model_file.origin,
        model_file=model_file,
    )  # fmt: skip


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
        planned = swap_norms(
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
        raise NormifyError(str(error), source.name) from error
    swaps = planned.changes
    model = _build(source, planned.graph, bool(swaps), safe_mode, custom_objects)
    report = Report(
        "swap", source.name, swaps, planned.kept, notices=source.notices + planned.notices
    )
    calibration = _calibration_data(
        data, source.model, batch_size, max_samples, quiet, "fitting swapped norms"
    )
    paths = [replacement.path for replacement in swaps]
    if paths and calibration is not None:
        from normify.calibrate import fit_replacements

        fit_replacements(source.model, model, paths, calibration.batches)
    if paths:
        _measure(report, source.model, model, calibration, paths, "output")
    report.summary = _summary(source, planned.graph, model, report.drift)
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
    planned = strip_norms(source.graph, kind, tuple(include), tuple(exclude))
    removals = planned.changes
    model = _build(source, planned.graph, bool(removals), safe_mode, custom_objects)
    report = Report("strip", source.name, removals, planned.kept, notices=source.notices)
    if removals:
        calibration = _calibration_data(data, source.model, batch_size, max_samples)
        inexact = [r.path for r in removals if not r.exact and not r.in_cell]
        converted = [r.path for r in removals if r.in_cell]
        _measure(report, source.model, model, calibration, inexact, "removed", converted)
    report.summary = _summary(source, planned.graph, model, report.drift)
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
    planned = fold_batchnorms(source.graph, tuple(include), tuple(exclude))
    folds = planned.changes
    model = _build(source, planned.graph, bool(folds), safe_mode, custom_objects)
    report = Report("fold", source.name, folds, planned.kept, notices=source.notices)
    if folds:
        calibration = _calibration_data(data, source.model, batch_size, max_samples)
        _measure(report, source.model, model, calibration, [], "output")
    report.summary = _summary(source, planned.graph, model, report.drift)
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
    calibration = _shown_data(data, source.model, batch_size, max_samples, quiet, "recalibrating")
    chosen, kept = [], []
    for path in batchnorm_paths(source.graph):
        reason = selected(path, tuple(include), tuple(exclude))
        if reason is None:
            chosen.append(path)
        else:
            kept.append(Kept(path, reason))
    model = rebuild(source.graph, share=False)  # a copy: the original stays for comparison
    report = Report("recalibrate", source.name, [], kept, notices=source.notices)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        _compile_like(source.model, model, report.notices)
    if chosen:
        report.changes = recalibrate_batchnorms(model, chosen, calibration.batches)
        _measure(report, source.model, model, calibration, [], "output")
    report.summary = _summary(source, source.graph, model, report.drift)
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
) -> Report:
    """What `swap` would do to a model file, read from its config alone (no backend)."""
    from normify.passes.swap import swap_norms

    planned = swap_norms(
        _readable_graph(path), from_norm, to_norm, groups=groups, include=tuple(include),
        exclude=tuple(exclude), allow_mask_loss=allow_mask_loss,
    )  # fmt: skip
    return _plan_report("swap", path, planned)


def plan_strip(
    path: str | os.PathLike[str],
    *,
    kind: str = "all",
    include: Iterable[str] = (),
    exclude: Iterable[str] = (),
) -> Report:
    """What `strip` would do to a model file, read from its config alone (no backend)."""
    from normify.passes.strip import strip_norms

    planned = strip_norms(_readable_graph(path), kind, tuple(include), tuple(exclude))
    return _plan_report("strip", path, planned)


def plan_fold(
    path: str | os.PathLike[str], *, include: Iterable[str] = (), exclude: Iterable[str] = ()
) -> Report:
    """What `fold` would do to a model file, read from its config alone (no backend)."""
    from normify.passes.fold import fold_batchnorms

    planned = fold_batchnorms(_readable_graph(path), tuple(include), tuple(exclude))
    return _plan_report("fold", path, planned)


def plan_recalibrate(
    path: str | os.PathLike[str], *, include: Iterable[str] = (), exclude: Iterable[str] = ()
) -> Report:
    """Which BatchNormalizations `recalibrate` would update (config only, no backend)."""
    from normify.passes.fold import batchnorm_paths
    from normify.rules import selected

    changes, kept = [], []
    for layer_path in batchnorm_paths(_readable_graph(path)):
        reason = selected(layer_path, tuple(include), tuple(exclude))
        if reason is None:
            changes.append(PlannedRecalibration(layer_path))
        else:
            kept.append(Kept(layer_path, reason))
    return Report("recalibrate", str(path), changes, kept, dry_run=True)


def _plan_report(command: str, path: str | os.PathLike[str], planned: PassResult) -> Report:
    return Report(
        command, str(path), planned.changes, planned.kept, notices=planned.notices, dry_run=True
    )


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
    model_file: files.ModelFile | None = None  # set when the result is built from the file


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


def _build(
    source: _Source, graph: graphs.Graph, changed: bool, safe_mode: bool, custom_objects: Any
) -> Any:
    """The new model, compiled like the original: built from the file's config and weights
    (`_from_file`), or from the loaded model's layers; a model loaded here with nothing to
    change is returned as it is."""
    from normify.rebuild import RebuildError

    try:
        return _rebuilt(source, graph, changed, safe_mode, custom_objects)
    except RebuildError as error:
        if error.path is not None:
            raise
        raise RebuildError(str(error), source.name) from error


def _rebuilt(
    source: _Source, graph: graphs.Graph, changed: bool, safe_mode: bool, custom_objects: Any
) -> Any:
    from normify.rebuild import rebuild

    if source.model_file is not None:
        from normify.weightfile import WeightFile

        model_file = source.model_file
        compile_config = model_file.config.get("compile_config")
        try:
            with WeightFile(model_file.path, source.graph, safe_mode, custom_objects) as weights:
                with warnings.catch_warnings():
                    warnings.simplefilter("ignore")  # Keras's notices of its own, not ours
                    model = rebuild(graph, weights=weights)
            if compile_config:
                _compile_from_file(model, compile_config, source.notices)
        except NormifyError:
            raise
        except Exception as error:  # Keras cannot build a layer of the file: say which
            from normify.loading import load_failure

            message = load_failure(model_file.config, error, custom_objects, safe_mode)
            raise ModelLoadError(message, source.name) from error
        return model
    if not changed and source.share and not source.flattened:
        return source.model  # nothing to change in a model we loaded ourselves
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # Keras's notices of its own, not ours
        model = rebuild(graph, share=source.share)
        _compile_like(source.model, model, source.notices)
    return model


def _compile_from_file(model: Any, compile_config: Any, notices: list[str]) -> None:
    from normify.loading import uncompiled_notice

    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # Keras's notices of its own, not ours
            model.compile_from_config(compile_config)
    except Exception as error:  # an unregistered loss or metric: the layers need none
        notices.append(uncompiled_notice(error))
    else:
        notices.append(COMPILED_NOTICE)


def _summary(source: _Source, after: graphs.Graph, model: Any, drift: Any) -> dict[str, Any]:
    """The before/after table of a rewrite: layers by class (where they differ),
    parameters, file size (the output's is filled in once written) and output drift."""
    if source.model is not None:
        before_params = source.model.count_params()
    elif source.model_file is not None:
        before_params = source.model_file.parameters
    else:  # `_open` sets one or the other
        raise RuntimeError("the source holds neither a model nor a model file")
    return {
        "layers": {"before": _class_counts(source.graph), "after": _class_counts(after)},
        "parameters": {"before": before_params, "after": model.count_params()},
        "file_bytes": {
            "before": Path(source.name).stat().st_size
            if source.share and Path(source.name).is_file()
            else None,
            "after": None,
        },
        "output_drift": drift["relative"] if drift else None,
    }


def _class_counts(graph: graphs.Graph) -> dict[str, int]:
    counts: dict[str, int] = {}
    for _, spec, _ in graphs.walk_layers(graph):
        if spec.kind not in (kinds.INPUT, kinds.OP):
            counts[spec.class_name] = counts.get(spec.class_name, 0) + 1
    return dict(sorted(counts.items()))


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
    return _shown_data(data, model, batch_size, max_samples, quiet, description)


def _shown_data(
    data: Any, model: Any, batch_size: int, max_samples: int, quiet: bool, description: str
) -> _ShownData:
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
    report: Report,
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


__all__ = [
    "NormifyError",
    "Report",
    "Result",
    "VerifyReport",
    "add",
    "audit",
    "audit_files",
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
