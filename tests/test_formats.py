"""The format layer's rules one by one, the pure-Python HDF5 reader, the check of stored
weight shapes, and the refusals: every one a single line naming the layer and the cause."""

from __future__ import annotations

import copy
import json
import random
import shutil
import subprocess
import sys
import warnings
import zipfile

import h5py
import numpy as np
import pytest
from conftest import FIXTURES

import normify
from normify import files, formats, hdf5
from normify.errors import ModelLoadError
from normify.formats import arguments, weightmath
from normify.loading import load_model

LEGACY = FIXTURES / "legacy"
FORMATS = FIXTURES / "formats"
H5_FILES = sorted([*FIXTURES.glob("*.h5"), *LEGACY.glob("*.h5"), *FORMATS.glob("*.h5")], key=str)
KERAS_FILES = sorted([*FIXTURES.glob("*.keras"), *LEGACY.glob("*.keras")], key=str)


def repair(config: dict, origin: str = formats.KERAS2) -> tuple[dict, list[formats.Repair]]:
    translation = arguments.fit(formats.translate(config, formats.Origin(origin)))
    return translation.config, translation.repairs


def functional(*layers: dict, outputs: list) -> dict:
    inputs = [[layers[0]["name"], 0, 0]]
    config = {"name": "m", "layers": list(layers), "input_layers": inputs, "output_layers": outputs}
    return {"class_name": "Model", "config": config}


def layer(class_name: str, name: str, inbound: list, **config) -> dict:
    return {
        "class_name": class_name,
        "name": name,
        "config": {"name": name, **config},
        "inbound_nodes": [[[*ref, {}] for ref in inbound]] if inbound else [],
    }


def input_layer(name: str, shape: list) -> dict:
    return layer("InputLayer", name, [], batch_input_shape=[None, *shape], dtype="float32")


# ------------------------------------------------------------------------ HDF5 reader


def _h5py_view(path_or_bytes):
    import io

    source = io.BytesIO(path_or_bytes) if isinstance(path_or_bytes, bytes) else path_or_bytes
    found, attributes = {}, {}
    with h5py.File(source, "r") as handle:
        handle.visititems(
            lambda name, item: (
                found.__setitem__(name, tuple(item.shape))
                if isinstance(item, h5py.Dataset)
                else None
            )
        )
        for key, value in handle.attrs.items():
            if isinstance(value, bytes):
                value = value.decode()
            elif isinstance(value, np.ndarray):
                value = [v.decode() if isinstance(v, bytes) else v for v in value.tolist()]
            attributes[key] = value
    return found, attributes


@pytest.mark.parametrize("path", H5_FILES, ids=lambda p: p.name)
def test_hdf5_reader_sees_what_h5py_sees(path):
    mine = hdf5.File(path.read_bytes())
    datasets, attributes = _h5py_view(path)
    assert dict(mine.datasets("/")) == datasets
    for key, value in attributes.items():
        assert mine.node("/").attributes[key] == value, key


@pytest.mark.parametrize("path", KERAS_FILES, ids=lambda p: p.name)
def test_hdf5_reader_reads_keras_weights_in_place(path):
    with zipfile.ZipFile(path) as archive:
        data = archive.read("model.weights.h5")
    assert dict(hdf5.File(data).datasets("/")) == _h5py_view(data)[0]


def test_hdf5_reader_refuses_mangled_bytes_cleanly():
    """Flipped bytes and truncations end in Corrupt or Unsupported (or a clean read),
    never in another exception and never in a loop."""
    data = (FORMATS / "k22_seq2seq.h5").read_bytes()
    rng = random.Random(5)
    for case in range(300):
        mutated = bytearray(data)
        if case % 3 == 0:
            mutated = mutated[: rng.randrange(8, len(data))]
        else:
            for _ in range(rng.randrange(1, 8)):
                position = rng.randrange(len(mutated))
                mutated[position] = rng.randrange(256)
        try:
            reader = hdf5.File(bytes(mutated))
            list(reader.datasets("/"))
            reader.node("/").attributes.get("model_config")
        except (hdf5.Corrupt, hdf5.Unsupported, KeyError):
            pass


