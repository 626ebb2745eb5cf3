"""The `normify` command line: parse, call the API, render, map errors to exit codes.

Exit codes: 0 success; 1 a policy violation (`audit --require`); 2 bad input or any other
error, reported as one line on stderr (the traceback only with `--debug`).
"""

from __future__ import annotations

import contextlib
import functools
import gc
import json
import os
import sys
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import click

from normify import __version__, kinds
from normify.errors import NormifyError

EXIT_VIOLATION = 1
EXIT_ERROR = 2

NORM_CHOICE = click.Choice([*kinds.INSERTABLE_NORMS, "none"])
RNN_NORM_CHOICE = click.Choice([*kinds.INSERTABLE_NORMS, kinds.LAYERNORM_CELL, "none"])
SWAP_CHOICE = click.Choice(kinds.INSERTABLE_NORMS)


def _violation_line(violation: Any, model: str = "") -> str:
    found = violation.found or "no norm"
    return (
        f"violation: {model}{violation.path} ({violation.kind}) requires "
        f"{violation.required}, has {found}"
    )


def _fail(message: str) -> None:
    click.echo(f"normify: error: {message}", err=True)
    sys.exit(EXIT_ERROR)


def reports_errors(command: Callable[..., Any]) -> Callable[..., Any]:
    """Turn every exception into one line on stderr and exit code 2 (unless --debug)."""

    @functools.wraps(command)
    def wrapper(*args: Any, debug: bool = False, **kwargs: Any) -> Any:
        try:
            return command(*args, **kwargs)
        except NormifyError as error:
            if debug:
                raise
            _fail(str(error))
        except KeyboardInterrupt:
            _fail("interrupted; nothing was written")
        except Exception as error:  # a bug or an unforeseen input: still one line
            if debug:
                raise
            text = (str(error).strip().splitlines() or [""])[0][:300]
            _fail(f"internal error: {text} (rerun with --debug for the traceback)")

    return click.option("--debug", is_flag=True, help="Show the full traceback of an error.")(
        wrapper
    )


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="normify")
def main() -> None:
    """Insert, audit and rewrite the normalization layers of saved Keras 3 models.

    \b
    normify audit model.keras                        which layers are normalized
    normify audit model.keras --require dense=any    gate a model in CI
    normify add model.keras                          BatchNorm after dense/conv,
                                                     LayerNorm after recurrent layers
    normify swap model.keras --from batchnorm --to layernorm
    normify fold model.keras                         fold BatchNorm for deployment
    normify verify model.keras model.folded.keras    prove what changed
    """


# ---------------------------------------------------------------------------- audit


def _policy(config: Path | None, no_config: bool) -> Any:
    from normify.policy import resolve_policy

    return resolve_policy(config, no_config)


# ------------------------------------------------------------------ shared options


def _options(*decorators: Callable[..., Any]) -> Callable[..., Any]:
    def apply(command: Callable[..., Any]) -> Callable[..., Any]:
        for decorator in reversed(decorators):
            command = decorator(command)
        return command

    return apply


def _output_options(suffix: str) -> Callable[..., Any]:
    return _options(
        click.option(
            "-o",
            "--output",
            type=click.Path(path_type=Path),
            help=f"Where to write the result [default: MODEL.{suffix}.keras beside MODEL].",
        ),
        click.option("--force", is_flag=True, help="Replace the output file if it exists."),
        click.option(
            "--in-place",
            is_flag=True,
            help="Replace MODEL itself, once the new file is complete and loads; the old "
            "file is kept as MODEL.bak.",
        ),
        click.option("--no-backup", is_flag=True, help="With --in-place: keep no MODEL.bak."),
        click.option("--dry-run", is_flag=True, help="Print the plan and write nothing."),
        click.option("--json", "as_json", is_flag=True, help="Print the plan or report as JSON."),
        click.option(
            "--flatten",
            is_flag=True,
            help="Rewrite a library's Functional subclass (keras-hub backbones) as a plain "
            "Functional model of the same layers; the library stays needed to load it "
            "(loads the model even with --dry-run).",
        ),
    )


SELECTION_OPTIONS = _options(
    click.option(
        "--include",
        multiple=True,
        metavar="GLOB",
        help="Only layers whose path matches (repeatable), e.g. 'encoder/*'.",
    ),
    click.option(
        "--exclude",
        multiple=True,
        metavar="GLOB",
        help="Skip layers whose path matches (repeatable).",
    ),
)

