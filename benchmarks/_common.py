"""Shared pieces of the benchmark scripts: samples, verdicts, model cache, child timing.

Nothing here imports Keras or TensorFlow: the measuring process stays light, and models
are built in child processes.
"""

from __future__ import annotations

import argparse
import compileall
import importlib.util
import json
import os
import re
import statistics
import subprocess
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from importlib import metadata
from pathlib import Path
from typing import Any, TypeVar

from _results import RESULTS_PATH, replace_section, usable_cores

T = TypeVar("T")
DEFAULT_CACHE = Path(__file__).resolve().parent / ".cache"
MIN_REPEAT = 5  # fewer runs make a median too noisy to judge a target on
DEFAULT_REPEAT = 7


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


class BenchmarkError(RuntimeError):
    """A measured command failed: its timing would be meaningless, so stop."""


@dataclass
class Samples:
    """Every measurement (seconds, or bytes) of one command, none discarded."""

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


def cache_file(cache_dir: Path, name: str) -> Path:
    """Cache path keyed by the Keras version, so an upgrade rebuilds instead of reusing."""
    return cache_dir / f"{name}-keras{metadata.version('keras')}.keras"


def ensure_models(
    names: Sequence[str], cache_dir: Path, log: object = None, script: str = BUILD_SCRIPT
) -> dict[str, Path]:
    """A .keras file per name, building (in one child process) those not cached.

    `script` receives `name path` pairs as arguments and writes each model to its path.
    """
    cache_dir.mkdir(parents=True, exist_ok=True)
    paths = {name: cache_file(cache_dir, name) for name in names}
    missing = [name for name, path in paths.items() if not path.exists()]
    if missing:
        if callable(log):
            log(f"building {', '.join(missing)} into {cache_dir} (once; reused afterwards)")
        argv = [arg for name in missing for arg in (name, str(paths[name]))]
        env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3"}
        completed = subprocess.run(
            [sys.executable, "-c", script, *argv], capture_output=True, text=True, env=env
        )
        if completed.returncode != 0:
            raise BenchmarkError(f"building models failed:\n{tail(completed.stderr)}")
    return paths


def marked_json(stdout: str, marker: str) -> Any:
    """The JSON after `marker` on the last line of `stdout` that starts with it, None if no
    line does: how a benchmark's child process hands back what it measured."""
    for line in reversed(stdout.splitlines()):
        if line.startswith(marker):
            return json.loads(line[len(marker) :])
    return None


def tail(text: str, lines: int = 15) -> str:
    return "\n".join(text.strip().splitlines()[-lines:])


def timed_run(argv: Sequence[str], env: dict[str, str] | None = None) -> float:
    """Wall-clock seconds of one whole child process, which must succeed."""
    start = time.perf_counter()
    completed = subprocess.run(
        argv, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True, env=env
    )
    elapsed = time.perf_counter() - start
    if completed.returncode != 0:
        raise BenchmarkError(
            f"{' '.join(argv)} exited {completed.returncode}:\n{tail(completed.stderr)}"
        )
    return elapsed


def file_size(path: Path) -> str:
    """A model's size next to its name: load and save times grow with it."""
    return byte_size(path.stat().st_size)


def byte_size(size: float) -> str:
    """`1073.9 MB`, `91 kB`: decimal units, as file sizes are usually shown."""
    return f"{size / 1e6:.1f} MB" if size >= 1e6 else f"{size / 1e3:.0f} kB"


def load_average() -> float | None:
    """The 1-minute load average, or None where the OS does not report one."""
    try:
        return os.getloadavg()[0]
    except (AttributeError, OSError):
        return None


def byte_compile_normify() -> None:
    """Write normify's bytecode cache, as `pip install` does.

    Keras and TensorFlow come with theirs; an editable install of normify has none until
    an import writes it, and with PYTHONDONTWRITEBYTECODE set no import ever does, so every
    timed process would recompile normify's modules from source (about 0.1 s), a cost no
    installed copy pays. `compileall` writes the cache whatever that variable says.
    """
    package = importlib.util.find_spec("normify")
    if package is None or not package.submodule_search_locations:
        raise BenchmarkError("normify is not importable from this interpreter")
    for folder in package.submodule_search_locations:
        if not compileall.compile_dir(folder, quiet=1):
            raise BenchmarkError(f"byte-compiling {folder} failed")


def describe_conditions(
    before: float | None, after: float | None, byte_compiled: bool = False
) -> str:
    """Say what else could have skewed the numbers, so a reader can discount them."""
    parts = []
    if before is not None and after is not None:
        parts.append(
            f"1-minute load average {before:.2f} before, {after:.2f} after "
            f"({usable_cores()} usable cores)."
        )
    if byte_compiled:
        parts.append("normify's modules were byte-compiled first, as `pip install` does.")
    return " ".join(parts)