def test_audit_reads_h5_files_without_h5py_or_numpy():
    script = (
        "import json, sys, normify\n"
        "print(json.dumps([normify.audit(p).summary for p in sys.argv[1:]]))\n"
        "assert not {'h5py', 'numpy', 'keras'} & set(sys.modules), sorted(sys.modules)\n"
    )
    paths = [str(path) for path in H5_FILES]
    done = subprocess.run(
        [sys.executable, "-c", script, *paths], capture_output=True, text=True, timeout=120
    )
    assert done.returncode == 0, done.stderr[-2000:]


# ------------------------------------------------------------- stored weight shapes


def test_an_h5_whose_weights_do_not_fit_its_config_is_refused_by_audit(tmp_path):
    path = tmp_path / "mismatch.h5"
    shutil.copy(LEGACY / "k2_mlp.h5", path)
    with h5py.File(path, "r+") as handle:
        text = handle.attrs["model_config"]
        text = text.decode() if isinstance(text, bytes) else text
        handle.attrs["model_config"] = text.replace('"units": 16', '"units": 15', 1)
    with pytest.raises(ModelLoadError) as raised:
        normify.audit(path)
    assert str(raised.value) == (
        f"{path}: its weights do not fit its config: layer 'dense_1' (Dense): the file "
        "stores kernel of shape (32, 16) where its config needs (?, 15)"
    )


def test_a_keras_file_whose_weights_do_not_fit_its_config_is_refused_by_audit(tmp_path):
    path = tmp_path / "mismatch.keras"
    with zipfile.ZipFile(FIXTURES / "mlp.keras") as source, zipfile.ZipFile(path, "w") as target:
        for info in source.infolist():
            data = source.read(info.filename)
            if info.filename == "config.json":
                config = json.loads(data)
                config["config"]["layers"][-1]["config"]["units"] += 1
                data = json.dumps(config).encode()
            target.writestr(info, data)
    with pytest.raises(ModelLoadError, match="its weights do not fit its config: layer 'dense_2'"):
        normify.audit(path)


# ------------------------------------------------------------------ file content


@pytest.mark.parametrize(
    ("source", "name"),
    [(LEGACY / "k2_mlp.h5", "model.keras"), (FIXTURES / "mlp.keras", "model.h5")],
)
def test_a_file_is_read_by_its_content_whatever_its_name(tmp_path, source, name):
    path = tmp_path / name
    shutil.copy(source, path)
    model_file = files.read_model_file(path)
    assert any("despite its name" in notice for notice in model_file.notices)
    loaded = load_model(path)
    assert loaded.model.count_params() > 0
    assert any("despite its name" in notice for notice in loaded.notices)


# ----------------------------------------------------------------- Keras 2 rules


def test_hard_sigmoid_weights_are_scaled_by_1_2_on_the_gates_it_drives():
    rng = np.random.default_rng(0)
    kernel, recurrent, bias = rng.normal(size=(3, 8)), rng.normal(size=(2, 8)), rng.normal(size=8)
    scale = weightmath.scale_gate_blocks(4, [0, 1, 3], 1.2)  # LSTM i, f, o
    new = scale([kernel, recurrent, bias])
    for before, after in zip([kernel, recurrent, bias], new, strict=True):
        np.testing.assert_array_equal(after[..., 4:6], before[..., 4:6])  # the candidate
        np.testing.assert_allclose(after[..., :4], before[..., :4] * 1.2)
        np.testing.assert_allclose(after[..., 6:], before[..., 6:] * 1.2)
    z = rng.normal(size=1000)
    keras2 = np.clip(0.2 * z + 0.5, 0, 1)
    keras3 = np.clip(1.2 * z / 6 + 0.5, 0, 1)
    np.testing.assert_allclose(keras2, keras3, atol=1e-12)


