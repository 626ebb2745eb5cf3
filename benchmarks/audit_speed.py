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
import json
import os
import re
import statistics
import subprocess
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from importlib import metadata
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _results import RESULTS_PATH, machine_summary, replace_section, usable_cores  # noqa: E402

SECTION = "audit_speed"
DEFAULT_MODELS = ("ResNet50", "DenseNet121", "EfficientNetB0")
DEFAULT_CACHE = Path(__file__).resolve().parent / ".cache"
DEFAULT_REPEAT = 7
MIN_REPEAT = 5  # fewer runs make a median too noisy to judge a target on

AUDIT_TARGET_S = 0.5
RATIO_TARGET = 10.0
IMPORT_TARGET_S = 0.3
HELP_TARGET_S = 0.3

# Run in a child so the benchmark process itself never imports TensorFlow (its threads
# and memory would otherwise sit beside every measured process).
BUILD_SCRIPT = """
import os, sys
import keras

for name, path in zip(sys.argv[1::2], sys.argv[2::2]):
    if name == "tiny":
        model = keras.Sequential(
            [keras.Input((8,)), keras.layers.Dense(4, activation="relu"), keras.layers.Dense(2)],
            name="tiny",
        )
    elif callable(getattr(keras.applications, name, None)):
        model = getattr(keras.applications, name)(weights=None)
    else:
        sys.exit(f"unknown model {name!r}: not 'tiny' nor a keras.applications function")
    partial = os.path.join(os.path.dirname(path), ".partial-" + os.path.basename(path))
    model.save(partial)
    os.replace(partial, path)  # a killed build never leaves a truncated cache file
"""

LOAD_SCRIPT = "import sys, keras; keras.saving.load_model(sys.argv[1])"

BACKEND_MARKER = "NORMIFY_BENCH_BACKEND_MODULES="
BACKEND_SCRIPT = f"""
import json, sys
from normify.cli import main

main(["audit", sys.argv[1]], standalone_mode=False)
found = sorted(name for name in ("tensorflow", "keras") if name in sys.modules)
print("\\n{BACKEND_MARKER}" + json.dumps(found))
"""


class BenchmarkError(RuntimeError):
    """A measured command failed: its timing would be meaningless, so stop."""


@dataclass
class Samples:
    """Every wall-clock duration (seconds) of one measured command, none discarded."""

    label: str
    seconds: list[float] = field(default_factory=list)

    @property
    def median(self) -> float:
        return statistics.median(self.seconds)

    @property
    def minimum(self) -> float:
        return min(self.seconds)


@dataclass
class Check:
    """One target: `passed` is None when it was not judged (smoke run)."""

    description: str
    passed: bool | None

    @property
    def verdict(self) -> str:
        return {True: "PASS", False: "FAIL", None: "SKIP"}[self.passed]


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


def cache_file(cache_dir: Path, name: str) -> Path:
    """Cache path keyed by the Keras version, so an upgrade rebuilds instead of reusing."""
    return cache_dir / f"{name}-keras{metadata.version('keras')}.keras"


def ensure_models(names: Sequence[str], cache_dir: Path) -> dict[str, Path]:
    """Return a .keras file per name, building (in one child process) those not cached."""
    cache_dir.mkdir(parents=True, exist_ok=True)
    paths = {name: cache_file(cache_dir, name) for name in names}
    missing = [name for name, path in paths.items() if not path.exists()]
    if missing:
        log(f"building {', '.join(missing)} into {cache_dir} (once; reused afterwards)")
        argv = [arg for name in missing for arg in (name, str(paths[name]))]
        env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3"}
        completed = subprocess.run(
            [sys.executable, "-c", BUILD_SCRIPT, *argv], capture_output=True, text=True, env=env
        )
        if completed.returncode != 0:
            raise BenchmarkError(f"building models failed:\n{tail(completed.stderr)}")
    return paths


# ----------------------------------------------------------------------------- timing


def tail(text: str, lines: int = 15) -> str:
    return "\n".join(text.strip().splitlines()[-lines:])


