"""`add` on a `.keras` file builds the new model once, reading the weights straight from
the file (`normify.weightfile`), instead of loading the model with Keras and rebuilding
it. Whatever the model, the result must be exactly what the standard path gives: the
same config, every weight bit for bit, the same report; and anything the one build
cannot do must fall back to the standard path, never to a half-loaded model."""

from __future__ import annotations

import json
import shutil
import warnings
import zipfile

import numpy as np
import pytest
from conftest import FIXTURES
from helpers import as_numpy, assert_same_weights, predict_in_fresh_process
from test_architectures import ARCHITECTURES

import normify
import normify.api as api
from normify import files, weightfile
from normify import graph as graphs
from normify.keras_internals import mend_saving_cache
from normify.saving import save_model

keras = pytest.importorskip("keras")
layers = keras.layers

pytestmark = pytest.mark.filterwarnings("ignore::UserWarning")


class OneBuildSpy:
    """Records whether each `add` took the one-build path (chosen up front)."""

    def __init__(self, monkeypatch):
        self.taken: list[bool] = []
        original = api.builds_from_file

        def spy(*args, **kwargs):
            chosen = original(*args, **kwargs)
            self.taken.append(chosen)
            return chosen

        monkeypatch.setattr(api, "builds_from_file", spy)


def add_both_ways(path, monkeypatch, **options):
    """`add` through the one build (asserted taken), then through Keras' load + rebuild."""
    spy = OneBuildSpy(monkeypatch)
    one_build = normify.add(path, **options)
    assert spy.taken == [True], "the one-build path was not taken"
    with monkeypatch.context() as patch:
        patch.setattr(weightfile, "readable", lambda *args: False)
        standard = normify.add(path, **options)
    assert spy.taken == [True, False]
    return one_build, standard


def assert_same_result(one_build, standard):
    assert one_build.model.to_json() == standard.model.to_json()
    ours = [(v.path, v.numpy()) for v in one_build.model.weights]
    theirs = [(v.path, v.numpy()) for v in standard.model.weights]
    assert [path for path, _ in ours] == [path for path, _ in theirs]
    for (path, value), (_, expected) in zip(ours, theirs, strict=True):
        assert value.dtype == expected.dtype, path
        assert value.tobytes() == expected.tobytes(), f"{path} differs"
    assert [v.trainable for v in one_build.model.weights] == [
        v.trainable for v in standard.model.weights
    ]
    assert one_build.report.to_json() == standard.report.to_json()
    assert one_build.model.compiled == standard.model.compiled
    if standard.model.compiled:
        assert one_build.model.get_compile_config() == standard.model.get_compile_config()


def randomized(model, seed=0):
    rng = np.random.default_rng(seed)
    for variable in model.weights:
        if variable.trainable or "moving" in variable.path:
            value = rng.standard_normal(variable.shape) * 0.3
            if "variance" in variable.path:
                value = np.abs(value) + 0.5
            variable.assign(value.astype(variable.dtype))
    return model


# -------------------------------------------------------------------------- fixtures

ONE_BUILD_FIXTURES = [
    "cnn",
    "gru_tagger",
    "mlp",
    "multi_io",
    "nested",
    "ops_model",
    "partial_bn_cnn",
    "seq2seq",
    "shared_dense",
    "text_bilstm",
]


FIXTURE_OPTIONS = {
    "pre": {"position": "pre"},
    # a normalized output layer renames the layer that produced it (`<name>_core`)
    "post-output": {"position": "post", "include_output": True},
}
FIXTURE_CASES = [
    (name, options)
    for name in ONE_BUILD_FIXTURES
    for options in FIXTURE_OPTIONS
    if (name, options) != ("seq2seq", "pre")  # its only dense layer is an output
]


@pytest.mark.parametrize(("name", "options"), FIXTURE_CASES)
def test_fixture_one_build_equals_load_and_rebuild(name, options, monkeypatch):
    one_build, standard = add_both_ways(
        FIXTURES / f"{name}.keras", monkeypatch, rnn="none", **FIXTURE_OPTIONS[options]
    )
    assert one_build.report.changes
    assert_same_result(one_build, standard)


def test_model_with_nothing_to_insert_is_built_once_too(monkeypatch):
    spy = OneBuildSpy(monkeypatch)
    result = normify.add(FIXTURES / "conv_bn.keras")
    assert spy.taken == [True] and not result.report.changes
    original = keras.saving.load_model(FIXTURES / "conv_bn.keras")
    assert_same_weights(original, result.model)


@pytest.mark.parametrize(
    "options",
    [{"rnn": "layernorm"}, {"dense": "layernorm"}, {"init": "fresh"}, {"measure_drift": True}],
    ids=["rnn-layernorm", "dense-layernorm", "init-fresh", "drift"],
)
def test_rewrites_that_need_the_original_model_load_it(options, monkeypatch):
    spy = OneBuildSpy(monkeypatch)
    result = normify.add(FIXTURES / "text_bilstm.keras", **options)
    assert spy.taken == [False]  # decided before planning
    assert result.report.drift is not None


