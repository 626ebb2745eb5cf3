"""Benchmark: is `normify audit` fast because it never imports TensorFlow?

`normify audit` promises to read only a model's config.json, so it should cost about as
much as starting Python, whereas anything that calls `keras.saving.load_model` pays for
importing TensorFlow and materialising every weight. This script measures both, as whole
processes (that is what a user or a CI job experiences), on real application-sized models:

  (a) python -m normify audit X.keras --json
  (b) python -c "keras.saving.load_model(X)" in a fresh process
  (c) python -c "import normify"
  (d) python -m normify --help

Runs are paired and alternate a, b, a, b ... (then c, d) within each round, so slow
drifts in machine load hit every measurement alike; no run is discarded, and the median
and the minimum of each are reported. A separate child process also checks that after
`normify.cli.main(["audit", path])` neither `tensorflow` nor `keras` is in sys.modules,
which is the property that makes audit fast in the first place.

Targets: audit median <= 0.5 s per model; median(load_model) / median(audit) >= 10;
`import normify` <= 0.3 s; `normify --help` <= 0.3 s. Exit status is 0 whatever the
results (a benchmark is a report), unless `--check` is given: then 1 if any target fails.
With `--repeat` below 5 (the smoke test) timing targets are not judged at all.

Models are built with `keras.applications.<Name>(weights=None)` in a child process, so
this process never imports Keras either, and cached as .keras files for reuse.
"""

from __future__ import annotations

import argparse
import subprocess
import sys
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import (  # noqa: E402
    MIN_REPEAT,
    BenchmarkError,
    Check,
    Samples,
    add_model_options,
    add_standard_options,
    byte_compile_normify,
    check_model_options,
    check_standard_options,
    describe_conditions,
    ensure_models,
    file_size,
    load_average,
    marked_json,
    tail,
    timed_run,
)
from _results import machine_summary, replace_section  # noqa: E402

SECTION = "audit_speed"
DEFAULT_MODELS = ("ResNet50", "DenseNet121", "EfficientNetB0")
DEFAULT_REPEAT = 7

AUDIT_TARGET_S = 0.5
RATIO_TARGET = 10.0
IMPORT_TARGET_S = 0.3
HELP_TARGET_S = 0.3

LOAD_SCRIPT = "import sys, keras; keras.saving.load_model(sys.argv[1])"

BACKEND_MARKER = "NORMIFY_BENCH_BACKEND_MODULES="
BACKEND_SCRIPT = f"""
import json, sys
from normify.cli import main

main(["audit", sys.argv[1]], standalone_mode=False)
found = sorted(name for name in ("tensorflow", "keras") if name in sys.modules)
print("\\n{BACKEND_MARKER}" + json.dumps(found))
"""


@dataclass
class ModelResult:
    """The paired measurements of one model."""

    name: str
    path: Path
    audit: Samples
    load: Samples
    backend_modules: list[str] = field(default_factory=list)

    @property
    def ratio(self) -> float:
        return self.load.median / self.audit.median


# ------------------------------------------------------------------------------ models


# ----------------------------------------------------------------------------- timing


def backend_modules_after_audit(path: Path) -> list[str]:
    """Which of tensorflow/keras are in sys.modules after an in-process CLI audit."""
    completed = subprocess.run(
        [sys.executable, "-c", BACKEND_SCRIPT, str(path)], capture_output=True, text=True
    )
    found = marked_json(completed.stdout, BACKEND_MARKER)
    if found is not None:
        return found
    raise BenchmarkError(
        f"in-process audit of {path} failed (exit {completed.returncode}):\n"
        f"{tail(completed.stderr)}"
    )


def measure(paths: dict[str, Path], repeat: int) -> tuple[list[ModelResult], Samples, Samples]:
    """Run every command `repeat` times, alternating audit/load per model, then import/help."""
    python = sys.executable
    results = [
        ModelResult(name, path, Samples("audit"), Samples("load_model"))
        for name, path in paths.items()
    ]
    import_samples = Samples("import normify")
    help_samples = Samples("normify --help")
    for round_number in range(1, repeat + 1):
        log(f"round {round_number}/{repeat}")
        for result in results:
            path = str(result.path)
            result.audit.seconds.append(
                timed_run([python, "-m", "normify", "audit", path, "--json"])
            )
            result.load.seconds.append(timed_run([python, "-c", LOAD_SCRIPT, path]))
        import_samples.seconds.append(timed_run([python, "-c", "import normify"]))
        help_samples.seconds.append(timed_run([python, "-m", "normify", "--help"]))
    for result in results:
        result.backend_modules = backend_modules_after_audit(result.path)
    return results, import_samples, help_samples


# ---------------------------------------------------------------------------- report


