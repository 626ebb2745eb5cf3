"""Benchmark: does `normify audit` answer about as fast as Python starts?

Measured as CI jobs and pre-commit hooks meet it: whole processes, by the CPU time (user
+ system, from `os.wait4`) of each child, which other load disturbs far less than wall
time. Each round runs, in an order that rotates, (0) `python -c "import json, zipfile"`,
(a) `python -m normify audit X.keras --json`, (s) the `normify` console script the same
way, and (b) `keras.saving.load_model(X)`; then `import normify` and `normify --help`.
Target: the median of the paired ratios a/0 (or s/0, the cheaper launcher) at most 4×.
Also judged: audit wall median <= 0.5 s, load_model / audit >= 10 (wall), `import
normify` and `--help` <= 0.3 s, and (in a child) that audit imports none of NumPy,
Keras, rich and the rewrite machinery. Children run in an empty folder (no policy file).
`--check` exits 1 on a failed target; below `--repeat 5` timings are not judged. Models
come from `keras.applications.<Name>(weights=None)`, built and cached by a child.
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import (  # noqa: E402
    MIN_REPEAT,
    BenchmarkError,
    Check,
    add_model_options,
    add_standard_options,
    byte_compile_normify,
    check_model_options,
    check_standard_options,
    child_usage,
    describe_conditions,
    ensure_models,
    file_size,
    load_average,
    marked_json,
    publish,
    run_guarded,
    tail,
)
from _results import machine_summary  # noqa: E402

SECTION = "audit_speed"
DEFAULT_MODELS = ("ResNet50",)
DEFAULT_REPEAT = 11

CPU_RATIO_TARGET = 4.0
AUDIT_TARGET_S = 0.5
LOAD_RATIO_TARGET = 10.0
IMPORT_TARGET_S = 0.3
HELP_TARGET_S = 0.3

BASELINE = 'python -c "import json, zipfile"'
LOAD_SCRIPT = "import sys, keras; keras.saving.load_model(sys.argv[1])"
# What audit, --version, --help and --dry-run must never import (tests/test_cli_errors.py).
HEAVY = ("numpy", "keras", "tensorflow", "jax", "torch", "rich", "hashlib", "normify.api",
         "normify.passes", "normify.rebuild", "normify.verify", "normify.calibrate")  # fmt: skip
MARKER = "NORMIFY_BENCH_HEAVY_MODULES="
HEAVY_SCRIPT = f"""
import io, json, sys, contextlib
from normify.cli import main

with contextlib.redirect_stdout(io.StringIO()):
    main(["audit", sys.argv[1], "--json"], standalone_mode=False)
