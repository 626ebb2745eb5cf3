"""The `normify` command line: parse, call the API, render, map errors to exit codes.

Exit codes: 0 success; 1 a policy violation (`audit --require`); 2 bad input or any other
error, reported as one line on stderr (the traceback only with `--debug`).
"""

from __future__ import annotations

import functools
import json
import sys
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import Any

import click

from normify import __version__
from normify.errors import NormifyError

EXIT_VIOLATION = 1
EXIT_ERROR = 2

NORM_CHOICE = click.Choice(["batchnorm", "layernorm", "groupnorm", "rmsnorm", "none"])
REQUIRE_NORMS = ("batchnorm", "layernorm", "groupnorm", "rmsnorm", "unitnorm", "any")


def _fail(message: str) -> None:
    click.echo(f"normify: error: {message}", err=True)
    sys.exit(EXIT_ERROR)


def reports_errors(command: Callable[..., Any]) -> Callable[..., Any]:
    """Turn every exception into one line on stderr and exit code 2 (unless --debug)."""

    @functools.wraps(command)
    def wrapper(*args: Any, debug: bool = False, **kwargs: Any) -> Any:
        warnings.simplefilter("ignore")
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
            _fail(f"{type(error).__name__}: {text} (rerun with --debug for the traceback)")

    return click.option("--debug", is_flag=True, help="Show the full traceback of an error.")(
        wrapper
    )


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="normify")
def main() -> None:
    """Insert, audit and rewrite the normalization layers of saved Keras 3 models.

    \b
    normify audit model.keras                       which layers are normalized
    normify audit model.keras --require dense=batchnorm   gate a model in CI
    normify add model.keras                         BatchNorm after dense/conv,
                                                    LayerNorm after recurrent layers
    """


# ---------------------------------------------------------------------------- audit


def _parse_requirements(values: tuple[str, ...]) -> dict[str, str]:
    requirements = {}
    for value in values:
        kind, separator, norm = value.partition("=")
        if not separator or kind not in ("dense", "conv", "rnn") or norm not in REQUIRE_NORMS:
            raise NormifyError(
                f"--require {value!r}: expected KIND=NORM with KIND one of dense, conv, rnn "
                f"and NORM one of {', '.join(REQUIRE_NORMS)}"
            )
        requirements[kind] = norm
    return requirements


@main.command()
@click.argument("model", type=click.Path(path_type=Path))
@click.option("--json", "as_json", is_flag=True, help="Print the audit as one JSON object.")
@click.option(
    "--require",
    "requirements",
    multiple=True,
    metavar="KIND=NORM",
    help="Policy to enforce, e.g. dense=batchnorm or rnn=any (repeatable). "
    "Exit 1 and list the violating layers when the model breaks it.",
)
@click.option("--strict", is_flag=True, help="Do not exempt output layers from --require.")
@reports_errors
def audit(model: Path, as_json: bool, requirements: tuple[str, ...], strict: bool) -> None:
    """Report which dense, conv and recurrent layers are normalized, by what, and where.

    Reads only the model's config: no TensorFlow is imported.
    """
    from normify.api import audit as run_audit

    required = _parse_requirements(requirements)
    report = run_audit(model)
    violations = report.violations(required, strict=strict)
    if required and report.opaque and not report.rows:
        raise NormifyError(
            "cannot check --require: the model's layers cannot be read "
            f"({report.opaque[0]['reason']})",
            model,
        )
    if as_json:
        payload = report.to_json()
        if required:
            payload["violations"] = [v.__dict__ for v in violations]
        click.echo(json.dumps(payload, indent=2))
    else:
        from rich.console import Console

        from normify.audit import render_table

        # Piped output is not wrapped at 80 columns: it is read by tools and CI logs.
        render_table(report, Console() if sys.stdout.isatty() else Console(width=200))
        for violation in violations:
            found = violation.found or "no norm"
            click.echo(
                f"violation: {violation.path} ({violation.kind}) requires "
                f"{violation.required}, has {found}"
            )
        if required and not violations:
            click.echo("policy satisfied")
    if violations:
        sys.exit(EXIT_VIOLATION)


# ------------------------------------------------------------------------------ add