def judge(
    results: Sequence[ModelResult], imports: Samples, helps: Samples, timing: bool
) -> dict[tuple[str, str], Check]:
    """Every target's verdict, keyed by (row kind, model name), in report order."""

    def timed(ok: bool) -> bool | None:
        return ok if timing else None

    checks: dict[tuple[str, str], Check] = {}
    for r in results:
        checks["audit", r.name] = Check(
            f"audit {r.name}: median {r.audit.median:.3f} s (target ≤ {AUDIT_TARGET_S} s)",
            timed(r.audit.median <= AUDIT_TARGET_S),
        )
        checks["ratio", r.name] = Check(
            f"load_model/audit {r.name}: {r.ratio:.1f}× (target ≥ {RATIO_TARGET:g}×)",
            timed(r.ratio >= RATIO_TARGET),
        )
        absent = not r.backend_modules
        found = ", ".join(r.backend_modules) or "neither"
        checks["backend", r.name] = Check(
            f"after in-process audit of {r.name}, tensorflow/keras imported: {found}", absent
        )
    checks["import", ""] = Check(
        f"import normify: median {imports.median:.3f} s (target ≤ {IMPORT_TARGET_S} s)",
        timed(imports.median <= IMPORT_TARGET_S),
    )
    checks["help", ""] = Check(
        f"normify --help: median {helps.median:.3f} s (target ≤ {HELP_TARGET_S} s)",
        timed(helps.median <= HELP_TARGET_S),
    )
    return checks


def render(
    results: Sequence[ModelResult],
    imports: Samples,
    helps: Samples,
    checks: dict[tuple[str, str], Check],
    repeat: int,
    timing: bool,
    conditions: str,
) -> str:
    """The markdown report: a table of every measurement, then one line per target."""
    rows = [
        "| measurement | model | runs | median (s) | min (s) | target | result |",
        "|---|---|--:|--:|--:|---|---|",
    ]

    def row(
        what: str, model: str, samples: Samples, target: str, key: tuple[str, str] | None
    ) -> None:
        verdict = checks[key].verdict if key else ""
        rows.append(
            f"| {what} | {model} | {len(samples.seconds)} | {samples.median:.3f} "
            f"| {samples.minimum:.3f} | {target} | {verdict} |"
        )

    for r in results:
        size = f"{r.name} ({file_size(r.path)})"
        row("`normify audit X --json`", size, r.audit, f"≤ {AUDIT_TARGET_S} s", ("audit", r.name))
        row("`keras.saving.load_model(X)`", size, r.load, "", None)
        rows.append(
            f"| load_model / audit (medians) | {size} | | {r.ratio:.1f}× | "
            f"| ≥ {RATIO_TARGET:g}× | {checks['ratio', r.name].verdict} |"
        )
        rows.append(
            f"| no tensorflow/keras in sys.modules after audit | {size} | | | "
            f"| absent | {checks['backend', r.name].verdict} |"
        )
    row('`python -c "import normify"`', "", imports, f"≤ {IMPORT_TARGET_S} s", ("import", ""))
    row("`normify --help`", "", helps, f"≤ {HELP_TARGET_S} s", ("help", ""))

    lines = [
        "## Audit speed (`benchmarks/audit_speed.py`)",
        "",
        f"Measured {machine_summary()}.",
        "",
        f"Wall-clock time of whole processes, {repeat} run(s) of each, alternating "
        "audit and load_model; none discarded.",
        conditions,
        "",
        *rows,
        "",
    ]
    if not timing:
        lines += [f"Timing targets not judged: --repeat {repeat} < {MIN_REPEAT} (smoke run).", ""]
    lines += [f"- {check.verdict}: {check.description}" for check in checks.values()]
    return "\n".join(lines) + "\n"


def log(message: str) -> None:
    """Progress goes to stderr, so stdout is exactly the markdown report."""
    print(f"[audit_speed] {message}", file=sys.stderr, flush=True)


# ------------------------------------------------------------------------------- main


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description="Time `normify audit` against keras.saving.load_model on real models."
    )
    add_model_options(parser, DEFAULT_MODELS)
    add_standard_options(parser, SECTION, DEFAULT_REPEAT)
    args = parser.parse_args(argv)
    check_model_options(parser, args)
    check_standard_options(parser, args)
    return args


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    timing = args.repeat >= MIN_REPEAT
    try:
        paths = ensure_models(list(dict.fromkeys(args.models)), args.cache, log)
        byte_compile_normify()
        load_before = load_average()
        results, imports, helps = measure(paths, args.repeat)
        conditions = describe_conditions(load_before, load_average(), byte_compiled=True)
    except BenchmarkError as error:
        print(f"audit_speed: error: {error}", file=sys.stderr)
        return 2
    checks = judge(results, imports, helps, timing)
    report = render(results, imports, helps, checks, args.repeat, timing, conditions)
    sys.stdout.write(report)
    if args.write_results:
        written = replace_section(SECTION, report, args.results_file)
        log(f"wrote section '{SECTION}' of {written}")
    failed = [check for check in checks.values() if check.passed is False]
    return 1 if args.check and failed else 0


if __name__ == "__main__":
    sys.exit(main())
