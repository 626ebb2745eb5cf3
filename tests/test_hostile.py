"""Hostile and broken model files: normify succeeds with a correct result or exits 2 with
one clear line; never a traceback, never a hang, never an output or temporary file after
a failure, and the input is never modified.

A seeded mutation fuzz over the fixtures (tests/fuzz.py) runs a bounded number of cases
here, all in one child process per command so TensorFlow is imported once;
`scripts/fuzz.py` runs many more. Size bombs are refused from the zip directory before
they are read, and a writing `normify add` killed with SIGKILL leaves the target as it
was or complete.
"""

from __future__ import annotations

import collections
import os
import signal
import subprocess
import sys
import time
import zipfile
from io import BytesIO
from pathlib import Path

import numpy as np
import pytest
from conftest import FIXTURES, MANIFEST
from fuzz import (
    KINDS,
    Case,
    Outcome,
    build_cases,
    crafted_cases,
    default_fixtures,
    describe,
    failures,
    mutation,
    mutations,
    run_cases,
)
from helpers import inputs_for, max_relative_difference, predict

from normify import files
from normify.errors import ModelLoadError

SEED = 20251126
AUDIT_CASES = 154  # 14 per kind: audit needs no backend and takes milliseconds
ADD_CASES = 44  # 4 per kind: each loads, rewrites and saves a model, then checks it

# --------------------------------------------------------------------- the generator


def test_mutations_are_reproducible_and_cover_every_kind() -> None:
    data = (FIXTURES / "cnn.keras").read_bytes()
    cases = list(mutations(data, seed=3, count=2 * len(KINDS)))
    assert [label.split(":")[0] for label, _ in cases] == list(KINDS) * 2
    assert all(mutated != data for _, mutated in cases)
    # case 5 alone is case 5 of the sequence: any failure can be rebuilt from (seed, index)
    assert mutation(data, 3, 5) == cases[5]
    assert list(mutations(data, seed=4, count=3)) != cases[:3]


def test_config_mutations_keep_the_other_members() -> None:
    data = (FIXTURES / "mlp.keras").read_bytes()
    with zipfile.ZipFile(FIXTURES / "mlp.keras") as archive:
        weights = archive.read("model.weights.h5")
    for index, kind in enumerate(KINDS):
        if kind in ("wrong_type", "missing_key", "huge_number", "unknown_class"):
            _, mutated = mutation(data, 9, index)
            with zipfile.ZipFile(BytesIO(mutated)) as archive:
                assert archive.read("model.weights.h5") == weights


# ----------------------------------------------------------------------- the fuzz


@pytest.fixture(scope="module")
def audit_outcomes(tmp_path_factory: pytest.TempPathFactory) -> list[Outcome]:
    folder = tmp_path_factory.mktemp("fuzz_audit")
    cases = build_cases(default_fixtures(), SEED, AUDIT_CASES, folder / "inputs")
    cases += crafted_cases(folder / "crafted")
    return run_cases(cases, "audit", folder / "runs", total_seconds=120)


@pytest.fixture(scope="module")
def add_outcomes(tmp_path_factory: pytest.TempPathFactory) -> list[Outcome]:
    folder = tmp_path_factory.mktemp("fuzz_add")
    cases = build_cases(default_fixtures(), SEED + 1, ADD_CASES, folder / "inputs")
    cases += crafted_cases(folder / "crafted")
    return run_cases(cases, "add", folder / "runs", total_seconds=240)


def _assert_contract(outcomes: list[Outcome]) -> None:
    broken = failures(outcomes)
    assert not broken, f"{len(broken)} case(s) broke the contract:\n" + "\n".join(
        describe(outcome) for outcome in broken
    )


def _fuzzed(outcomes: list[Outcome]) -> list[Outcome]:
    return [outcome for outcome in outcomes if outcome.id < 100_000]


