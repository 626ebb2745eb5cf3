"""The command line of the rewriting commands (`fold`, `strip`, `swap`, `recalibrate`) and
of `verify`, run as subprocesses (`python -m normify ...`) on copies of a fixture.

Only the runs that rewrite a model import TensorFlow (one per command, plus two `verify`
runs); dry runs, refusals and bad input files are answered from the config alone.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from conftest import FIXTURES, MANIFEST

FIXTURE = "conv_bn.keras"
BATCHNORMS = [f"batch_normalization{suffix}" for suffix in ("", "_1", "_2", "_3", "_4", "_5")]
FOLDABLE = [path for path in BATCHNORMS if path != "batch_normalization_4"]  # after a relu


def normify_cli(*args: Any, cwd: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "normify", *[str(a) for a in args]],
        capture_output=True,
        text=True,
        cwd=cwd,
        timeout=300,
    )


def digest(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def listing(folder: Path) -> list[str]:
    return sorted(os.listdir(folder))  # dot files (leftover temporaries) included


def shifted_data(path: Path) -> Path:
    """Images whose statistics are far from the N(0, 1) inputs `verify` draws."""
    rng = np.random.default_rng(0)
    images = rng.standard_normal((64, *MANIFEST[FIXTURE]["inputs"]["image"]["shape"])) * 3 + 5
    np.savez(path, image=images.astype("float32"))
    return path


# command -> (extra arguments, output suffix, key of the change list in --json)
COMMANDS = {
    "fold": ((), "folded", "changes"),
    "strip": ((), "stripped", "changes"),
    "swap": (("--from", "batchnorm", "--to", "layernorm"), "swapped", "changes"),
    "recalibrate": (("--data", "d.npz"), "recalibrated", "changes"),
}
# what each real run changes on conv_bn.keras
EXPECTED_PATHS = {
    "fold": FOLDABLE,
    "strip": BATCHNORMS,
    "swap": BATCHNORMS,
    "recalibrate": BATCHNORMS,
}


def _change_path(command: str, change: dict[str, Any]) -> str:
    return change["path"]


def _without_measurements(command: str, change: dict[str, Any]) -> dict[str, Any]:
    """A change as the plan can know it: no drift, and for recalibrate only the path
    (the statistics' movement is measured on the data)."""
    if command == "recalibrate":
        return {"path": change["path"]}
    return {key: value for key, value in change.items() if key != "drift"}


@pytest.fixture
def workdir(tmp_path: Path) -> Path:
    folder = tmp_path / "work"
    folder.mkdir()
    shutil.copy(FIXTURES / FIXTURE, folder / "model.keras")
    shifted_data(folder / "d.npz")
    return folder


@pytest.mark.parametrize("command", sorted(COMMANDS))
def test_rewrite_command_conventions(command: str, workdir: Path) -> None:
    extra, suffix, changes_key = COMMANDS[command]
    model = workdir / "model.keras"
    default_output = workdir / f"model.{suffix}.keras"
    model_digest = digest(model)
    before = listing(workdir)

    # --dry-run --json: the plan, from the config alone; nothing is written
    dry = normify_cli(command, model, *extra, "--dry-run", "--json", cwd=workdir)
    assert dry.returncode == 0, dry.stderr
    plan = json.loads(dry.stdout)
    assert plan["dry_run"] is True and plan["output"] is None
    assert listing(workdir) == before

    # an existing output is refused without --force, and left as it was
    default_output.write_bytes(b"not a model")
    refused = normify_cli(command, model, *extra, cwd=workdir)
    assert refused.returncode == 2
    lines = refused.stderr.strip().splitlines()
    assert len(lines) == 1 and default_output.name in lines[0] and "--force" in lines[0]
    assert default_output.read_bytes() == b"not a model"

    # with --force the default output is replaced by the rewritten model
    done = normify_cli(command, model, *extra, "--force", "--json", cwd=workdir)
    assert done.returncode == 0, done.stderr
    report = json.loads(done.stdout)
    assert set(report) == {
        "command", "model", changes_key, "kept", "drift", "summary", "notices", "output",
        "dry_run",
    }  # fmt: skip
    # the before/after table: parameters, file sizes (the output's once written), drift
    summary = report["summary"]
    assert summary["file_bytes"]["before"] == model.stat().st_size
    assert summary["file_bytes"]["after"] == default_output.stat().st_size
    assert summary["parameters"]["after"] > 0
    assert report["command"] == command and report["dry_run"] is False
    assert report["model"] == str(model)
    assert Path(report["output"]) == default_output
    assert zipfile.is_zipfile(default_output)
    with zipfile.ZipFile(default_output) as archive:
        assert {"config.json", "model.weights.h5"} <= set(archive.namelist())
    assert report["drift"]["inputs"] == ("data" if command == "recalibrate" else "random")
    changes = report[changes_key]
    assert [_change_path(command, change) for change in changes] == EXPECTED_PATHS[command]
    # the plan listed exactly the changes the run made, and the same kept layers
    assert [_without_measurements(command, c) for c in changes] == [
        _without_measurements(command, c) for c in plan[changes_key]
    ]
    assert report["kept"] == plan["kept"]
    if command == "fold":
        assert report["kept"] == [
            {"path": "batch_normalization_4", "reason": "follows the relu activation of conv2d_1"}
        ]
        assert report["drift"]["relative"] < 1e-5
    if command == "strip":
        exact = {change["path"]: change["exact"] for change in changes}
        assert exact == {path: path in FOLDABLE for path in BATCHNORMS}
        assert set(changes[4]["drift"]) == {"max_abs", "relative"}  # the one real removal

    # the input is never modified, and no temporary file is left behind
    assert digest(model) == model_digest
    assert listing(workdir) == sorted([*before, default_output.name])
    _check_written_model(command, model, default_output)


def _check_written_model(command: str, model: Path, output: Path) -> None:
    """The file the CLI wrote holds the rewritten model."""
    keras = pytest.importorskip("keras")
    original, rewritten = keras.saving.load_model(model), keras.saving.load_model(output)
    classes = {layer.name: type(layer).__name__ for layer in rewritten.layers}
    norms = {name for name, cls in classes.items() if cls.endswith("Normalization")}
    images = np.random.default_rng(1).standard_normal((8, 12, 12, 3)).astype("float32")
    before, after = original.predict(images, verbose=0), rewritten.predict(images, verbose=0)
    drift = float(np.max(np.abs(after - before)))
    if command == "fold":
        assert norms == {"batch_normalization_4"} and drift <= 1e-6  # probabilities
    elif command == "strip":
        assert not norms and drift > 1e-4  # batch_normalization_4 could not fold
    elif command == "swap":
        assert {classes[path] for path in BATCHNORMS} == {"LayerNormalization"}
    else:
        assert norms == set(BATCHNORMS) and drift > 1e-2  # the shifted data moved them
        for path in BATCHNORMS:
            old, new = original.get_layer(path), rewritten.get_layer(path)
            assert old.moving_mean.numpy().tobytes() != new.moving_mean.numpy().tobytes()
            assert old.gamma.numpy().tobytes() == new.gamma.numpy().tobytes()


@pytest.mark.parametrize("command", sorted(COMMANDS))
def test_truncated_input_fails_in_one_line_and_writes_nothing(command: str, workdir: Path) -> None:
    extra, _, _ = COMMANDS[command]
    bad = workdir / "broken.keras"
    bad.write_bytes((workdir / "model.keras").read_bytes()[:1500])
    before = listing(workdir)
    bad_digest = digest(bad)
    result = normify_cli(command, bad, *extra, cwd=workdir)
    assert result.returncode == 2
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert "broken.keras" in lines[0]
    assert result.stdout == ""
    assert listing(workdir) == before
    assert digest(bad) == bad_digest


def test_verify_passes_a_fold_and_fails_a_shifted_recalibration(tmp_path: Path) -> None:
    import normify

    source = FIXTURES / FIXTURE
    data = np.load(shifted_data(tmp_path / "d.npz"))["image"]
    normify.fold(source).model.save(tmp_path / "folded.keras")
    normify.recalibrate(source, data=data).model.save(tmp_path / "recalibrated.keras")

    passed = normify_cli(
        "verify", source, tmp_path / "folded.keras", "--tolerance", "1e-5", "--json", cwd=tmp_path
    )
    assert passed.returncode == 0, passed.stderr
    report = json.loads(passed.stdout)
    assert report["passed"] is True and report["tolerance"] == 1e-5
    assert report["drift"]["relative"] <= 1e-5
    # 9 folded kernels and biases changed, conv2d got a bias, 5 BNs x 4 variables left
    assert report["counts"] == {"carried": 9, "changed": 9, "moved": 0, "removed": 20, "added": 1}
    assert sorted(report["layers_removed"]) == FOLDABLE

    failed = normify_cli(
        "verify", source, tmp_path / "recalibrated.keras", "--tolerance", "1e-5", "--json",
        cwd=tmp_path,
    )  # fmt: skip
    assert failed.returncode == 1, failed.stderr
    report = json.loads(failed.stdout)
    assert report["passed"] is False and report["drift"]["relative"] > 1e-2
    # the moving mean and variance of the 6 BNs changed, everything else carried
    assert report["counts"] == {"carried": 26, "changed": 12, "moved": 0, "removed": 0, "added": 0}
    changed = {(w["layer"], w["key"]) for w in report["weights"] if w["status"] == "changed"}
    assert changed == {(bn, key) for bn in BATCHNORMS for key in ("moving_mean", "moving_variance")}
