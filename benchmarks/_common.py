"""Shared pieces of the benchmark scripts: samples, verdicts, model cache, child timing.

Nothing here imports Keras or TensorFlow: the measuring process stays light, and models
are built in child processes.
"""

from __future__ import annotations

import os
import statistics
import subprocess
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from importlib import metadata
from pathlib import Path

from _results import usable_cores

DEFAULT_CACHE = Path(__file__).resolve().parent / ".cache"
MIN_REPEAT = 5  # fewer runs make a median too noisy to judge a target on

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