def test_audit_keeps_the_contract_on_mutated_files(audit_outcomes: list[Outcome]) -> None:
    _assert_contract(_fuzzed(audit_outcomes))
    _assert_both_outcomes(_fuzzed(audit_outcomes))


def test_add_keeps_the_contract_on_mutated_files(add_outcomes: list[Outcome]) -> None:
    _assert_contract(_fuzzed(add_outcomes))
    _assert_both_outcomes(_fuzzed(add_outcomes))


def _assert_both_outcomes(outcomes: list[Outcome]) -> None:
    """The fuzz is worth something only if it both breaks files and leaves some usable."""
    exits = collections.Counter(outcome.exit for outcome in outcomes)
    assert exits[0] > 0 and exits[2] > 0, exits
    kinds = {outcome.label.split(":")[0] for outcome in outcomes}
    assert kinds == set(KINDS)


def test_every_case_runs_in_bounded_time(
    audit_outcomes: list[Outcome], add_outcomes: list[Outcome]
) -> None:
    slowest = max(audit_outcomes + add_outcomes, key=lambda outcome: outcome.seconds)
    # a file the HDF5 library loops on is given up after H5_READ_SECONDS
    assert slowest.seconds < files.H5_READ_SECONDS + 5, describe(slowest)


# ---------------------------------------------------------------------- size bombs


def _crafted(outcomes: list[Outcome]) -> list[Outcome]:
    return [outcome for outcome in outcomes if outcome.id >= 100_000]


@pytest.mark.parametrize("command", ["audit", "add"])
def test_size_bombs_are_refused_with_one_line(
    command: str, audit_outcomes: list[Outcome], add_outcomes: list[Outcome]
) -> None:
    outcomes = _crafted(audit_outcomes if command == "audit" else add_outcomes)
    assert outcomes
    _assert_contract(outcomes)
    for outcome in outcomes:
        if outcome.label.startswith("bomb:"):
            assert outcome.exit == 2 and outcome.seconds < 2, describe(outcome)


@pytest.fixture(scope="module")
def bombs(tmp_path_factory: pytest.TempPathFactory) -> list[Case]:
    cases = crafted_cases(tmp_path_factory.mktemp("bombs"))
    return [case for case in cases if case.label.startswith(("bomb:", "size:units=10"))]


def test_bombs_are_refused_before_any_member_is_read(
    bombs: list[Case], monkeypatch: pytest.MonkeyPatch
) -> None:
    """From the zip directory alone: no member is opened, so nothing is decompressed."""
    opened: list[str] = []
    original_open = zipfile.ZipFile.open

    def spy(self: zipfile.ZipFile, name: object, *args: object, **kwargs: object) -> object:
        opened.append(getattr(name, "filename", name))
        return original_open(self, name, *args, **kwargs)

    monkeypatch.setattr(zipfile.ZipFile, "open", spy)
    for case in bombs:
        opened.clear()
        with pytest.raises(ModelLoadError) as raised:
            files.read_config(case.path)
        assert case.path in str(raised.value)
        if case.label.startswith("bomb:"):
            assert opened == [], (case.label, opened)