@main.command()
@click.argument("model", type=click.Path(path_type=Path))
@click.option(
    "-o",
    "--output",
    type=click.Path(path_type=Path),
    help="Where to write the result [default: MODEL.normified.keras beside MODEL].",
)
@click.option(
    "--dense",
    type=NORM_CHOICE,
    default="batchnorm",
    show_default=True,
    help="Norm after dense layers.",
)
@click.option(
    "--conv",
    type=NORM_CHOICE,
    default="batchnorm",
    show_default=True,
    help="Norm after convolutional layers.",
)
@click.option(
    "--rnn",
    type=NORM_CHOICE,
    default="layernorm",
    show_default=True,
    help="Norm after recurrent layers (always after their output).",
)
@click.option(
    "--position",
    type=click.Choice(["pre", "post"]),
    default="pre",
    show_default=True,
    help="For dense and conv layers: between the linear op and its activation "
    "(pre) or after the activation (post).",
)
@click.option(
    "--include",
    multiple=True,
    metavar="GLOB",
    help="Only layers whose path matches (repeatable), e.g. 'encoder/*'.",
)
@click.option(
    "--exclude", multiple=True, metavar="GLOB", help="Skip layers whose path matches (repeatable)."
)
@click.option(
    "--include-output", is_flag=True, help="Also normalize layers whose output is a model output."
)
@click.option("--dry-run", is_flag=True, help="Print the plan and write nothing.")
@click.option("--json", "as_json", is_flag=True, help="Print the plan or report as JSON.")
@click.option("--force", is_flag=True, help="Replace the output file if it exists.")
@click.option(
    "--unsafe",
    is_flag=True,
    help="Turn off Keras safe mode (allows Lambda layers with Python code).",
)
@click.option(
    "--custom-objects",
    "custom_object_files",
    multiple=True,
    type=click.Path(path_type=Path),
    metavar="FILE.py",
    help="Python file that defines and registers custom layers (repeatable).",
)
@click.option(
    "--drift/--no-drift",
    "measure_drift",
    default=None,
    help="Measure output drift on random inputs [default: only for norms that "
    "cannot start as an identity].",
)
@reports_errors
def add(
    model: Path,
    output: Path | None,
    dense: str,
    conv: str,
    rnn: str,
    position: str,
    include: tuple[str, ...],
    exclude: tuple[str, ...],
    include_output: bool,
    dry_run: bool,
    as_json: bool,
    force: bool,
    unsafe: bool,
    custom_object_files: tuple[Path, ...],
    measure_drift: bool | None,
) -> None:
    """Insert norm layers after dense, conv and recurrent layers, keeping every weight.

    An inserted BatchNormalization starts as an exact identity at inference, so the new
    model predicts what the old one did. The input file is never modified.
    """
    from normify import api, io
    from normify.rules import Rules

    rules = Rules(dense, conv, rnn, position, include, exclude, include_output)
    if dry_run:
        report = api.plan(model, rules)
        _print_add_report(report, as_json, dry_run=True)
        return
    output = io.check_output_path(
        output or io.default_output_path(model), force=force, input_path=model
    )
    custom_objects = io.load_custom_objects(custom_object_files) if custom_object_files else None
    result = api.add(
        model,
        dense=dense,
        conv=conv,
        rnn=rnn,
        position=position,
        include=include,
        exclude=exclude,
        include_output=include_output,
        measure_drift=measure_drift,
        safe_mode=not unsafe,
        custom_objects=custom_objects,
    )
    io.save_model(result.model, output)
    result.report.output = str(output)
    _print_add_report(result.report, as_json, dry_run=False)


def _print_add_report(report: Any, as_json: bool, dry_run: bool) -> None:
    if as_json:
        payload = report.to_json()
        payload["dry_run"] = dry_run
        click.echo(json.dumps(payload, indent=2))
        return
    for insertion in report.insertions:
        extra = []
        if insertion.activation_layer:
            extra.append(f"activation moved to {insertion.activation_layer}")
        if insertion.bias_moved:
            extra.append("bias moved into beta")
        if insertion.renamed:
            extra.append(
                f"{insertion.renamed[0]} renamed {insertion.renamed[1]} to keep the output name"
            )
        note = f" ({'; '.join(extra)})" if extra else ""
        click.echo(
            f"insert {insertion.name} ({insertion.norm_class}, axis {insertion.axis}) "
            f"after {insertion.target}, {insertion.position}{note}"
        )
    for skip in report.skipped:
        click.echo(f"skip   {skip.path}: {skip.reason}")
    for notice in report.notices:
        click.echo(f"note: {notice}")
    if report.drift is not None:
        drift = report.drift
        click.echo(
            f"drift on {drift['samples']} random inputs: max abs {drift['max_abs']:.3g}, "
            f"relative {drift['relative']:.3g}"
        )
    count = len(report.insertions)
    if dry_run:
        click.echo(f"dry run: {count} norm layer(s) would be inserted; nothing written")
    elif count == 0:
        click.echo(f"nothing to insert; wrote an unchanged copy to {report.output}")
    else:
        click.echo(f"wrote {report.output} ({count} norm layer(s) inserted)")


if __name__ == "__main__":  # pragma: no cover
    main()