def peak_rss_run(argv: Sequence[str], env: dict[str, str] | None = None) -> tuple[float, int]:
    """Wall-clock seconds and peak resident memory (bytes) of one whole child process."""
    wall, _, peak = child_usage(argv, env)
    return wall, peak


def child_usage(
    argv: Sequence[str], env: dict[str, str] | None = None, cwd: str | None = None
) -> tuple[float, float, int]:
    """Wall-clock seconds, CPU seconds (user + system) and peak resident memory (bytes) of
    one whole child process, which must succeed.

    CPU time and peak are this child's own, from `os.wait4` (`RUSAGE_CHILDREN` would sum,
    or take the largest over, every child this process ever waited for). Linux reports
    kilobytes, macOS bytes.
    """
    start = time.perf_counter()
    with subprocess.Popen(
        argv, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, env=env, cwd=cwd
    ) as child:
        # Read stderr to the end first, so a chatty child never blocks on a full pipe.
        stderr = child.stderr.read() if child.stderr is not None else b""
        _, status, usage = os.wait4(child.pid, 0)
        elapsed = time.perf_counter() - start
        child.returncode = os.waitstatus_to_exitcode(status)  # already reaped: tell Popen
    if child.returncode != 0:
        raise BenchmarkError(
            f"{' '.join(argv)} exited {child.returncode}:\n{tail(stderr.decode(errors='replace'))}"
        )
    scale = 1 if sys.platform == "darwin" else 1024
    return elapsed, usage.ru_utime + usage.ru_stime, usage.ru_maxrss * scale


# ------------------------------------------------------------------- options and results


def add_standard_options(
    parser: argparse.ArgumentParser, section: str, default_repeat: int = DEFAULT_REPEAT
) -> None:
    """`--repeat`, `--write-results`, `--results-file` and `--check`, as every benchmark
    has them (see benchmarks/README.md)."""
    parser.add_argument(
        "--repeat",
        type=int,
        default=default_repeat,
        help=f"Runs of each measurement (default %(default)s). Below {MIN_REPEAT} the "
        "timing targets are not judged.",
    )
    parser.add_argument(
        "--write-results",
        action="store_true",
        help=f"Replace the '{section}' section of --results-file with this report.",
    )
    parser.add_argument(
        "--results-file", type=Path, default=RESULTS_PATH, help="Default: benchmarks/RESULTS.md."
    )
    parser.add_argument("--check", action="store_true", help="Exit 1 if any target fails.")


def add_model_options(parser: argparse.ArgumentParser, default_models: Sequence[str]) -> None:
    """`--models` (keras.applications names, or `tiny`) and `--cache`, for the benchmarks
    that time whole processes on built application models."""
    parser.add_argument(
        "--models",
        default=",".join(default_models),
        help="Comma-separated keras.applications names, or 'tiny' for a small Sequential "
        "model (smoke test). Default: %(default)s.",
    )
    parser.add_argument(
        "--cache",
        type=Path,
        default=DEFAULT_CACHE,
        help="Folder for the built .keras files (default: benchmarks/.cache).",
    )


def check_model_options(parser: argparse.ArgumentParser, args: argparse.Namespace) -> None:
    """Turn `--models` into a list of names, refusing what cannot be one."""
    args.models = [name.strip() for name in args.models.split(",") if name.strip()]
    if not args.models:
        parser.error("--models: no model names given")
    for name in args.models:
        if not re.fullmatch(r"[A-Za-z][A-Za-z0-9_]*", name):
            parser.error(f"--models: {name!r} is not a model name")


def check_standard_options(parser: argparse.ArgumentParser, args: argparse.Namespace) -> None:
    """Refuse what `add_standard_options` cannot: no runs, or smoke numbers for the record."""
    if args.repeat < 1:
        parser.error("--repeat must be at least 1")
    if args.write_results and args.repeat < MIN_REPEAT:
        parser.error(f"--write-results needs --repeat >= {MIN_REPEAT}: smoke numbers are noise")


def publish(
    section: str,
    report: str,
    checks: Sequence[Check],
    args: argparse.Namespace,
    log: Callable[[str], None],
) -> int:
    """Print the report, record it if asked, and return the exit status (1 only for a
    failed target under --check)."""
    sys.stdout.write(report)
    if args.write_results:
        written = replace_section(section, report, args.results_file)
        log(f"wrote section '{section}' of {written}")
    failed = [check for check in checks if check.passed is False]
    return 1 if args.check and failed else 0


def run_guarded(name: str, measure: Callable[[], T]) -> T | None:
    """Run the measurements; on failure say why on stderr and return None (exit 2).

    Any exception counts: a measured step that fails makes its timings meaningless.
    """
    try:
        return measure()
    except BenchmarkError as error:
        print(f"{name}: error: {error}", file=sys.stderr)
    except Exception as error:
        print(f"{name}: error: {type(error).__name__}: {error}", file=sys.stderr)
    return None