# ---------------------------------------------------------------------- architectures


@pytest.mark.parametrize("name", sorted(ARCHITECTURES))
def test_architecture_one_build_equals_load_and_rebuild(name, tmp_path, monkeypatch):
    keras.utils.set_random_seed(1)
    model, _ = ARCHITECTURES[name]()
    path = save_model(randomized(model), tmp_path / "original.keras")
    # safe_mode off for the Lambda layer's architecture, as its own test loads it
    one_build, standard = add_both_ways(path, monkeypatch, rnn="batchnorm", safe_mode=False)
    assert_same_result(one_build, standard)


def _tower(name):
    return keras.Sequential(
        [keras.Input((4,)), layers.Dense(5, activation="relu"), layers.Dense(4)], name=name
    )


def _encoder():
    inputs = keras.Input((4,))
    x = layers.Dense(6, activation="tanh")(inputs)
    x = layers.Dropout(0.3)(x)
    return keras.Model(inputs, layers.Dense(4)(x), name="encoder")


def model_with_kept_and_changed_nested_models():
    """Nested models at two depths, one left alone by the rules (deserialized whole), one
    edited inside; the same Dense class at every level (the file numbers layers by class
    within each model); a frozen layer, noise and dropout layers (seed state), ops."""
    inputs = keras.Input((4,), name="x")
    inner = _tower("inner")
    outer_in = keras.Input((4,))
    outer = keras.Model(
        outer_in, layers.Dense(4, name="outer_dense")(inner(outer_in)), name="outer"
    )
    frozen = layers.Dense(4, activation="relu", name="frozen", trainable=False)
    x = frozen(inputs)
    x = layers.GaussianNoise(0.1)(x)
    a = _encoder()(x)
    b = outer(x)
    c = _tower("kept_tower")(x)
    merged = keras.ops.concatenate([a, b, c], axis=-1)
    return keras.Model(inputs, layers.Dense(2, name="head")(merged))


def test_nested_models_kept_and_changed(tmp_path, monkeypatch):
    keras.utils.set_random_seed(3)
    model = randomized(model_with_kept_and_changed_nested_models())
    path = save_model(model, tmp_path / "nested.keras")
    one_build, standard = add_both_ways(path, monkeypatch, exclude=["kept_tower/*", "encoder/*"])
    assert_same_result(one_build, standard)
    targets = {insertion.path for insertion in one_build.report.changes}
    assert {"frozen", "outer/outer_dense"} <= targets
    assert any(target.startswith("outer/inner/") for target in targets)
    assert not any(t.startswith(("kept_tower/", "encoder/")) for t in targets)
    assert one_build.model.get_layer("frozen").trainable is False


def test_compiled_model(tmp_path, monkeypatch):
    keras.utils.set_random_seed(4)
    inputs = keras.Input((6,))
    x = layers.Dense(8, activation="relu")(inputs)
    model = keras.Model(inputs, layers.Dense(3, activation="softmax")(x))
    model.compile(optimizer=keras.optimizers.Adam(1e-3), loss="categorical_crossentropy")
    model.fit(np.ones((8, 6)), np.eye(3)[np.arange(8) % 3], epochs=1, verbose=0)
    path = save_model(model, tmp_path / "compiled.keras")
    one_build, standard = add_both_ways(path, monkeypatch)
    assert one_build.model.compiled
    assert_same_result(one_build, standard)


def test_one_build_output_reloads_in_a_fresh_process(tmp_path, monkeypatch):
    keras.utils.set_random_seed(5)
    model = randomized(model_with_kept_and_changed_nested_models())
    path = save_model(model, tmp_path / "original.keras")
    spy = OneBuildSpy(monkeypatch)
    result = normify.add(path)
    assert spy.taken == [True]
    output = save_model(result.model, tmp_path / "rewritten.keras")
    inputs = np.random.default_rng(0).standard_normal((5, 4)).astype("float32")
    expected = as_numpy(model(inputs, training=False))
    reloaded = predict_in_fresh_process(output, inputs, tmp_path)
    assert np.max(np.abs(reloaded - expected)) <= 1e-5 * max(1.0, np.max(np.abs(expected)))


# ------------------------------------------------------------------ what it refuses


def test_readable_only_plain_keras3_archives(tmp_path):
    def readable(path):
        return weightfile.readable(files.read_model_file(path))

    assert readable(FIXTURES / "mlp.keras")
    assert not readable(FIXTURES / "legacy_mlp.h5")
    extra = tmp_path / "extra.keras"
    shutil.copy(FIXTURES / "mlp.keras", extra)
    with zipfile.ZipFile(extra, "a") as archive:
        archive.writestr("assets/vocabulary.txt", "a\nb\n")
    assert not readable(extra)
    old = tmp_path / "old.keras"
    with zipfile.ZipFile(FIXTURES / "mlp.keras") as source, zipfile.ZipFile(old, "w") as target:
        for name in source.namelist():
            data = source.read(name)
            if name == "metadata.json":
                data = json.dumps({**json.loads(data), "keras_version": "2.15.0"}).encode()
            target.writestr(name, data)
    assert not readable(old)


