"""Smoke tests for `benchmarks/rnn_cell_speed.py`, so the script cannot rot between runs.

Timings are never judged (there is no target, and a loaded machine makes them noise); the
tests check that the script runs end to end on tiny models, prints its table with one row
per stock/normalized pair, refuses to record smoke numbers, and writes only its section.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

SCRIPT = Path(__file__).resolve().parent.parent / "benchmarks" / "rnn_cell_speed.py"
HEADER = (
    "| layer | runs | stock median (ms) | stock min (ms) | normalized median (ms) "
    "| normalized min (ms) | normalized / stock (medians) | normalized / stock "
    "(median of paired ratios) |"
)
ROWS = (
    "| LSTM vs LayerNormLSTM | ",
    "| GRU vs LayerNormGRU | ",
    "| SimpleRNN vs LayerNormSimpleRNN | ",
)


def run(*args: str, timeout: int = 600) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, str(SCRIPT), *args], capture_output=True, text=True, timeout=timeout
    )


def test_tiny_smoke_run_prints_the_table() -> None:
    completed = run("--repeat", "1", "--tiny", "--check")
    assert completed.returncode == 0, completed.stderr
    out = completed.stdout
    assert out.startswith("## Layer-normalized RNN cells: training step time")
    assert "Measured " in out and " cores · Python " in out
    assert HEADER in out
    lines = out.splitlines()
    for prefix in ROWS:
        (row,) = [line for line in lines if line.startswith(prefix)]
        cells = [cell.strip() for cell in row.strip("|").split("|")]
        assert cells[1] == "1"  # runs
        assert all(float(value) > 0 for value in cells[2:6])
        assert all(value.endswith("×") and float(value[:-1]) > 0 for value in cells[6:])
    assert "Smoke run (--repeat 1, --tiny)" in out
    assert "- PASS: every training loss finite" in out
    # Progress goes to stderr, never into the markdown.
    assert "[rnn_cell_speed] round 1/1" in completed.stderr
    assert "[rnn_cell_speed]" not in out


def test_refuses_to_write_smoke_results(tmp_path: Path) -> None:
    results = tmp_path / "RESULTS.md"
    for args in (["--repeat", "1"], ["--repeat", "5", "--tiny"]):
        completed = run(*args, "--write-results", f"--results-file={results}", timeout=60)
        assert completed.returncode == 2, completed.stderr
        assert "--write-results" in completed.stderr
    assert not results.exists()


def test_write_results_replaces_only_its_section(tmp_path: Path) -> None:
    results = tmp_path / "RESULTS.md"
    other = "<!-- other:start -->\nkeep me\n<!-- other:end -->\n"
    results.write_text(f"# results\n\n{other}", encoding="utf-8")
    # Five rounds (the minimum to record) of very small models: the write path, cheaply.
    sizes = ["--batch-size=2", "--steps=3", "--features=2", "--units=2", "--calls=1"]
    completed = run("--repeat=5", *sizes, "--write-results", f"--results-file={results}")
    assert completed.returncode == 0, completed.stderr
    text = results.read_text(encoding="utf-8")
    assert other in text
    backend = os.environ.get("KERAS_BACKEND", "tensorflow")
    name = "rnn_cell_speed" if backend == "tensorflow" else f"rnn_cell_speed_{backend}"
    start, end = text.index(f"<!-- {name}:start -->"), text.index(f"<!-- {name}:end -->")
    section = text[start:end]
    assert HEADER in section and "| 5 |" in section
    assert "Smoke run" not in section
