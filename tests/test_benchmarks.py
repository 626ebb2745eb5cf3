"""Smoke tests for `benchmarks/`, so the scripts cannot rot between real benchmark runs.

They never judge timings (a loaded CI machine would make that flaky); they check that the
script runs end to end on a tiny model, prints its table, and that the RESULTS.md section
helper replaces only its own section.
"""

from __future__ import annotations

import importlib.util
import subprocess
import sys
from pathlib import Path
from types import ModuleType

import pytest

BENCHMARKS = Path(__file__).resolve().parent.parent / "benchmarks"


def _load_benchmark_module(stem: str) -> ModuleType:
    # benchmarks/ is a folder of scripts, not a package: load a script by path.
    name = f"_bench{stem}" if stem.startswith("_") else f"_bench_{stem}"
    spec = importlib.util.spec_from_file_location(name, BENCHMARKS / f"{stem}.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # its dataclasses look their module up there
    spec.loader.exec_module(module)
    return module


def test_audit_speed_smoke(tmp_path: Path) -> None:
    completed = subprocess.run(
        [
            sys.executable,
            str(BENCHMARKS / "audit_speed.py"),
            "--models",
            "tiny",
            "--repeat",
            "1",
            "--cache",
            str(tmp_path / "cache"),
        ],
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert completed.returncode == 0, completed.stderr
    out = completed.stdout
    header = "| measurement | model | runs | CPU median (s) | wall median (s) | wall min (s) |"
    assert header in out
    for row in (
        '`python -c "import json, zipfile"`',
        "`python -m normify audit X --json`",
        "`python -m normify audit` / baseline, CPU (median of paired ratios)",
        "`keras.saving.load_model(X)`",
        "`normify --help`",
    ):
        assert row in out
    # Timings are SKIP in a smoke run; the one judged check is the deterministic
    # "no NumPy, Keras, rich or rewrite machinery after audit", which must hold anywhere.
    assert "PASS: after an in-process audit --json of tiny, heavy modules imported: none" in out
    assert "Timing targets not judged" in out
    assert "- FAIL" not in out
    assert list((tmp_path / "cache").glob("tiny-keras*.keras"))


def test_audit_speed_refuses_to_write_smoke_results(tmp_path: Path) -> None:
    results = tmp_path / "RESULTS.md"
    completed = subprocess.run(
        [
            sys.executable,
            str(BENCHMARKS / "audit_speed.py"),
            "--models=tiny",
            "--repeat=1",
            f"--cache={tmp_path}",
            "--write-results",
            f"--results-file={results}",
        ],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert completed.returncode == 2
    assert not results.exists()


def test_replace_section_creates_replaces_and_keeps_others(tmp_path: Path) -> None:
    results = _load_benchmark_module("_results")
    path = tmp_path / "RESULTS.md"

    results.replace_section("one", "first", path)
    text = path.read_text()
    assert text.startswith("# normify benchmark results")
    assert "CPU:" in text and "<!-- one:start -->\nfirst\n<!-- one:end -->" in text

    results.replace_section("two", "second", path)
    results.replace_section("one", "first again", path)
    text = path.read_text()
    assert "first again" in text and "first\n" not in text
    assert text.index("<!-- one:start -->") < text.index("<!-- two:start -->")
    assert "<!-- two:start -->\nsecond\n<!-- two:end -->" in text


def test_replace_section_refuses_unterminated_section(tmp_path: Path) -> None:
    results = _load_benchmark_module("_results")
    path = tmp_path / "RESULTS.md"
    path.write_text("# x\n<!-- one:start -->\nold\n<!-- two:start -->\n<!-- two:end -->\n")
    with pytest.raises(ValueError, match="no matching"):
        results.replace_section("one", "new", path)
    assert "old" in path.read_text()


def test_fold_speed_smoke() -> None:
    completed = subprocess.run(
        [sys.executable, str(BENCHMARKS / "fold_speed.py"), "--models", "tiny", "--repeat", "1"],
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert completed.returncode == 0, completed.stderr
    assert "| tiny | 8 | 2 / 0 / 0 |" in completed.stdout  # both BNs folded away
    assert "SKIP (smoke)" in completed.stdout


def test_rewrite_overhead_smoke(tmp_path: Path) -> None:
    completed = subprocess.run(
        [
            sys.executable,
            str(BENCHMARKS / "rewrite_overhead.py"),
            "--models",
            "tiny",
            "--repeat",
            "1",
            "--cache",
            str(tmp_path / "cache"),
        ],
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert completed.returncode == 0, completed.stderr
    out = completed.stdout
    assert "| model | norms inserted | `normify add` median (s) |" in out
    assert "| tiny (" in out and "| 1 |" in out  # the tiny model's hidden Dense gets a norm
    # the tiny model gets a norm, so add builds it once from the file (no Keras load)
    for part in ("plan", "build once from the file", "save", "**total in process**"):
        assert f"| tiny | {part} |" in out
    assert "| tiny | load (Keras) |  | " in out  # only the plain script loads
    assert "Timing targets not judged" in out
    assert "- FAIL" not in out


def test_memory_smoke(tmp_path: Path) -> None:
    completed = subprocess.run(
        [
            sys.executable,
            str(BENCHMARKS / "memory.py"),
            "--width",
            "64",
            "--repeat",
            "1",
            "--cache",
            str(tmp_path / "cache"),
        ],
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert completed.returncode == 0, completed.stderr
    out = completed.stdout
    assert out.startswith("## Peak memory of a rewrite")
    assert "| command | runs | peak RSS median (MB) | min (MB) | wall median (s) |" in out
    assert "| `normify add X -o Y --force --quiet` | 1 |" in out
    assert "| `keras.saving.load_model(X).save(Z)` | 1 |" in out
    assert "| normify add / load+save (peak medians) |" in out
    assert "Targets not judged" in out
    assert "- FAIL" not in out
    assert list((tmp_path / "cache").glob("dense64x4-keras*.keras"))