LOADING_OPTIONS = _options(
    click.option(
        "--unsafe",
        is_flag=True,
        help="Turn off Keras safe mode (allows Lambda layers with Python code).",
    ),
    click.option(
        "--custom-objects",
        "custom_object_files",
        multiple=True,
        type=click.Path(path_type=Path),
        metavar="FILE.py",
        help="Python file that defines and registers custom layers (repeatable).",
    ),
)


POLICY_OPTIONS = _options(
    click.option(
        "--config",
        type=click.Path(path_type=Path),
        metavar="FILE",
        help="Policy file to apply (a normify.toml, or a pyproject.toml with [tool.normify]) "
        "[default: the first found from the current folder up to the repository root].",
    ),
    click.option("--no-config", is_flag=True, help="Ignore any policy file."),
)


@main.command()
@click.argument("models", nargs=-1, required=True, metavar="MODEL...")
@click.option("--json", "as_json", is_flag=True, help="Print the audit as one JSON object.")
@click.option(
    "--require",
    "requirements",
    multiple=True,
    metavar="KIND=NORM",
    help="Policy to enforce, e.g. dense=batchnorm or rnn=any (repeatable; overrides the "
    "policy file's require per kind). Exit 1 and list the violating layers when a model "
    "breaks it.",
)
@click.option(
    "--strict/--no-strict",
    default=None,
    help="Do not exempt output layers from --require [default: the policy file's, else no].",
)
@click.option(
    "--load",
    is_flag=True,
    help="Load the model with Keras and audit its live graph (a library's model "
    "subclass, such as a keras-hub backbone, shows its layers only once built).",
)
@click.option(
    "--data",
    type=click.Path(path_type=Path),
    help="Run this data through the model (.npz with one array per input, or .npy) and "
    "report activation statistics, dead and saturated units, scale by depth, "
    "BatchNormalization gaps and where a norm would help.",
)
@click.option("--batch-size", type=int, default=64, show_default=True, help="Samples per batch.")
@click.option(
    "--max-samples", type=int, default=1024, show_default=True, help="Use at most this many."
)
@click.option("--quiet", is_flag=True, help="No progress bar.")
@click.option(
    "--graph",
    "graph_path",
    type=click.Path(path_type=Path),
    metavar="FILE.svg|.png|.dot",
    help="Draw the layer graph, coloured by normalization state.",
)
@click.option(
    "--compare",
    type=click.Path(path_type=Path),
    metavar="ORIGINAL",
    help="With --graph: mark what differs from ORIGINAL (inserted, changed, removed layers).",
)
@POLICY_OPTIONS
@LOADING_OPTIONS
@reports_errors
def audit(
    models: tuple[str, ...],
    as_json: bool,
    requirements: tuple[str, ...],
    strict: bool | None,
    load: bool,
    data: Path | None,
    batch_size: int,
    max_samples: int,
    quiet: bool,
    graph_path: Path | None,
    compare: Path | None,
    config: Path | None,
    no_config: bool,
    unsafe: bool,
    custom_object_files: tuple[Path, ...],
) -> None:
    """Report which dense, conv and recurrent layers are normalized, by what, and where.

    MODEL is a .keras or .h5 file, a folder (searched for them) or a glob pattern; with
    several models, one summary table is printed and the exit code is 1 when any model
    breaks the policy. Reads only the models' configs (no TensorFlow is imported),
    unless --load or --data. The policy comes from [tool.normify] in pyproject.toml or
    from normify.toml (see --config, --no-config); flags override it.
    """
    from normify.policy import parse_requirements

    policy = _policy(config, no_config)
    required = {**(policy.require if policy else {}), **parse_requirements(requirements)}
    if strict is None:
        strict = bool(policy and policy.strict)
    label = policy.describe() if policy else None
    if not _single_model(models):
        if data or graph_path or compare or load:
            raise NormifyError("--data, --graph, --compare and --load take one model")
        _audit_several(models, required, strict, label, as_json)
        return
    model = Path(models[0])
    from normify.auditing import audit as run_audit

    if load or data is not None:
        loading = _loading(unsafe, custom_object_files)
        with _backend_outside_collections():
            report = run_audit(
                model, load=load, data=data, batch_size=batch_size, max_samples=max_samples,
                quiet=quiet, **loading,
            )  # fmt: skip
    else:
        report = run_audit(model)
    report.config = label
    violations = report.violations(required, strict=strict)
    if required and report.opaque and not report.rows:
        raise NormifyError(
            "cannot check --require: the model's layers cannot be read "
            f"({report.opaque[0]['reason']})",
            model,
        )
    picture = None
    if graph_path is not None:
        before = run_audit(compare) if compare is not None else None
        picture = report.to_graph(graph_path, compare=before)
    elif compare is not None:
        raise NormifyError("--compare needs --graph FILE")
    if as_json:
        payload = report.to_json()
        if label:
            payload["config"] = label
        if required:
            payload["violations"] = [v.__dict__ for v in violations]
        if picture is not None:
            payload["graph"] = str(picture)
        click.echo(json.dumps(payload, indent=2))
    else:
        from normify.audit import render_table

        console = _console()
        render_table(report, console)
        if report.activity is not None:
            from normify.activity import render_activity

            render_activity(report.activity, console)
        for violation in violations:
            click.echo(_violation_line(violation))
        if label:
            click.echo(f"policy: {label}")
        if required and not violations:
            click.echo("policy satisfied")
        if picture is not None:
            click.echo(f"wrote {picture}")
    if violations:
        sys.exit(EXIT_VIOLATION)