def test_an_hdf5_file_the_library_loops_on_is_given_up(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """32 flipped bytes in legacy_mlp.h5's global heap make HDF5 1.14 spin forever on
    `attrs["model_config"]` (found by scripts/fuzz.py, seed 6, case 16567): normify reads
    the attributes in a child process and gives up after H5_READ_SECONDS."""
    _, data = mutation((FIXTURES / "legacy_mlp.h5").read_bytes(), 6, 16567)
    path = tmp_path / "looping.h5"
    path.write_bytes(data)
    monkeypatch.setattr(files, "H5_READ_SECONDS", 3.0)
    started = time.monotonic()
    with pytest.raises(ModelLoadError, match="looping.h5: is not a readable HDF5 file"):
        files.read_config(path)
    assert time.monotonic() - started < 3.0 + 5


@pytest.mark.parametrize("member", ["model.weights.h5", "config.json"])
def test_an_archive_with_two_members_of_one_name_is_refused(tmp_path: Path, member: str) -> None:
    """zipfile and Keras read the last of two same-named members, other tools the first:
    such an archive (one real file hid a pickle behind a second `model.weights.npz`) shows
    different readers different contents, so neither audit nor a rewrite reads it."""
    path = tmp_path / "twice.keras"
    with (
        zipfile.ZipFile(FIXTURES / "cnn.keras") as source,
        zipfile.ZipFile(path, "w") as target,
    ):
        for name in source.namelist():
            target.writestr(name, source.read(name))
        with pytest.warns(UserWarning, match="Duplicate name"):
            target.writestr(member, b"something else")
    with pytest.raises(ModelLoadError, match=f"twice.keras: .*two members named '{member}'"):
        files.read_config(path)


def test_a_legitimate_deflated_model_is_not_refused(tmp_path: Path) -> None:
    """Real weights compress a little; the bomb thresholds leave such files alone."""
    path = tmp_path / "deflated.keras"
    with (
        zipfile.ZipFile(FIXTURES / "cnn.keras") as source,
        zipfile.ZipFile(path, "w", compression=zipfile.ZIP_DEFLATED) as target,
    ):
        for name in source.namelist():
            target.writestr(name, source.read(name))
    assert files.read_config(path) == files.read_config(FIXTURES / "cnn.keras")


# ---------------------------------------------------------------- interrupted writes

TEMPORARY_GLOB = ".out.keras.*.tmp.keras"


def _spawn_add(folder: Path) -> subprocess.Popen[bytes]:
    env = {k: v for k, v in os.environ.items() if k != "TF_CPP_MIN_LOG_LEVEL"}
    command = ["-m", "normify", "add", str(FIXTURES / "cnn.keras"), "-o", "out.keras", "--force"]
    return subprocess.Popen(
        [sys.executable, *command],
        cwd=folder,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )


def _kill_when(process: subprocess.Popen[bytes], folder: Path, point: str) -> str:
    """SIGKILL the process at `point`: `import` (0.5 s in, before anything is written),
    `temp` (as soon as the temporary file appears), `temp+N` (N ms after that), or
    `late` (polling stops when the process ends: it may have finished)."""
    earlier = set(folder.glob(TEMPORARY_GLOB))  # left by the runs killed before
    if point == "import":
        time.sleep(0.5)
    else:
        deadline = time.monotonic() + 120
        while set(folder.glob(TEMPORARY_GLOB)) <= earlier and process.poll() is None:
            if time.monotonic() > deadline:
                break
            time.sleep(0.0005)
        if "+" in point:
            time.sleep(int(point.split("+")[1]) / 1000)
    finished = process.poll() is not None
    process.send_signal(signal.SIGKILL)
    process.communicate()
    return "finished before the kill" if finished else "killed"


@pytest.fixture(scope="module")
def cnn_predictions() -> tuple[list[np.ndarray], list[np.ndarray]]:
    keras = pytest.importorskip("keras")
    inputs = inputs_for(MANIFEST["cnn.keras"]["inputs"])
    return inputs, predict(keras.saving.load_model(FIXTURES / "cnn.keras"), inputs)


def _is_complete_new_output(
    path: Path, expected: tuple[list[np.ndarray], list[np.ndarray]]
) -> bool:
    import keras

    inputs, before = expected
    model = keras.saving.load_model(path)
    names = {layer.name for layer in model.layers}
    return "conv2d_bn" in names and max_relative_difference(before, predict(model, inputs)) < 1e-5


def test_sigkill_while_writing_leaves_the_previous_or_the_complete_file(
    tmp_path: Path, cnn_predictions: tuple[list[np.ndarray], list[np.ndarray]]
) -> None:
    previous = (FIXTURES / "mlp.keras").read_bytes()  # an earlier, complete file
    target = tmp_path / "out.keras"
    target.write_bytes(previous)
    seen = {}
    for point in ("import", "temp", "temp+2", "temp+20", "temp+150"):
        how = _kill_when(_spawn_add(tmp_path), tmp_path, point)
        state = target.read_bytes()
        if state == previous:
            seen[point] = f"{how}: previous file"
        else:
            assert _is_complete_new_output(target, cnn_predictions), point
            seen[point] = f"{how}: complete new file"
            target.write_bytes(previous)  # so the next kill point is judged the same way
    leftovers = sorted(path.name for path in tmp_path.glob(TEMPORARY_GLOB))
    print(f"kill points: {seen}; temporary files left by SIGKILL: {leftovers}")
    assert set(path.name for path in tmp_path.iterdir()) <= {"out.keras", *leftovers}

    # A normal run afterwards succeeds, writes the complete file, and touches no one
    # else's files: the killed runs' temporaries stay (they may belong to a live run).
    result = _spawn_add(tmp_path)
    _, stderr = result.communicate(timeout=300)
    assert (result.returncode, stderr) == (0, b""), stderr
    assert _is_complete_new_output(target, cnn_predictions)
    after = sorted(path.name for path in tmp_path.glob(TEMPORARY_GLOB))
    assert after == leftovers


# A layer that loads fine and fails to save its weights when told to: an error in the
# middle of writing the output (a full disk, a failing filesystem) without root or quotas.
FRAGILE_LAYER = """\
import os

import keras


@keras.saving.register_keras_serializable(package="normify_hostile")
class Fragile(keras.layers.Layer):
    def build(self, input_shape):
        self.scale = self.add_weight(shape=(input_shape[-1],), initializer="ones", name="scale")

    def call(self, inputs):
        return inputs * self.scale

    def save_own_variables(self, store):
        if os.environ.get("NORMIFY_TEST_BREAK_SAVE"):
            raise OSError(28, "No space left on device (simulated)")
        super().save_own_variables(store)
"""

MAKE_FRAGILE = """\
import importlib.util, sys
import keras
spec = importlib.util.spec_from_file_location("fragile", "fragile.py")
fragile = importlib.util.module_from_spec(spec)
spec.loader.exec_module(fragile)
inputs = keras.Input((8,), name="x")
hidden = keras.layers.Dense(8, activation="relu")(inputs)
hidden = fragile.Fragile(name="fragile")(hidden)
keras.Model(inputs, keras.layers.Dense(2)(hidden)).save("fragile.keras")
"""


def test_an_error_while_writing_leaves_no_temporary_file(tmp_path: Path) -> None:
    (tmp_path / "fragile.py").write_text(FRAGILE_LAYER)
    env = {k: v for k, v in os.environ.items() if k != "TF_CPP_MIN_LOG_LEVEL"}
    env["PYTHONDONTWRITEBYTECODE"] = "1"
    made = subprocess.run(
        [sys.executable, "-c", MAKE_FRAGILE], cwd=tmp_path, env=env, capture_output=True
    )
    assert made.returncode == 0, made.stderr
    previous = b"an earlier result"
    (tmp_path / "out.keras").write_bytes(previous)
    before = sorted(path.name for path in tmp_path.iterdir())
    env["NORMIFY_TEST_BREAK_SAVE"] = "1"
    command = ["add", "fragile.keras", "-o", "out.keras", "--force"]
    result = subprocess.run(
        [sys.executable, "-m", "normify", *command, "--custom-objects", "fragile.py"],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert result.returncode == 2, result.stderr
    assert result.stderr.count("\n") == 1 and "Traceback" not in result.stderr, result.stderr
    assert "No space left on device" in result.stderr
    assert sorted(path.name for path in tmp_path.iterdir()) == before
    assert (tmp_path / "out.keras").read_bytes() == previous