def timed_run(argv: Sequence[str]) -> float:
    """Wall-clock seconds of one whole child process, which must succeed."""
    start = time.perf_counter()
    completed = subprocess.run(argv, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    elapsed = time.perf_counter() - start
    if completed.returncode != 0:
        raise BenchmarkError(
            f"{' '.join(argv)} exited {completed.returncode}:\n{tail(completed.stderr)}"
        )
    return elapsed


def backend_modules_after_audit(path: Path) -> list[str]:
    """Which of tensorflow/keras are in sys.modules after an in-process CLI audit."""
    completed = subprocess.run(
        [sys.executable, "-c", BACKEND_SCRIPT, str(path)], capture_output=True, text=True
    )
    for line in reversed(completed.stdout.splitlines()):
        if line.startswith(BACKEND_MARKER):
            return json.loads(line[len(BACKEND_MARKER) :])
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


def file_size(path: Path) -> str:
    """Model size next to its name: load_model time grows with it, audit time should not."""
    size = path.stat().st_size
    return f"{size / 1e6:.1f} MB" if size >= 1e6 else f"{size / 1e3:.0f} kB"


def load_average() -> float | None:
    """The 1-minute load average, or None where the OS does not report one."""
    try:
        return os.getloadavg()[0]
    except (AttributeError, OSError):
        return None


def describe_conditions(before: float | None, after: float | None) -> str:
    """Say what else could have skewed the numbers, so a reader can discount them.

    Other work on the machine inflates every timing; PYTHONDONTWRITEBYTECODE makes each
    process recompile normify's modules (an editable install then has no .pyc at all),
    which an installed wheel would not pay.
    """
    parts = []
    if before is not None and after is not None:
        parts.append(
            f"1-minute load average {before:.2f} before, {after:.2f} after "
            f"({usable_cores()} usable cores)."
        )
    if os.environ.get("PYTHONDONTWRITEBYTECODE"):
        parts.append("PYTHONDONTWRITEBYTECODE was set: no bytecode cache for uncompiled modules.")
    return " ".join(parts)


def log(message: str) -> None:
    """Progress goes to stderr, so stdout is exactly the markdown report."""
    print(f"[audit_speed] {message}", file=sys.stderr, flush=True)


# ------------------------------------------------------------------------------- main


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description="Time `normify audit` against keras.saving.load_model on real models.",
    )
    parser.add_argument(
        "--models",
        default=",".join(DEFAULT_MODELS),
        help="Comma-separated keras.applications names, or 'tiny' for a small Sequential "
        "model (smoke test). Default: %(default)s.",
    )
    parser.add_argument(
        "--repeat",
        type=int,
        default=DEFAULT_REPEAT,
        help=f"Runs of each command (default %(default)s). Below {MIN_REPEAT} timing targets "
        "are not judged.",
    )
    parser.add_argument(
        "--cache",
        type=Path,
        default=DEFAULT_CACHE,
        help="Folder for the built .keras files (default: benchmarks/.cache).",
    )
    parser.add_argument(
        "--write-results",
        action="store_true",
        help=f"Replace the '{SECTION}' section of --results-file with this report.",
    )
    parser.add_argument(
        "--results-file", type=Path, default=RESULTS_PATH, help="Default: benchmarks/RESULTS.md."
    )
    parser.add_argument("--check", action="store_true", help="Exit 1 if any target fails.")
    args = parser.parse_args(argv)
    args.models = [name.strip() for name in args.models.split(",") if name.strip()]
    if not args.models:
        parser.error("--models: no model names given")
    for name in args.models:
        if not re.fullmatch(r"[A-Za-z][A-Za-z0-9_]*", name):
            parser.error(f"--models: {name!r} is not a model name")
    if args.repeat < 1:
        parser.error("--repeat must be at least 1")
    if args.write_results and args.repeat < MIN_REPEAT:
        parser.error(f"--write-results needs --repeat >= {MIN_REPEAT}: smoke numbers are noise")
    return args


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    timing = args.repeat >= MIN_REPEAT
    try:
        paths = ensure_models(list(dict.fromkeys(args.models)), args.cache)
        load_before = load_average()
        results, imports, helps = measure(paths, args.repeat)
        conditions = describe_conditions(load_before, load_average())
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