def _console() -> Any:
    from rich.console import Console

    # Piped output is not wrapped at 80 columns: it is read by tools and CI logs.
    return Console() if sys.stdout.isatty() else Console(width=200)


def _single_model(models: tuple[str, ...]) -> bool:
    import glob

    from normify.files import MODEL_SUFFIXES

    if len(models) != 1 or glob.has_magic(models[0]):
        return False
    path = Path(models[0])
    # a folder of models is audited model by model; any other folder (a SavedModel) is
    # refused as a model, saying what it is
    return not path.is_dir() or not any(p.suffix.lower() in MODEL_SUFFIXES for p in path.rglob("*"))


def _audit_several(
    models: tuple[str, ...], required: dict[str, str], strict: bool, label: str | None,
    as_json: bool,
) -> None:  # fmt: skip
    from normify.auditing import audit_files

    multi = audit_files(models, require=required, strict=strict, config=label)
    if as_json:
        click.echo(json.dumps(multi.to_json(), indent=2))
    else:
        from normify.audit import render_summary_table

        render_summary_table(multi, _console())
        for entry in multi.audits:
            for violation in entry.violations:
                click.echo(_violation_line(violation, f"{entry.model}: "))
        if label:
            click.echo(f"policy: {label}")
        broken = sum(1 for entry in multi.audits if entry.status != "ok")
        if required or broken:
            click.echo(
                f"{len(multi.audits) - broken} of {len(multi.audits)} models pass"
                if required
                else f"{broken} of {len(multi.audits)} models could not be read"
            )
    if any(entry.status == "error" for entry in multi.audits):
        sys.exit(EXIT_ERROR)
    if not multi.passed:
        sys.exit(EXIT_VIOLATION)


def _data_options(required: bool = False, purpose: str = "") -> Callable[..., Any]:
    return _options(
        click.option(
            "--data",
            type=click.Path(path_type=Path),
            required=required,
            help="An .npz with one array per model input (named after the inputs, or "
            f"arr_0, arr_1, ... in input order) or an .npy for a single input{purpose}.",
        ),
        click.option(
            "--batch-size", type=int, default=64, show_default=True, help="Samples per batch."
        ),
        click.option(
            "--max-samples",
            type=int,
            default=1024,
            show_default=True,
            help="Use at most this many samples of --data.",
        ),
        click.option("--quiet", is_flag=True, help="No progress bar."),
    )


def _loading(unsafe: bool, custom_object_files: tuple[Path, ...]) -> dict[str, Any]:
    from normify.loading import load_custom_objects

    custom_objects = load_custom_objects(custom_object_files) if custom_object_files else None
    return {"safe_mode": not unsafe, "custom_objects": custom_objects}


@dataclass(frozen=True)
class _Destination:
    """Where a rewrite goes: a new file, or the input itself (--in-place)."""

    path: Path
    in_place: bool = False
    backup: bool = True