def test_weights_left_unread_are_refused():
    path = FIXTURES / "mlp.keras"
    graph = graphs.from_config(files.read_config(path), source=path)
    with weightfile.WeightFile(path, graph) as weights:
        with pytest.raises(weightfile.WeightFileError, match="weights left unread: layers/"):
            weights.check_all_read()


def test_a_failure_in_the_one_build_is_an_error_not_a_fallback(monkeypatch):
    def refuse(self):
        raise weightfile.WeightFileError("weights left unread: layers/dense")

    monkeypatch.setattr(weightfile.WeightFile, "check_all_read", refuse)
    with pytest.raises(weightfile.WeightFileError, match="weights left unread"):
        normify.add(FIXTURES / "mlp.keras")


def test_weight_groups_follow_keras_layout():
    """Keras' own save names the groups: compare with the file's actual groups."""
    import h5py

    path = FIXTURES / "nested.keras"
    graph = graphs.from_config(files.read_config(path), source=path)
    expected = set(weightfile.weight_groups(graph).values())
    with zipfile.ZipFile(path) as archive, archive.open(weightfile.WEIGHTS) as handle:
        stored = set()
        with h5py.File(handle, "r") as h5:
            h5.visititems(
                lambda name, item: (
                    stored.add(name.rsplit("/vars", 1)[0])
                    if name.endswith("/vars") and len(item)
                    else None
                )
            )
    assert stored and stored <= expected


# --------------------------------------------------------------- Keras' saving cache


def test_saving_skipsets_are_cached_with_the_value_keras_computes():
    from keras.src.saving import saving_lib

    mend_saving_cache()
    first = saving_lib.get_attr_skipset("Layer")
    assert saving_lib.get_attr_skipset("Layer") is first
    assert {name for name in dir(keras.layers.Layer()) if not name.startswith("__")} <= first
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        keras.backend.clear_session()
    mend_saving_cache()  # refilled after Keras' global state was cleared
    assert saving_lib.get_attr_skipset("Functional") is saving_lib.get_attr_skipset("Functional")


# ------------------------------------------------------------ the command line's GC


def test_cli_rewrite_keeps_imports_out_of_collections_then_hands_them_back(tmp_path, monkeypatch):
    import gc

    from helpers import run_cli

    frozen_during = []
    original_add = api.add

    def add(*args, **kwargs):
        frozen_during.append(gc.get_freeze_count())
        return original_add(*args, **kwargs)

    monkeypatch.setattr(api, "add", add)
    result = run_cli("add", FIXTURES / "mlp.keras", "-o", tmp_path / "out.keras")
    assert result.exit_code == 0, result.output
    assert frozen_during and frozen_during[0] > 10_000  # Keras and TensorFlow's objects
    assert gc.get_freeze_count() == 0


def test_a_channels_first_model_goes_through_keras(tmp_path, monkeypatch):
    """Whether Keras misapplied a channels_first bias depends on output shapes the live
    model knows: such a model is loaded, decided before planning."""
    inputs = keras.Input((3, 6, 6))
    outputs = layers.Conv2D(4, 3, data_format="channels_first", name="conv")(inputs)
    path = save_model(keras.Model(inputs, outputs), tmp_path / "cf.keras")
    spy = OneBuildSpy(monkeypatch)
    result = normify.add(path, include_output=True)
    assert spy.taken == [False]
    (insertion,) = result.report.changes
    assert insertion.bias_moved and insertion.note and not insertion.exact  # width 4 == 4 channels


def test_big_weights_are_read_from_an_extracted_file_removed_afterwards(tmp_path, monkeypatch):
    """Weights that would take over half the available memory are extracted beside the
    model, as Keras does, not read into memory; the extracted copy does not outlive add."""
    path = tmp_path / "mlp.keras"
    shutil.copy(FIXTURES / "mlp.keras", path)
    monkeypatch.setattr(weightfile, "_available_memory", lambda: 1)
    extracted = []
    original_source = weightfile.WeightFile._weights_source

    def source(self):
        found = original_source(self)
        extracted.append(found)
        return found

    monkeypatch.setattr(weightfile.WeightFile, "_weights_source", source)
    one_build, standard = add_both_ways(path, monkeypatch)
    assert_same_result(one_build, standard)
    (weights_file,) = extracted
    assert weights_file.name == weightfile.WEIGHTS and weights_file.parent.parent == tmp_path
    assert sorted(p.name for p in tmp_path.iterdir()) == ["mlp.keras"]