def test_an_lstm_whose_activation_is_hard_sigmoid_is_refused():
    config = functional(
        input_layer("x", [None, 3]),
        layer("LSTM", "lstm", [["x", 0, 0]], units=2, activation="hard_sigmoid"),
        outputs=[["lstm", 0, 0]],
    )
    with pytest.raises(formats.FormatError, match="layer 'lstm' .*cell state"):
        repair(config)


def test_a_gru_saved_before_reset_after_keeps_its_meaning():
    config = functional(
        input_layer("x", [None, 3]),
        layer("GRU", "gru", [["x", 0, 0]], units=2),
        outputs=[["gru", 0, 0]],
    )
    repaired, repairs = repair(config)
    gru = repaired["config"]["layers"][1]
    assert gru["config"]["reset_after"] is False
    assert [r.rule for r in repairs if r.path == "gru"] == ["keras2-gru-reset-after"]


@pytest.mark.parametrize(
    ("class_name", "argument", "value", "kept"),
    [
        ("DepthwiseConv2D", "groups", 1, False),
        ("DepthwiseConv2D", "groups", 3, "groups=3"),
        ("BatchNormalization", "virtual_batch_size", 8, "virtual_batch_size=8"),
        ("BatchNormalization", "fused", True, False),
        ("LSTM", "time_major", True, "time_major=True"),
        ("SpatialDropout2D", "trainable", True, False),  # every tf.keras SpatialDropout
        ("Dense", "made_up_argument", None, False),
        ("Dense", "made_up_argument", 7, "made_up_argument=7"),
    ],
)
def test_an_argument_keras3_refuses_is_dropped_only_when_neutral(class_name, argument, value, kept):
    extra = {"kernel_size": [3, 3]} if class_name == "DepthwiseConv2D" else {}
    extra.update(rate=0.5) if class_name == "SpatialDropout2D" else None
    extra.update(units=2) if class_name in ("Dense", "LSTM") else None
    config = functional(
        input_layer("x", [8, 8, 3] if class_name != "LSTM" else [None, 3]),
        layer(class_name, "target", [["x", 0, 0]], **extra, **{argument: value}),
        outputs=[["target", 0, 0]],
    )
    if kept:
        with pytest.raises(formats.FormatError) as raised:
            repair(config)
        message = str(raised.value)
        assert "layer 'target'" in message and kept in message and "\n" not in message
    else:
        repaired, repairs = repair(config)
        assert argument not in repaired["config"]["layers"][1]["config"]
        assert any(r.rule == "keras2-argument" and argument in r.text for r in repairs)


def test_recurrent_constants_are_refused_with_one_line():
    lstm = layer("LSTM", "lstm", [["x", 0, 0], ["c", 0, 0]], units=2, num_constants=1)
    config = functional(
        input_layer("x", [None, 3]), input_layer("c", [3]), lstm, outputs=[["lstm", 0, 0]]
    )
    config["config"]["input_layers"].append(["c", 0, 0])
    with pytest.raises(formats.FormatError, match="layer 'lstm' .*1 constant"):
        repair(config)


def test_a_tensorflow_op_layer_is_refused_naming_the_op():
    op = layer("TensorFlowOpLayer", "tf_op_layer_Mul", [["x", 0, 0]], node_def={"op": "Mul"})
    config = functional(input_layer("x", [3]), op, outputs=[["tf_op_layer_Mul", 0, 0]])
    with pytest.raises(formats.FormatError, match="raw TensorFlow op 'Mul'"):
        repair(config, formats.TF_KERAS)


def test_translation_never_changes_what_it_is_given():
    config = json.loads(h5py.File(FORMATS / "k22_seq2seq.h5").attrs["model_config"])
    before = copy.deepcopy(config)
    repair(config)
    assert config == before


def test_every_repair_names_its_rule_and_a_layer():
    for path in sorted(FORMATS.glob("*.h5")):
        for repair_ in files.read_model_file(path).translation.repairs:
            assert repair_.rule.startswith(("keras2-", "keras1-", "tf-keras-", "tfop-"))
            assert repair_.notice.startswith(f"repaired: {repair_.path}: ")
            assert repair_.notice.endswith(f"[{repair_.rule}]")