def _destination(
    model: Path,
    output: Path | None,
    force: bool,
    suffix: str,
    in_place: bool = False,
    no_backup: bool = False,
) -> _Destination:
    """Check, before any work, that the result can be written where it should go."""
    from normify.files import detect_format
    from normify.saving import check_output_path

    if in_place:
        if output is not None:
            raise NormifyError("--in-place and -o are exclusive: choose one")
        detect_format(model)
        if not os.access(model, os.W_OK) or not os.access(model.parent or Path("."), os.W_OK):
            raise NormifyError("cannot replace the model in place: not writable", model)
        return _Destination(model, in_place=True, backup=not no_backup)
    if no_backup:
        raise NormifyError("--no-backup only makes sense with --in-place")
    default = model.with_name(f"{model.stem}.{suffix}.keras")
    return _Destination(check_output_path(output or default, force=force, input_path=model))


def _save(result: Any, destination: _Destination, loading: dict[str, Any]) -> None:
    from normify.saving import save_in_place, save_model

    if destination.in_place:
        backup = save_in_place(result.model, destination.path, backup=destination.backup, **loading)
        result.report.notices.append(
            f"replaced {destination.path} in place"
            + (f"; the previous file is {backup}" if backup else " (no backup kept)")
        )
    else:
        # a model an older Keras wrote is read back before it replaces anything
        reload = True if result.origin is not None and result.origin.legacy else None
        save_model(result.model, destination.path, reload=reload, **loading)
    result.report.output = str(destination.path)
    if result.report.summary is not None:
        result.report.summary["file_bytes"]["after"] = destination.path.stat().st_size


def _rewrite(
    model: Path,
    suffix: str,
    plan: Callable[[], Any],
    run: Callable[[Any, dict[str, Any]], Any],
    options: dict[str, Any],
    printer: Callable[[Any, bool, bool], None],
) -> None:
    """What every rewriting command does: print the plan for --dry-run, or check where
    the result goes and read the file (both before any backend is imported, so a bad
    input fails at once), rewrite, save, print the report."""
    as_json = options["as_json"]
    flatten = {"flatten": options["flatten"]}
    if options["dry_run"] and options["flatten"]:
        # a subclass shows its graph only once loaded: rewrite in memory, write nothing
        loading = _loading(options["unsafe"], options["custom_object_files"])
        source = _read(model, loading)
        with _backend_outside_collections():
            printer(run(source, {**loading, **flatten}).report, as_json, True)
        return
    if options["dry_run"]:
        printer(plan(), as_json, True)
        return
    destination = _destination(
        model,
        options["output"],
        options["force"],
        suffix,
        options["in_place"],
        options["no_backup"],
    )
    loading = _loading(options["unsafe"], options["custom_object_files"])
    source = _read(model, loading)
    with _backend_outside_collections():
        result = run(source, {**loading, **flatten})
        _save(result, destination, loading)
    printer(result.report, as_json, False)


def _read(model: Path, loading: dict[str, Any]) -> Any:
    """The model file, read and checked without a backend (`normify.files.ModelFile`)."""
    from normify.files import read_model_file

    return read_model_file(model, frozenset(loading["custom_objects"] or ()))


@contextlib.contextmanager
def _backend_outside_collections() -> Iterator[None]:
    """Import Keras (quietly), and leave everything imported so far out of the garbage
    collector's full passes while the command works: each would otherwise walk all of
    TensorFlow's objects (about 270,000; 0.1 to 0.15 s a pass, and a DenseNet121 rewrite
    ran two). They are handed back afterwards (a command run in process, as in tests,
    must not keep its caller's garbage forever)."""
    from normify.backend import keras

    keras()
    gc.freeze()
    try:
        yield
    finally:
        gc.unfreeze()


def _output_and_loading(locals_: dict[str, Any]) -> dict[str, Any]:
    """The output and loading options every rewriting command takes, from its arguments."""
    keys = (
        "output", "force", "in_place", "no_backup", "dry_run", "as_json", "unsafe",
        "custom_object_files", "flatten",
    )  # fmt: skip
    return {key: locals_[key] for key in keys}


# ------------------------------------------------------------------------------ add