print("{MARKER}" + json.dumps([name for name in {HEAVY!r} if name in sys.modules]))
"""


@dataclass
class Runs:
    """CPU and wall seconds of every run of one command, none discarded."""

    label: str
    cpu: list[float] = field(default_factory=list)
    wall: list[float] = field(default_factory=list)

    def add(self, usage: tuple[float, float, int]) -> None:
        self.wall.append(usage[0])
        self.cpu.append(usage[1])

    def row(self, model: str, target: str = "", verdict: str = "") -> str:
        return (
            f"| {self.label} | {model} | {len(self.cpu)} | {statistics.median(self.cpu):.3f} "
            f"| {statistics.median(self.wall):.3f} | {min(self.wall):.3f} | {target} | {verdict} |"
        )


def paired_ratio(runs: Runs, baseline: Runs) -> float:
    """The median over rounds of this round's CPU time over the baseline's."""
    return statistics.median(a / b for a, b in zip(runs.cpu, baseline.cpu, strict=True))


def heavy_modules_after_audit(path: Path, cwd: str) -> list[str]:
    completed = subprocess.run(
        [sys.executable, "-c", HEAVY_SCRIPT, str(path)], capture_output=True, text=True, cwd=cwd
    )
    found = marked_json(completed.stdout, MARKER)
    if found is None:
        raise BenchmarkError(f"in-process audit of {path} failed:\n{tail(completed.stderr)}")
    return found


def console_script() -> str | None:
    """The `normify` script installed beside this interpreter, if there is one."""
    script = Path(sys.executable).parent / "normify"
    return str(script) if script.is_file() and os.access(script, os.X_OK) else None


def measure(paths: dict[str, Path], repeat: int, cwd: str) -> dict[str, Any]:
    python, script = sys.executable, console_script()
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3"}
    launchers = {"python -m normify": [python, "-m", "normify"]}
    launchers.update({"normify": [script]} if script else {})
    commands = {("baseline",): [python, "-c", "import json, zipfile"]}
    rows = {("baseline",): Runs(f"`{BASELINE}`")}
    for name, path in paths.items():
        for launcher, argv in launchers.items():
            commands["audit", launcher, name] = [*argv, "audit", str(path), "--json"]
            rows["audit", launcher, name] = Runs(f"`{launcher} audit X --json`")
        commands["load", name] = [python, "-c", LOAD_SCRIPT, str(path)]
        rows["load", name] = Runs("`keras.saving.load_model(X)`")
    commands["import",] = [python, "-c", "import normify"]
    rows["import",] = Runs('`python -c "import normify"`')
    commands["help",] = [python, "-m", "normify", "--help"]
    rows["help",] = Runs("`normify --help`")
    order = list(commands)
    for round_number in range(repeat):
        log(f"round {round_number + 1}/{repeat}")
        shift = round_number % len(order)
        for key in order[shift:] + order[:shift]:
            rows[key].add(child_usage(commands[key], env, cwd))
    heavy = {name: heavy_modules_after_audit(path, cwd) for name, path in paths.items()}
    return {"rows": rows, "heavy": heavy}


def cells(*values: object) -> str:
    return "| " + " | ".join(str(value) for value in values) + " |"


def report(
    paths: dict[str, Path], measured: dict[str, Any], repeat: int, conditions: str
) -> tuple[str, list[Check]]:
    rows, heavy = measured["rows"], measured["heavy"]
    timing = repeat >= MIN_REPEAT
    checks: list[Check] = []

    def judge(description: str, ok: bool, timed: bool = True) -> str:
        checks.append(Check(description, ok if timing or not timed else None))
        return checks[-1].verdict

    base = rows["baseline",]
    lines = [
        cells("measurement", "model", "runs", "CPU median (s)", "wall median (s)",
              "wall min (s)", "target", "result"),
        "|---|---|--:|--:|--:|--:|---|---|",
        base.row("", "baseline"),
    ]  # fmt: skip
    for name, path in paths.items():
        size = f"{name} ({file_size(path)})"
        audits = {
            key[1]: runs for key, runs in rows.items() if key[0] == "audit" and key[2] == name
        }
        cheaper = min(audits, key=lambda launcher: statistics.median(audits[launcher].cpu))
        for launcher, runs in audits.items():
            wall = statistics.median(runs.wall)
            what = (
                f"{launcher} audit {name}: wall median {wall:.3f} s (target ≤ {AUDIT_TARGET_S} s)"
            )
            lines.append(
                runs.row(size, f"wall ≤ {AUDIT_TARGET_S} s", judge(what, wall <= AUDIT_TARGET_S))
            )
        for launcher, runs in audits.items():
            ratio, target, verdict = paired_ratio(runs, base), "", ""
            if launcher == cheaper:
                target = f"≤ {CPU_RATIO_TARGET:g}× (cheaper launcher)"
                what = (
                    f"`{launcher} audit` of {name} (the cheaper launcher) costs {ratio:.2f}× "
                    f"the CPU time of `{BASELINE}` (target ≤ {CPU_RATIO_TARGET:g}×)"
                )
                verdict = judge(what, ratio <= CPU_RATIO_TARGET)
            label = f"`{launcher} audit` / baseline, CPU (median of paired ratios)"
            lines.append(cells(label, size, "", f"{ratio:.2f}×", "", "", target, verdict))
        load = rows["load", name]
        ratio = statistics.median(load.wall) / statistics.median(audits[cheaper].wall)
        what = f"load_model/audit {name}: {ratio:.1f}× (target ≥ {LOAD_RATIO_TARGET:g}×)"
        verdict = judge(what, ratio >= LOAD_RATIO_TARGET)
        lines.append(load.row(size))
        lines.append(
            cells(
                "load_model / audit (wall medians)",
                size,
                "",
                "",
                f"{ratio:.1f}×",
                "",
                f"≥ {LOAD_RATIO_TARGET:g}×",
                verdict,
            )
        )
        what = f"after an in-process audit --json of {name}, heavy modules imported: "
        verdict = judge(what + (", ".join(heavy[name]) or "none"), not heavy[name], timed=False)
        lines.append(
            cells(
                "none of NumPy, Keras, rich, rewrite machinery after audit --json",
                size,
                "",
                "",
                "",
                "",
                "absent",
                verdict,
            )
        )
    for key, target in ((("import",), IMPORT_TARGET_S), (("help",), HELP_TARGET_S)):
        wall = statistics.median(rows[key].wall)
        what = f"{rows[key].label}: wall median {wall:.3f} s (target ≤ {target} s)"
        lines.append(rows[key].row("", f"wall ≤ {target} s", judge(what, wall <= target)))
    text = [
        "## Audit speed (`benchmarks/audit_speed.py`)",
        "",
        f"Measured {machine_summary()}.",
        "",
        f"Whole processes, {repeat} round(s), each command once a round in an order that "
        "rotates; CPU time is the child's user + system time (`os.wait4`); ratios are "
        "paired within a round; none discarded. The children run in an empty temporary "
        f"folder (no policy file). {conditions}",
        f"Rerun: `python benchmarks/audit_speed.py --repeat {repeat} --write-results`.",
        "",
        *lines,
        "",
    ]
    if not timing:
        text += [f"Timing targets not judged: --repeat {repeat} < {MIN_REPEAT} (smoke run).", ""]
    text += [f"- {check.verdict}: {check.description}" for check in checks]
    return "\n".join(text) + "\n", checks


def log(message: str) -> None:
    """Progress goes to stderr, so stdout is exactly the markdown report."""
    print(f"[audit_speed] {message}", file=sys.stderr, flush=True)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description="Time whole `normify audit` processes against starting Python and load_model."
    )
    add_model_options(parser, DEFAULT_MODELS)
    add_standard_options(parser, SECTION, DEFAULT_REPEAT)
    args = parser.parse_args(argv)
    check_model_options(parser, args)
    check_standard_options(parser, args)

    def run() -> tuple[dict[str, Path], dict[str, Any], str]:
        paths = ensure_models(list(dict.fromkeys(args.models)), args.cache, log)
        paths = {name: path.resolve() for name, path in paths.items()}
        byte_compile_normify()
        before = load_average()
        with tempfile.TemporaryDirectory(prefix="normify-audit-speed-") as cwd:
            measured = measure(paths, args.repeat, cwd)
        return paths, measured, describe_conditions(before, load_average(), byte_compiled=True)

    done = run_guarded("audit_speed", run)
    if done is None:
        return 2
    text, checks = report(*done[:2], args.repeat, done[2])
    return publish(SECTION, text, checks, args, log)


if __name__ == "__main__":
    sys.exit(main())
