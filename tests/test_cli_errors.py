"""The command line's error contract, checked by running `python -m normify` for real.

For every bad input, `normify add` and `normify audit` exit with code 2, print exactly one
line on stderr naming the file and the cause, print no traceback, write nothing (no
output, no temporary file) and leave the input byte-for-byte untouched. A successful run
prints nothing on stderr, and the commands that need no backend never import one.

Every subprocess that imports TensorFlow costs seconds, so the models that need Keras to
be written are made by one script, once per module, and reused.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import zipfile
from collections.abc import Callable
from pathlib import Path

import h5py
import numpy as np
import pytest

from normify.errors import first_line

ROOT = Path(__file__).resolve().parent.parent
FIXTURES = ROOT / "fixtures"
MLP = FIXTURES / "mlp.keras"
CNN = FIXTURES / "cnn.keras"

ERROR_PREFIX = "normify: error: "

# A custom layer with a weight, registered when its file is imported (as --custom-objects
# imports it); the model saved with it cannot be loaded without this file.
SCALE_LAYER = '''\
import keras


@keras.saving.register_keras_serializable(package="normify_test")
class Scale(keras.layers.Layer):
    """Multiplies its input by a learned per-feature scale."""

    def build(self, input_shape):
        self.scale = self.add_weight(
            shape=(input_shape[-1],), initializer="ones", name="scale"
        )

    def call(self, inputs):
        return inputs * self.scale
'''

# A --custom-objects file that imports fine but does not define the class a model needs.
UNRELATED_OBJECTS = """\
def unrelated(x):
    return x
"""

# Writes every model file that needs Keras, in one process: argv[1] is the folder, which
# already holds scale_layer.py.
MAKE_MODELS = """\
import importlib.util
import shutil
import sys
from pathlib import Path

import keras
import numpy as np

out = Path(sys.argv[1])
mlp = Path(sys.argv[2])

# 8: weights only, under its usual name and under a plain .h5 name.
keras.saving.load_model(mlp).save_weights(out / "mlp.weights.h5")
shutil.copyfile(out / "mlp.weights.h5", out / "renamed_weights.h5")


# 11: a subclassed model whose class only this process knows.
@keras.saving.register_keras_serializable(package="t")
class Sub(keras.Model):
    def __init__(self, units=4, **kwargs):
        super().__init__(**kwargs)
        self.units = units
        self.hidden = keras.layers.Dense(units, activation="relu")
        self.head = keras.layers.Dense(2)

    def call(self, inputs):
        return self.head(self.hidden(inputs))

    def get_config(self):
        return {**super().get_config(), "units": self.units}


sub = Sub()
sub(np.zeros((1, 8), "float32"))
sub.save(out / "subclassed.keras")

# 13: a Lambda layer with Python code.
inputs = keras.Input((8,), name="x")
hidden = keras.layers.Dense(8, activation="relu")(inputs)
hidden = keras.layers.Lambda(lambda x: x * 2, name="double")(hidden)
keras.Model(inputs, keras.layers.Dense(2)(hidden)).save(out / "lambda.keras")

# A custom layer with a weight, defined in scale_layer.py.
spec = importlib.util.spec_from_file_location("scale_layer", out / "scale_layer.py")
scale_layer = importlib.util.module_from_spec(spec)
spec.loader.exec_module(scale_layer)
inputs = keras.Input((8,), name="x")
hidden = keras.layers.Dense(8, activation="relu")(inputs)
hidden = scale_layer.Scale(name="scale")(hidden)
keras.Model(inputs, keras.layers.Dense(2)(hidden)).save(out / "scale.keras")
"""


# --------------------------------------------------------------------------- helpers


def run(args: list[str], cwd: Path) -> subprocess.CompletedProcess[str]:
    """Run a Python subprocess as a user would, with TensorFlow's log level unset."""
    env = {k: v for k, v in os.environ.items() if k != "TF_CPP_MIN_LOG_LEVEL"}
    return subprocess.run(
        [sys.executable, *args], cwd=cwd, env=env, capture_output=True, text=True, timeout=300
    )