@main.command()
@click.argument("model", type=click.Path(path_type=Path))
@click.option(
    "--dense",
    type=NORM_CHOICE,
    default=None,
    help="Norm after dense layers [default: the policy file's, else batchnorm].",
)
@click.option(
    "--conv",
    type=NORM_CHOICE,
    default=None,
    help="Norm after convolutional layers [default: the policy file's, else batchnorm].",
)
@click.option(
    "--rnn",
    type=RNN_NORM_CHOICE,
    default=None,
    help="Norm after recurrent layers (always after their output), or layernorm-cell: "
    "replace LSTM, GRU and SimpleRNN layers by layer-normalized ones (normalization "
    "inside the cell; loading the result needs normify installed) [default: the policy "
    "file's, else layernorm].",
)
@click.option(
    "--position",
    type=click.Choice(["pre", "post"]),
    default=None,
    help="For dense and conv layers: between the linear op and its activation "
    "(pre) or after the activation (post) [default: the policy file's, else pre].",
)
@SELECTION_OPTIONS
@click.option(
    "--include-output/--no-include-output",
    default=None,
    help="Also normalize layers whose output is a model output [default: the policy "
    "file's, else no].",
)
@click.option(
    "--init",
    type=click.Choice(["identity", "calibrate", "fresh"]),
    default=None,
    help="identity: exact at inference, no data. calibrate: statistics from --data, an "
    "identity at inference and close to one in training. fresh: gamma 1, beta 0 "
    "(re-conditions the network; moving statistics from --data when given) [default: the "
    "policy file's, else identity].",
)
@_data_options(purpose=" (for --init calibrate or fresh, and drift)")
@_output_options("normified")
@POLICY_OPTIONS
@LOADING_OPTIONS
@click.option(
    "--drift/--no-drift",
    "measure_drift",
    default=None,
    help="Measure output drift [default: whenever the result is not an exact identity].",
)
@reports_errors
def add(
    model: Path,
    dense: str | None,
    conv: str | None,
    rnn: str | None,
    position: str | None,
    include: tuple[str, ...],
    exclude: tuple[str, ...],
    include_output: bool | None,
    init: str | None,
    data: Path | None,
    batch_size: int,
    max_samples: int,
    quiet: bool,
    output: Path | None,
    force: bool,
    in_place: bool,
    no_backup: bool,
    dry_run: bool,
    as_json: bool,
    unsafe: bool,
    custom_object_files: tuple[Path, ...],
    flatten: bool,
    config: Path | None,
    no_config: bool,
    measure_drift: bool | None,
) -> None:
    """Insert norm layers after dense, conv and recurrent layers, keeping every weight.

    An inserted BatchNormalization starts as an identity at inference, so the new model
    predicts what the old one did. The input file is never modified. Defaults for the
    rules come from [tool.normify.add] in pyproject.toml or normify.toml; flags override.
    """
    from normify import api
    from normify.rules import Rules

    policy = _policy(config, no_config)
    given = {
        "dense": dense, "conv": conv, "rnn": rnn, "position": position,
        "include": include or None, "exclude": exclude or None,
        "include_output": include_output, "init": init,
    }  # fmt: skip
    chosen = {**ADD_DEFAULTS, **(policy.add if policy else {})}
    chosen.update({key: value for key, value in given.items() if value is not None})
    dense, conv, rnn, position = chosen["dense"], chosen["conv"], chosen["rnn"], chosen["position"]
    include, exclude = tuple(chosen["include"]), tuple(chosen["exclude"])
    include_output, init = chosen["include_output"], chosen["init"]
    policy_notice = (
        [f"rules from {policy.describe()}: {_describe_add(policy.add)}"]
        if policy and policy.add
        else []
    )

    def noticed(report: Any) -> Any:
        report.notices[:0] = policy_notice
        return report

    rules = Rules(dense, conv, rnn, position, include, exclude, include_output)
    _rewrite(
        model,
        "normified",
        plan=lambda: noticed(api.plan(model, rules)),
        run=lambda source, loading: _with_report(api.add(
            source, dense=dense, conv=conv, rnn=rnn, position=position, include=include,
            exclude=exclude, include_output=include_output, init=init, data=data,
            batch_size=batch_size, max_samples=max_samples, quiet=quiet,
            measure_drift=measure_drift, **loading,
        ), noticed),
        options=_output_and_loading(locals()),
        printer=_print_report,
    )  # fmt: skip


ADD_DEFAULTS: dict[str, Any] = {
    "dense": "batchnorm", "conv": "batchnorm", "rnn": "layernorm", "position": "pre",
    "include": (), "exclude": (), "include_output": False, "init": "identity",
}  # fmt: skip