# ----------------------------------------------------------------- state not stored


def test_an_h5_without_its_vocabulary_is_refused_naming_the_layer(tmp_path):
    pytest.importorskip("tensorflow", reason="Keras' TextVectorization needs TensorFlow")
    import keras

    inputs = keras.Input((1,), dtype="string")
    vectorized = keras.layers.TextVectorization(max_tokens=10, output_sequence_length=3)(inputs)
    model = keras.Model(inputs, keras.layers.Embedding(10, 2)(vectorized))
    path = tmp_path / "text.h5"
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        try:
            model.save(path)
        except ValueError:  # Keras 3 writes the .h5, then fails on the lookup's state
            pass
    with pytest.raises(ModelLoadError) as raised:
        load_model(path)
    message = str(raised.value)
    assert "layer 'text_vectorization' (TextVectorization)" in message
    assert "does not hold its vocabulary" in message and "\n" not in message


# ------------------------------------------------------------------------ audit


def test_audit_lists_lambda_layers_and_counts_spectral_normalization_as_its_kind(tmp_path):
    import keras

    x = keras.Input((8,))
    y = keras.layers.SpectralNormalization(
        keras.layers.Dense(6, activation="relu"), name="spectral_normalization"
    )(x)
    y = keras.layers.Lambda(lambda t: t * 2, name="double")(y)
    keras.Model(x, keras.layers.Dense(2)(y)).save(tmp_path / "m.keras")
    report = normify.audit(tmp_path / "m.keras")
    rows = {row.path: row for row in report.rows}
    assert rows["spectral_normalization"].kind == "dense"
    assert rows["spectral_normalization"].class_name == "SpectralNormalization(Dense)"
    assert {
        "path": "double",
        "class": "Lambda",
        "reason": "Python code: rewriting needs --unsafe",
    } in report.opaque


def test_spectral_normalization_is_normalized_after_its_output_only(tmp_path):
    import keras

    x = keras.Input((8,))
    y = keras.layers.SpectralNormalization(
        keras.layers.Dense(6, activation="relu"), name="spectral_normalization"
    )(x)
    model = keras.Model(x, keras.layers.Dense(2)(y))
    skipped = {d.path: d.reason for d in normify.add(model).report.kept}
    assert "--position post" in skipped["spectral_normalization"]
    result = normify.add(model, position="post")
    assert [i.path for i in result.report.changes] == ["spectral_normalization"]
    data = np.random.default_rng(1).normal(size=(4, 8)).astype("float32")
    np.testing.assert_allclose(
        result.model.predict(data, verbose=0), model.predict(data, verbose=0), atol=1e-6
    )


def test_origins_from_config_traits_when_no_version_is_recorded():
    keras1 = {
        "class_name": "Sequential",
        "config": [{"class_name": "Dense", "config": {"name": "d", "output_dim": 3}}],
    }
    keras2 = {
        "class_name": "Sequential",
        "config": [{"class_name": "Dense", "config": {"name": "d", "units": 3}}],
    }
    assert formats.origin_of(None, None, keras1).generation == formats.KERAS1
    assert formats.origin_of(None, None, keras2).generation == formats.KERAS2
    assert formats.origin_of(None, None, json.loads(_keras3_config())).generation == formats.KERAS3


def _keras3_config() -> str:
    with zipfile.ZipFile(FIXTURES / "mlp.keras") as archive:
        return archive.read("config.json").decode()


def test_the_fixtures_make_their_own_references():
    """Every format fixture is made by a script in its folder (none is a third-party file)."""
    scripts = {path.name for path in FORMATS.glob("make_*.py")}
    assert {"make_keras2_fixtures.py", "make_cudnn_fixtures.py"} <= scripts
    for path in FORMATS.glob("*.h5"):
        assert (FORMATS / f"{path.stem}.expected.npz").is_file()
        written_by = json.loads((FORMATS / f"{path.stem}.json").read_text())["written_by"]
        assert written_by