def normify(*args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    return run(["-m", "normify", *args], cwd)


def snapshot(folder: Path) -> dict[str, tuple[bytes, int] | None]:
    """Every path under `folder` (hidden ones too) with its bytes and mtime."""
    state: dict[str, tuple[bytes, int] | None] = {}
    for path in sorted(folder.rglob("*")):
        key = str(path.relative_to(folder))
        state[key] = None if path.is_dir() else (path.read_bytes(), path.stat().st_mtime_ns)
    return state


def new_paths(before: dict[str, object], after: dict[str, object]) -> set[str]:
    return set(after) - set(before)


def assert_one_error_line(result: subprocess.CompletedProcess[str], *fragments: str) -> str:
    """Exit 2 and exactly one stderr line, starting with the prefix and holding `fragments`."""
    stderr = result.stderr
    assert "Traceback" not in stderr, stderr
    assert result.returncode == 2, (result.returncode, stderr, result.stdout)
    assert stderr.endswith("\n") and stderr.count("\n") == 1, repr(stderr)
    line = stderr.rstrip("\n")
    assert line.startswith(ERROR_PREFIX), line
    for fragment in fragments:
        assert fragment in line, (fragment, line)
    return line


def assert_clean_failure(
    result: subprocess.CompletedProcess[str],
    before: dict[str, object],
    after: dict[str, object],
    *fragments: str,
) -> str:
    line = assert_one_error_line(result, *fragments)
    assert after == before, f"files changed: {sorted(new_paths(before, after))}"
    return line


def copy_into(source: Path, folder: Path) -> str:
    """Copy a bad input (file or folder, keeping mtimes) into `folder`; return its name."""
    target = folder / source.name
    if source.is_dir():
        shutil.copytree(source, target)
    else:
        shutil.copy2(source, target)
    return source.name


def rewrite_keras(source: Path, target: Path, replace: dict[str, bytes | None]) -> None:
    """Copy the .keras zip `source` to `target`, replacing (or dropping, for None) members."""
    with zipfile.ZipFile(source) as old, zipfile.ZipFile(target, "w") as new:
        for name in old.namelist():
            if name not in replace:
                new.writestr(name, old.read(name))
            elif replace[name] is not None:
                new.writestr(name, replace[name])


# -------------------------------------------------------------------------- bad files


def _directory(folder: Path) -> Path:
    path = folder / "models_dir"
    path.mkdir()
    (path / "notes.txt").write_text("not a model\n")
    return path


def _empty(folder: Path) -> Path:
    path = folder / "empty.keras"
    path.write_bytes(b"")
    return path


def _truncated(folder: Path) -> Path:
    data = MLP.read_bytes()
    path = folder / "truncated.keras"
    path.write_bytes(data[: len(data) // 2])
    return path


def _not_zip(folder: Path) -> Path:
    path = folder / "text.keras"
    path.write_text("this is a text file, not a model\n")
    return path


def _bad_json(folder: Path) -> Path:
    path = folder / "bad_json.keras"
    rewrite_keras(MLP, path, {"config.json": b'{"class_name": "Sequential", '})
    return path


def _no_weights(folder: Path) -> Path:
    path = folder / "no_weights.keras"
    rewrite_keras(MLP, path, {"model.weights.h5": None})
    return path


def _h5_not_model(folder: Path) -> Path:
    path = folder / "data.h5"
    with h5py.File(path, "w") as handle:
        handle.create_dataset("random", data=np.random.default_rng(0).random((4, 4)))
    return path


def _saved_model(folder: Path) -> Path:
    path = folder / "exported"
    (path / "variables").mkdir(parents=True)
    (path / "saved_model.pb").write_bytes(b"\x08\x01")
    return path


def _corrupt_weights(folder: Path) -> Path:
    path = folder / "corrupt_weights.keras"
    rewrite_keras(MLP, path, {"model.weights.h5": b"not hdf5 " * 100})
    return path


def _unknown_layer(folder: Path) -> Path:
    with zipfile.ZipFile(MLP) as archive:
        config = json.loads(archive.read("config.json"))
    layer = next(e for e in config["config"]["layers"] if e["class_name"] == "Dropout")
    layer.update(class_name="NoSuchLayer", module="mypkg.layers", registered_name="NoSuchLayer")
    path = folder / "unknown_layer.keras"
    rewrite_keras(MLP, path, {"config.json": json.dumps(config).encode()})
    return path


# name -> (builder of the bad input in a folder, or None for a missing file; what the
# error line must say). `models` stands for the files written by MAKE_MODELS.
BuildBad = Callable[[Path, Path], Path]
BAD_INPUTS: dict[str, tuple[BuildBad | None, tuple[str, ...]]] = {
    "missing": (None, ("no such file",)),
    "directory": (lambda folder, models: _directory(folder), ("is a directory",)),
    "empty": (lambda folder, models: _empty(folder), ("is empty",)),
    "truncated": (lambda folder, models: _truncated(folder), ("truncated",)),
    "not_zip": (lambda folder, models: _not_zip(folder), ("not a zip",)),
    "bad_json": (lambda folder, models: _bad_json(folder), ("config.json", "not valid JSON")),
    "no_weights": (lambda folder, models: _no_weights(folder), ("has no weights",)),
    "weights_only": (lambda folder, models: models / "mlp.weights.h5", ("weights-only",)),
    "renamed_weights_only": (
        lambda folder, models: models / "renamed_weights.h5",
        ("weights-only",),
    ),
    "h5_not_model": (lambda folder, models: _h5_not_model(folder), ("not a Keras model",)),
    "saved_model": (lambda folder, models: _saved_model(folder), ("SavedModel",)),
}


@pytest.fixture(scope="module")
def models(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The folder of model files that need Keras to be written (one subprocess)."""
    folder = tmp_path_factory.mktemp("models")
    (folder / "scale_layer.py").write_text(SCALE_LAYER)
    result = run(["-c", MAKE_MODELS, str(folder), str(MLP)], folder)
    assert result.returncode == 0, result.stderr
    shutil.rmtree(folder / "__pycache__", ignore_errors=True)
    return folder


@pytest.fixture(scope="module")
def bad_inputs(tmp_path_factory: pytest.TempPathFactory, models: Path) -> dict[str, Path]:
    folder = tmp_path_factory.mktemp("bad")
    built = {"unknown_layer": _unknown_layer(folder), "corrupt_weights": _corrupt_weights(folder)}
    for name, (build, _) in BAD_INPUTS.items():
        built[name] = folder / "missing.keras" if build is None else build(folder, models)
    return built


# ------------------------------------------------------------------- bad model inputs


@pytest.mark.parametrize("command", ["add", "audit"])
@pytest.mark.parametrize("case", sorted(BAD_INPUTS))
def test_bad_input_fails_with_one_line_and_writes_nothing(
    command: str, case: str, bad_inputs: dict[str, Path], tmp_path: Path
) -> None:
    source = bad_inputs[case]
    name = copy_into(source, tmp_path) if source.exists() else source.name
    before = snapshot(tmp_path)
    result = normify(command, name, cwd=tmp_path)
    assert_clean_failure(result, before, snapshot(tmp_path), name, *BAD_INPUTS[case][1])


# Models whose config is readable but that Keras cannot load as they are: `add` fails,
# `audit` (config only) succeeds.
UNLOADABLE = {
    "corrupt_weights": ("corrupt_weights.keras", ("has corrupt weights",)),
    # refused from its config (a subclass normify cannot rewrite) before Keras loads it
    "subclassed": ("subclassed.keras", ("Sub", "model subclass", "Functional and Sequential")),
    "unknown_layer": (
        "unknown_layer.keras",
        ("'NoSuchLayer'", "not registered", "--custom-objects"),
    ),
    "lambda": ("lambda.keras", ("Lambda", "--unsafe")),
}


def _unloadable_path(case: str, models: Path, bad_inputs: dict[str, Path]) -> Path:
    return bad_inputs[case] if case in bad_inputs else models / UNLOADABLE[case][0]


@pytest.mark.parametrize("case", sorted(UNLOADABLE))
def test_add_refuses_a_model_keras_cannot_load(
    case: str, models: Path, bad_inputs: dict[str, Path], tmp_path: Path
) -> None:
    name = copy_into(_unloadable_path(case, models, bad_inputs), tmp_path)
    before = snapshot(tmp_path)
    result = normify("add", name, cwd=tmp_path)
    assert_clean_failure(result, before, snapshot(tmp_path), name, *UNLOADABLE[case][1])


@pytest.mark.parametrize(
    ("case", "opaque", "dense"),
    [
        ("subclassed", ["Sub"], 0),
        ("unknown_layer", ["NoSuchLayer"], 3),
        ("lambda", ["Lambda"], 2),
    ],
)
def test_audit_reads_the_config_of_a_model_keras_cannot_load(
    case: str,
    opaque: list[str],
    dense: int,
    models: Path,
    bad_inputs: dict[str, Path],
    tmp_path: Path,
) -> None:
    """Audit needs no class and runs no code: it succeeds and says what it cannot see."""
    name = copy_into(_unloadable_path(case, models, bad_inputs), tmp_path)
    before = snapshot(tmp_path)
    result = normify("audit", name, "--json", cwd=tmp_path)
    assert (result.returncode, result.stderr) == (0, "")
    assert snapshot(tmp_path) == before
    report = json.loads(result.stdout)
    assert [part["class"] for part in report["opaque"]] == opaque
    assert report["summary"]["dense"]["total"] == dense


def test_audit_refuses_corrupt_weights_it_reads_the_shapes_of(
    models: Path, bad_inputs: dict[str, Path], tmp_path: Path
) -> None:
    """Audit reads the stored weights' shapes (not their data): corrupt weights are one line."""
    name = copy_into(_unloadable_path("corrupt_weights", models, bad_inputs), tmp_path)
    before = snapshot(tmp_path)
    result = normify("audit", name, cwd=tmp_path)
    assert_clean_failure(result, before, snapshot(tmp_path), name, "has corrupt weights")


def test_audit_require_on_an_opaque_model_fails(models: Path, tmp_path: Path) -> None:
    name = copy_into(models / "subclassed.keras", tmp_path)
    before = snapshot(tmp_path)
    result = normify("audit", name, "--require", "dense=batchnorm", cwd=tmp_path)
    assert_clean_failure(result, before, snapshot(tmp_path), name, "cannot check --require")


def test_add_unsafe_loads_a_lambda_model(models: Path, tmp_path: Path) -> None:
    name = copy_into(models / "lambda.keras", tmp_path)
    before = snapshot(tmp_path)
    result = normify("add", name, "--unsafe", cwd=tmp_path)
    assert (result.returncode, result.stderr) == (0, ""), result.stderr
    assert new_paths(before, snapshot(tmp_path)) == {"lambda.normified.keras"}
    assert (tmp_path / name).read_bytes() == (models / "lambda.keras").read_bytes()


# --------------------------------------------------------------------- custom objects


def test_add_names_the_unregistered_custom_layer(models: Path, tmp_path: Path) -> None:
    name = copy_into(models / "scale.keras", tmp_path)
    (tmp_path / "unrelated.py").write_text(UNRELATED_OBJECTS)
    before = snapshot(tmp_path)
    # An objects file that does not define the class helps nothing, and is not compiled
    # into a __pycache__ beside it. PYTHONDONTWRITEBYTECODE (set in some environments)
    # would hide that, so the CLI runs with bytecode writing on once Keras is imported.
    argv = ["add", name, "--custom-objects", "unrelated.py"]
    code = (
        "import sys; from normify.backend import keras; keras(); "
        "import normify.api, normify.cli, normify.loading, normify.saving, normify.rebuild; "
        f"sys.dont_write_bytecode = False; normify.cli.main({argv!r})"
    )
    result = run(["-c", code], tmp_path)
    fragments = ("'Scale'", "not registered", "--custom-objects")
    assert_clean_failure(result, before, snapshot(tmp_path), name, *fragments)


def test_add_with_custom_objects_file_succeeds(models: Path, tmp_path: Path) -> None:
    name = copy_into(models / "scale.keras", tmp_path)
    copy_into(models / "scale_layer.py", tmp_path)
    before = snapshot(tmp_path)
    result = normify(
        "add", name, "-o", "out.keras", "--custom-objects", "scale_layer.py", cwd=tmp_path
    )
    assert (result.returncode, result.stderr) == (0, ""), result.stderr
    assert "wrote out.keras (1 norm layer(s) inserted)" in result.stdout
    assert new_paths(before, snapshot(tmp_path)) == {"out.keras"}


def test_add_refuses_a_missing_custom_objects_file(tmp_path: Path) -> None:
    before = snapshot(tmp_path)
    result = normify("add", str(MLP), "--custom-objects", "nope.py", cwd=tmp_path)
    assert_clean_failure(result, before, snapshot(tmp_path), "nope.py", "does not exist")


# ----------------------------------------------------------------------- output paths


@pytest.mark.parametrize(
    ("output", "extra", "fragments"),
    [
        ("out.keras", (), ("out.keras", "already exists", "--force")),
        ("./in.keras", ("--force",), ("in.keras", "is the input")),
        ("no_such_dir/out.keras", (), ("no_such_dir/out.keras", "folder does not exist")),
        ("out.txt", (), ("out.txt", "must end in .keras")),
    ],
    ids=["exists", "is_input", "no_folder", "bad_suffix"],
)
def test_add_refuses_the_output_path(
    output: str, extra: tuple[str, ...], fragments: tuple[str, ...], tmp_path: Path
) -> None:
    copy_into(MLP, tmp_path)
    (tmp_path / "mlp.keras").rename(tmp_path / "in.keras")
    (tmp_path / "out.keras").write_bytes(b"an earlier result")
    before = snapshot(tmp_path)
    result = normify("add", "in.keras", "-o", output, *extra, cwd=tmp_path)
    assert_clean_failure(result, before, snapshot(tmp_path), *fragments)


# ------------------------------------------------------------------ quiet and lazy


def test_successful_add_prints_nothing_on_stderr(tmp_path: Path) -> None:
    result = normify("add", str(MLP), "-o", "out.keras", cwd=tmp_path)
    assert (result.returncode, result.stderr) == (0, "")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out.keras"]


def test_successful_audit_prints_nothing_on_stderr(tmp_path: Path) -> None:
    result = normify("audit", str(CNN), cwd=tmp_path)
    assert (result.returncode, result.stderr) == (0, "")
    assert "conv2d" in result.stdout
    assert list(tmp_path.iterdir()) == []


NO_BACKEND = (
    "import sys; "
    "loaded = sorted(m for m in sys.modules if m.split('.')[0] in ('tensorflow', 'keras')); "
    "assert not loaded, loaded"
)


@pytest.mark.parametrize(
    "code",
    [
        "import normify",
        "from normify.cli import main; assert main(['--help'], standalone_mode=False) == 0",
        "from normify.cli import main; assert main(['--version'], standalone_mode=False) == 0",
        f"from normify.cli import main; main(['audit', {str(CNN)!r}], standalone_mode=False)",
    ],
    ids=["import", "help", "version", "audit"],
)
def test_no_backend_is_imported(code: str, tmp_path: Path) -> None:
    result = run(["-c", f"{code}\n{NO_BACKEND}"], tmp_path)
    assert result.returncode == 0, result.stderr


# Nor do they import NumPy, rich (audit --json prints no table) or the rewrite machinery:
# a pre-commit hook or CI job pays for every module at every start.
HEAVY = ("numpy", "keras", "tensorflow", "jax", "torch", "rich", "hashlib", "h5py",
         "normify.api", "normify.rebuild", "normify.verify", "normify.calibrate",
         "normify.data", "normify.loading", "normify.saving", "normify.formats.keras2")  # fmt: skip
REWRITING = ("normify.api", "normify.passes")  # what a dry run plans with; nothing else
LEGACY = ("normify.formats.keras2",)  # the rules for files of older Keras, read there only
NOTHING_HEAVY = """
import sys
heavy = sorted(m for m in sys.modules if m in {heavy!r} or m.split(".")[0] in {heavy!r})
assert not heavy, heavy
"""


@pytest.mark.parametrize(
    ("argv", "allowed"),
    [
        (["audit", str(CNN), "--json"], ()),
        (["audit", str(CNN), str(MLP), "--json"], ()),
        (["audit", str(FIXTURES), "--json", "--require", "dense=any"], LEGACY),
        (["--version"], ()),
        (["--help"], ()),
        (["audit", "--help"], ()),
        (["add", str(CNN), "--dry-run", "--json"], REWRITING),
        (["add", str(CNN), "--dry-run"], REWRITING),
        (["swap", str(CNN), "--from", "batchnorm", "--to", "layernorm", "--dry-run", "--json"],
         REWRITING),
        (["strip", str(CNN), "--dry-run", "--json"], REWRITING),
        (["fold", str(CNN), "--dry-run", "--json"], REWRITING),
        (["recalibrate", str(CNN), "--data", "x.npz", "--dry-run", "--json"], REWRITING),
    ],
    ids=["audit", "audit-two", "audit-folder", "version", "help", "audit-help", "add",
         "add-table", "swap", "strip", "fold", "recalibrate"],
)  # fmt: skip
def test_no_backend_numpy_rich_or_rewrite_machinery_is_imported(
    argv: list[str], allowed: tuple[str, ...], tmp_path: Path
) -> None:
    heavy = tuple(name for name in HEAVY + REWRITING if name not in allowed)
    code = (
        "import contextlib, io\n"
        "from normify.cli import main\n"
        "with contextlib.redirect_stdout(io.StringIO()), contextlib.suppress(SystemExit):\n"
        f"    main({argv!r}, standalone_mode=False)\n" + NOTHING_HEAVY.format(heavy=heavy)
    )
    result = run(["-c", code], tmp_path)
    assert result.returncode == 0, result.stderr


def test_no_backend_for_the_audit_table_and_rich_only_for_it(tmp_path: Path) -> None:
    code = (
        "import contextlib, io, sys\n"
        "from normify.cli import main\n"
        "with contextlib.redirect_stdout(io.StringIO()):\n"
        f"    main(['audit', {str(CNN)!r}], standalone_mode=False)\n"
        "assert 'rich' in sys.modules\n"
        + NOTHING_HEAVY.format(heavy=tuple(name for name in HEAVY if name != "rich"))
    )
    result = run(["-c", code], tmp_path)
    assert result.returncode == 0, result.stderr


@pytest.mark.parametrize("flag", ["--help", "--version"])
def test_help_and_version_exit_zero(flag: str, tmp_path: Path) -> None:
    result = normify(flag, cwd=tmp_path)
    assert (result.returncode, result.stderr) == (0, "")
    assert "normify" in result.stdout


BAD_BATCHNORM = """
import sys
import keras
import numpy as np

inputs = keras.Input((4,))
x = keras.layers.Dense(3, name="dense")(inputs)
x = keras.layers.BatchNormalization(name="bad_bn")(x)
model = keras.Model(inputs, keras.layers.Dense(1, name="out")(x))
model.get_layer("bad_bn").moving_variance.assign(np.array([-1.0, 1.0, 1.0], "float32"))
model.save(sys.argv[1])
"""


@pytest.mark.parametrize("command", ["fold", "strip"])
def test_an_invalid_batchnorm_is_one_line_naming_file_and_layer(
    command: str, tmp_path: Path
) -> None:
    """moving_variance + epsilon <= 0 cannot be folded: the user's line says where and why,
    and names no internal exception class."""
    made = run(["-c", BAD_BATCHNORM, "bad.keras"], tmp_path)
    assert made.returncode == 0, made.stderr
    before = snapshot(tmp_path)
    result = normify(command, "bad.keras", "-o", "out.keras", cwd=tmp_path)
    line = assert_clean_failure(
        result, before, snapshot(tmp_path), "bad.keras", "bad_bn", "moving_variance"
    )
    assert "Error" not in line and "internal error" not in line, line


def test_an_unforeseen_failure_names_no_exception_class(tmp_path: Path) -> None:
    """A bug still gives one line, in words, pointing at --debug; --debug shows the chain."""
    code = (
        "import normify.api, sys\n"
        "def broken(*args, **kwargs):\n"
        "    raise KeyError('lost')\n"
        "normify.api.plan = broken\n"
        "from normify.cli import main\n"
        "main(sys.argv[1:])\n"
    )
    result = run(["-c", code, "add", str(MLP), "--dry-run"], tmp_path)
    line = assert_one_error_line(result, "internal error", "--debug")
    assert "KeyError" not in line, line
    debug = run(["-c", code, "add", str(MLP), "--dry-run", "--debug"], tmp_path)
    assert "KeyError" in debug.stderr and "Traceback" in debug.stderr


def test_a_message_whose_first_line_introduces_the_next_keeps_both() -> None:
    error = ValueError(
        "A total of 1 objects could not be loaded. Example error message for object "
        "<Conv2D name=conv2d>:\n\nLayer 'conv2d' expected 2 variables, but received 0\nmore"
    )
    assert first_line(error) == (
        "A total of 1 objects could not be loaded. Example error message for object "
        "<Conv2D name=conv2d>: Layer 'conv2d' expected 2 variables, but received 0"
    )
    assert first_line(ValueError("one\ntwo")) == "one"
    assert first_line(ValueError("  ")) == "ValueError"