def _describe_add(rules: dict[str, Any]) -> str:
    return ", ".join(
        f"{key.replace('_', '-')}={','.join(value) if isinstance(value, tuple) else value}"
        for key, value in rules.items()
    )


def _with_report(result: Any, change: Callable[[Any], Any]) -> Any:
    change(result.report)
    return result


def _print_report(report: Any, as_json: bool, dry_run: bool) -> None:
    from normify.reports import render

    report.dry_run = dry_run
    if as_json:
        click.echo(json.dumps(report.to_json(), indent=2))
        return
    for line in render(report):
        click.echo(line)


# ------------------------------------------------------------- swap, strip, fold


@main.command()
@click.argument("model", type=click.Path(path_type=Path))
@click.option(
    "--from",
    "from_norm",
    required=True,
    type=SWAP_CHOICE,
    help="Class of the norm layers to replace.",
)
@click.option(
    "--to",
    "to_norm",
    required=True,
    type=SWAP_CHOICE,
    help="Class to replace them with.",
)
@click.option(
    "--groups",
    type=click.IntRange(min=1),
    help="Groups for GroupNormalization [default: the largest divisor of the channel count "
    "that is at most 32].",
)
@click.option(
    "--allow-mask-loss",
    is_flag=True,
    help="Swap to rmsnorm even where a mask flows (RMSNormalization destroys masks).",
)
@SELECTION_OPTIONS
@_data_options(purpose=" (fits the new layers to the old ones' outputs)")
@_output_options("swapped")
@LOADING_OPTIONS
@reports_errors
def swap(
    model: Path, from_norm: str, to_norm: str, groups: int | None, allow_mask_loss: bool,
    include: tuple[str, ...], exclude: tuple[str, ...], data: Path | None, batch_size: int,
    max_samples: int, quiet: bool, output: Path | None, force: bool, in_place: bool,
    no_backup: bool, dry_run: bool, as_json: bool, unsafe: bool,
    custom_object_files: tuple[Path, ...], flatten: bool,
) -> None:  # fmt: skip
    """Replace norm layers of one class by another (--from batchnorm --to layernorm).

    Names, axes and epsilon are kept; gamma and beta are carried where the shapes match.
    No swap is exact: the report gives each swapped layer's drift and the model's.
    """
    from normify import api

    _rewrite(
        model,
        "swapped",
        plan=lambda: api.plan_swap(
            model, from_norm=from_norm, to_norm=to_norm, groups=groups, include=include,
            exclude=exclude, allow_mask_loss=allow_mask_loss,
        ),
        run=lambda source, loading: api.swap(
            source, from_norm=from_norm, to_norm=to_norm, groups=groups, include=include,
            exclude=exclude, data=data, allow_mask_loss=allow_mask_loss,
            batch_size=batch_size, max_samples=max_samples, quiet=quiet, **loading,
        ),
        options=_output_and_loading(locals()),
        printer=_print_report,
    )  # fmt: skip


@main.command()
@click.argument("model", type=click.Path(path_type=Path))
@click.option(
    "--kind",
    type=click.Choice([*kinds.NORM_NAMES, kinds.LAYERNORM_CELL, "all"]),
    default="all",
    show_default=True,
    help="Which norm layers to remove. Recurrent layers normalized in their cells "
    "(layernorm-cell; also converted by layernorm and all) become stock layers again.",
)
@SELECTION_OPTIONS
@_data_options(purpose=" (to measure the drift)")
@_output_options("stripped")
@LOADING_OPTIONS
@reports_errors
def strip(
    model: Path, kind: str, include: tuple[str, ...], exclude: tuple[str, ...],
    data: Path | None, batch_size: int, max_samples: int, quiet: bool, output: Path | None,
    force: bool, in_place: bool, no_backup: bool, dry_run: bool, as_json: bool,
    unsafe: bool,
    custom_object_files: tuple[Path, ...],
    flatten: bool,
) -> None:  # fmt: skip
    """Remove norm layers. A BatchNormalization right after a linear layer is folded into
    it first, so inference is unchanged; every other removal's drift is reported."""
    from normify import api

    _rewrite(
        model,
        "stripped",
        plan=lambda: api.plan_strip(model, kind=kind, include=include, exclude=exclude),
        run=lambda source, loading: api.strip(
            source, kind=kind, include=include, exclude=exclude, data=data,
            batch_size=batch_size, max_samples=max_samples, **loading,
        ),
        options=_output_and_loading(locals()),
        printer=_print_report,
    )  # fmt: skip


@main.command()
@click.argument("model", type=click.Path(path_type=Path))
@SELECTION_OPTIONS
@_data_options(purpose=" (to measure the drift)")
@_output_options("folded")
@LOADING_OPTIONS
@reports_errors
def fold(
    model: Path, include: tuple[str, ...], exclude: tuple[str, ...], data: Path | None,
    batch_size: int, max_samples: int, quiet: bool, output: Path | None, force: bool,
    in_place: bool, no_backup: bool, dry_run: bool, as_json: bool, unsafe: bool,
    custom_object_files: tuple[Path, ...],
    flatten: bool,
) -> None:  # fmt: skip
    """Fold every BatchNormalization that directly follows a dense or conv layer into it.

    For deployment: inference is unchanged (within float rounding) and faster. Those
    that cannot be folded (after an activation, after an Add, shared) stay, with the reason.
    """
    from normify import api

    _rewrite(
        model,
        "folded",
        plan=lambda: api.plan_fold(model, include=include, exclude=exclude),
        run=lambda source, loading: api.fold(
            source, include=include, exclude=exclude, data=data, batch_size=batch_size,
            max_samples=max_samples, **loading,
        ),
        options=_output_and_loading(locals()),
        printer=_print_report,
    )  # fmt: skip


@main.command()
@click.argument("model", type=click.Path(path_type=Path))
@SELECTION_OPTIONS
@_data_options(required=True)
@_output_options("recalibrated")
@LOADING_OPTIONS
@reports_errors
def recalibrate(
    model: Path, include: tuple[str, ...], exclude: tuple[str, ...], data: Path,
    batch_size: int, max_samples: int, quiet: bool, output: Path | None, force: bool,
    in_place: bool, no_backup: bool, dry_run: bool, as_json: bool, unsafe: bool,
    custom_object_files: tuple[Path, ...],
    flatten: bool,
) -> None:  # fmt: skip
    """Recompute the exact moving statistics of every BatchNormalization over --data.

    A cumulative average over all batches, not a momentum update, layer after layer so
    each sees the recalibrated layers before it: repairs statistics that lag after
    fine-tuning.
    """
    from normify import api

    _rewrite(
        model,
        "recalibrated",
        plan=lambda: api.plan_recalibrate(model, include=include, exclude=exclude),
        run=lambda source, loading: api.recalibrate(
            source, data=data, include=include, exclude=exclude, batch_size=batch_size,
            max_samples=max_samples, quiet=quiet, **loading,
        ),
        options=_output_and_loading(locals()),
        printer=_print_report,
    )  # fmt: skip


# ---------------------------------------------------------------------------- verify


@main.command()
@click.argument("original", type=click.Path(path_type=Path))
@click.argument("rewritten", type=click.Path(path_type=Path))
@click.option(
    "--tolerance",
    type=float,
    help="Exit 1 when the relative output drift exceeds this (e.g. 1e-5).",
)
@click.option("--json", "as_json", is_flag=True, help="Print the comparison as JSON.")
@_data_options(purpose=" (else random inputs from the input spec)")
@LOADING_OPTIONS
@reports_errors
def verify(
    original: Path, rewritten: Path, tolerance: float | None, as_json: bool,
    data: Path | None, batch_size: int, max_samples: int, quiet: bool, unsafe: bool,
    custom_object_files: tuple[Path, ...],
) -> None:  # fmt: skip
    """Compare a rewritten model with its original: which weights were carried bit for
    bit, changed, moved or removed, which layers were added or removed, and the output
    drift."""
    from normify.verify import render
    from normify.verify import verify as run_verify

    report = run_verify(
        original, rewritten, data=data, tolerance=tolerance, batch_size=batch_size,
        max_samples=max_samples, **_loading(unsafe, custom_object_files),
    )  # fmt: skip
    if as_json:
        click.echo(json.dumps(report.to_json(), indent=2))
    else:
        for line in render(report):
            click.echo(line)
    if not report.passed:
        sys.exit(EXIT_VIOLATION)


if __name__ == "__main__":  # pragma: no cover
    main()
