"""The Keras 1 rules one by one (`normify/formats/keras1.py`): a Keras 1.2.2 config in,
the Keras 3 config out, the notice each rule gives, the weight rules, and every refusal
as one line naming the layer, the argument and its value."""

from __future__ import annotations

import json

import h5py
import numpy as np
import pytest
from conftest import FIXTURES

from normify import formats
from normify.formats import FormatError, arguments
from normify.formats.base import Origin

FORMATS = FIXTURES / "formats"
KERAS1 = Origin(formats.KERAS1, "1.2.2", None, keras1_weights=True)
THEANO = Origin(formats.KERAS1, "1.2.2", "theano", keras1_weights=True)


def translate(config: dict, origin: Origin = KERAS1) -> formats.Translation:
    return arguments.fit(formats.translate(config, origin))


def sequential(*layers: dict) -> dict:
    return {"class_name": "Sequential", "config": list(layers)}


def first(class_name: str, shape: list, dtype: str = "float32", **config) -> dict:
    entry = {
        "class_name": class_name,
        "config": {"name": f"{class_name.lower()}_1", "trainable": True, **config},
    }
    entry["config"]["batch_input_shape"] = [None, *shape]
    entry["config"]["input_dtype"] = dtype
    return entry


def layers_of(translation: formats.Translation) -> list[dict]:
    return translation.config["config"]["layers"]


def notices(translation: formats.Translation, rule: str) -> list[str]:
    return [n for n in translation.notices if n.endswith(f"[{rule}]")]


def only(config: dict, origin: Origin = KERAS1) -> tuple[dict, formats.Translation]:
    """The translated config of the one layer after the InputLayer."""
    translation = translate(config, origin)
    return layers_of(translation)[1], translation


def dense_config(**extra) -> dict:
    return {
        "output_dim": 4, "init": "glorot_uniform", "activation": "relu",
        "W_regularizer": None, "b_regularizer": None, "activity_regularizer": None,
        "W_constraint": None, "b_constraint": None, "bias": True, "input_dim": 3, **extra,
    }  # fmt: skip


# ---------------------------------------------------------------------- layers


def test_dense_arguments_are_renamed_as_keras_2_did():
    entry, translation = only(sequential(first("Dense", [3], **dense_config())))
    config = entry["config"]
    assert config["units"] == 4 and config["kernel_initializer"] == "glorot_uniform"
    assert config["use_bias"] is True and "bias_regularizer" in config
    for old in ("output_dim", "init", "W_regularizer", "bias", "input_dim", "input_dtype"):
        assert old not in config
    (notice,) = notices(translation, "keras1-argument")
    assert "output_dim -> units" in notice and "dropped input_dim=3" in notice


def test_the_sequential_input_layer_gets_the_first_layers_shape_and_dtype():
    embedding = first(
        "Embedding", [6], "int32", input_dim=20, output_dim=8, init="uniform",
        input_length=6, mask_zero=False, W_regularizer=None, W_constraint=None,
        activity_regularizer=None, dropout=0.2,
    )  # fmt: skip
    translation = translate(sequential(embedding))
    input_layer, layer = layers_of(translation)
    assert input_layer["class_name"] == "InputLayer"
    assert input_layer["config"]["batch_shape"] == [None, 6]
    assert input_layer["config"]["dtype"] == "int32"
    # the Embedding keeps float weights: input_dtype is the input's, not the layer's
    assert "dtype" not in layer["config"] or layer["config"]["dtype"] != "int32"
    assert layer["config"]["embeddings_initializer"] == "uniform"
    assert "dropout" not in layer["config"]
    assert notices(translation, "keras1-input")


def test_an_input_layers_input_dtype_becomes_its_dtype():
    model = {
        "class_name": "Model",
        "config": {
            "name": "m",
            "layers": [
                {"name": "in", "class_name": "InputLayer", "inbound_nodes": [], "config": {
                    "batch_input_shape": [None, 3], "input_dtype": "float32", "sparse": False,
                    "name": "in"}},
                {"name": "d", "class_name": "Dense", "inbound_nodes": [[["in", 0, 0]]],
                 "config": {"name": "d", "trainable": True, **dense_config(input_dim=None)}},
            ],
            "input_layers": [["in", 0, 0]],
            "output_layers": [["d", 0, 0]],
        },
    }  # fmt: skip
    translation = translate(model)
    input_layer = layers_of(translation)[0]["config"]
    assert input_layer["dtype"] == "float32" and "input_dtype" not in input_layer
    assert "repaired: in: input_dtype='float32' -> dtype [keras1-input]" in translation.notices


@pytest.mark.parametrize(
    ("ordering", "data_format"),
    [("th", "channels_first"), ("tf", "channels_last"), ("default", "channels_last")],
)
def test_convolution2d_becomes_conv2d(ordering, data_format):
    conv = first(
        "Convolution2D", [3, 8, 8], nb_filter=4, nb_row=3, nb_col=5, init="he_normal",
        activation="linear", border_mode="same", subsample=[2, 1], dim_ordering=ordering,
        W_regularizer={"name": "WeightRegularizer", "l1": 0.0, "l2": 0.01},
        b_regularizer=None, activity_regularizer=None,
        W_constraint={"name": "MaxNorm", "m": 2, "axis": 0}, b_constraint=None, bias=True,
    )  # fmt: skip
    entry, translation = only(sequential(conv))
    config = entry["config"]
    assert entry["class_name"] == "Conv2D"
    assert config["filters"] == 4 and config["kernel_size"] == [3, 5]
    assert config["strides"] == [2, 1] and config["padding"] == "same"
    assert config["data_format"] == data_format
    assert config["kernel_regularizer"] == {"class_name": "L1L2", "config": {"l1": 0.0, "l2": 0.01}}
    assert config["kernel_constraint"]["config"] == {"max_value": 2, "axis": 0}
    assert (
        "repaired: conv2d_1: class Convolution2D -> Conv2D [keras1-class]".replace(
            "conv2d_1", "convolution2d_1"
        )
        in translation.notices
    )


def test_convolution1d_and_atrous_convolutions():
    conv = first(
        "AtrousConvolution1D", [10, 3], nb_filter=4, filter_length=3, atrous_rate=2,
        init="glorot_uniform", activation="relu", border_mode="valid", subsample_length=1,
        W_regularizer=None, b_regularizer=None, activity_regularizer=None, W_constraint=None,
        b_constraint=None, bias=True, input_dim=3, input_length=10,
    )  # fmt: skip
    entry, translation = only(sequential(conv))
    config = entry["config"]
    assert entry["class_name"] == "Conv1D"
    assert config["filters"] == 4 and config["kernel_size"] == 3
    assert config["dilation_rate"] == 2 and config["strides"] == [1]
    assert "atrous_rate" not in config and "input_length" not in config
    assert any("atrous_rate 2 -> dilation_rate" in n for n in notices(translation, "keras1-class"))


def test_deconvolution2d_drops_its_output_shape():
    deconv = first(
        "Deconvolution2D", [8, 8, 3], nb_filter=2, nb_row=3, nb_col=3,
        output_shape=[None, 10, 10, 2], init="glorot_uniform", activation="linear",
        border_mode="valid", subsample=[1, 1], dim_ordering="tf", W_regularizer=None,
        b_regularizer=None, activity_regularizer=None, W_constraint=None, b_constraint=None,
        bias=True,
    )  # fmt: skip
    entry, translation = only(sequential(deconv))
    assert entry["class_name"] == "Conv2DTranspose"
    assert "output_shape" not in entry["config"]
    assert any("dropped output_shape" in n for n in notices(translation, "keras1-argument"))


@pytest.mark.parametrize("cell", ["LSTM", "GRU", "SimpleRNN"])
def test_recurrent_arguments_and_hard_sigmoid(cell):
    config = {
        "return_sequences": False, "go_backwards": False, "stateful": False, "unroll": False,
        "consume_less": "gpu", "input_dim": 3, "input_length": None, "output_dim": 5,
        "init": "glorot_uniform", "inner_init": "orthogonal", "activation": "tanh",
        "W_regularizer": None, "U_regularizer": None, "b_regularizer": None,
        "dropout_W": 0.2, "dropout_U": 0.3,
    }  # fmt: skip
    if cell != "SimpleRNN":
        config["inner_activation"] = "hard_sigmoid"
    entry, translation = only(sequential(first(cell, [7, 3], **config)))
    out = entry["config"]
    assert out["units"] == 5 and out["recurrent_initializer"] == "orthogonal"
    assert out["dropout"] == 0.2 and out["recurrent_dropout"] == 0.3
    assert "consume_less" not in out and "implementation" not in out
    if cell != "SimpleRNN":
        # the Keras 2 rule then scales the gates Keras 1's hard_sigmoid drives
        assert out["recurrent_activation"] == "hard_sigmoid"
        assert notices(translation, "keras2-hard-sigmoid")
    if cell == "GRU":
        assert out["reset_after"] is False


def test_pooling_and_dropout_arguments():
    model = sequential(
        first("MaxPooling1D", [10, 3], pool_length=2, stride=None, border_mode="valid"),
        {"class_name": "Dropout", "config": {"name": "dropout_1", "trainable": True, "p": 0.25}},
        {"class_name": "UpSampling1D", "config": {"name": "up", "trainable": True, "length": 2}},
    )
    translation = translate(model)
    pool, dropout, up = layers_of(translation)[1:]
    assert pool["config"]["pool_size"] == 2 and pool["config"]["padding"] == "valid"
    assert dropout["config"]["rate"] == 0.25 and "p" not in dropout["config"]
    assert up["config"]["size"] == 2


def test_time_distributed_dense_becomes_dense():
    entry, translation = only(sequential(first("TimeDistributedDense", [5, 3], **dense_config())))
    assert entry["class_name"] == "Dense" and entry["config"]["units"] == 4


def test_batchnormalization_mode_0_is_keras_2s_layer():
    bn = first(
        "BatchNormalization", [4], epsilon=0.001, mode=0, axis=-1, momentum=0.99,
        gamma_regularizer=None, beta_regularizer=None,
    )  # fmt: skip
    entry, translation = only(sequential(bn))
    assert "mode" not in entry["config"] and entry["config"]["axis"] == -1
    assert notices(translation, "keras1-batchnorm-mode")


@pytest.mark.parametrize(("mode", "class_name"), [
    ("sum", "Add"), ("mul", "Multiply"), ("ave", "Average"), ("max", "Maximum"),
    ("concat", "Concatenate"), ("dot", "Dot"),
])  # fmt: skip
def test_merge_modes_become_merge_layers(mode, class_name):
    translation = translate(merge_model(mode, concat_axis=1, dot_axes=[1, 1]))
    merged = next(layer for layer in layers_of(translation) if layer["name"] == "merge_1")
    assert merged["class_name"] == class_name
    assert set(merged["config"]) <= {"name", "trainable", "axis", "axes", "normalize"}
    if mode == "concat":
        assert merged["config"]["axis"] == 1
    if mode == "dot":
        assert merged["config"]["axes"] == [1, 1] and merged["config"]["normalize"] is False
    assert f"repaired: merge_1: Merge(mode={mode!r}) -> {class_name}" in " ".join(
        translation.notices
    )


def merge_model(mode, mode_type: str = "raw", **extra) -> dict:
    def input_layer(name):
        return {"name": name, "class_name": "InputLayer", "inbound_nodes": [], "config": {
            "batch_input_shape": [None, 4], "input_dtype": "float32", "sparse": False,
            "name": name}}  # fmt: skip

    merge = {
        "name": "merge_1", "class_name": "Merge",
        "inbound_nodes": [[["a", 0, 0], ["b", 0, 0]]],
        "config": {
            "name": "merge_1", "mode": mode, "mode_type": mode_type, "concat_axis": -1,
            "dot_axes": -1, "output_shape": None, "output_shape_type": "raw",
            "output_mask": None, "output_mask_type": "raw", "arguments": {}, **extra,
        },
    }  # fmt: skip
    return {
        "class_name": "Model",
        "config": {
            "name": "model_1",
            "layers": [input_layer("a"), input_layer("b"), merge],
            "input_layers": [["a", 0, 0], ["b", 0, 0]],
            "output_layers": [["merge_1", 0, 0]],
        },
    }


# ------------------------------------------------------------------ refusals


def refusal(config: dict) -> str:
    with pytest.raises(FormatError) as caught:
        translate(config)
    text = str(caught.value)
    assert "\n" not in text
    return text


def test_a_merge_with_a_python_function_is_refused_naming_the_layer():
    text = refusal(merge_model(["code", None, None], mode_type="lambda"))
    assert "layer 'merge_1'" in text and "mode=" in text and "Python function" in text


def test_a_cosine_merge_is_refused_naming_the_layer():
    text = refusal(merge_model("cos"))
    assert "layer 'merge_1'" in text and "mode='cos'" in text


def test_a_branching_sequential_merge_is_refused():
    branch = sequential(first("Dense", [3], **dense_config()))
    merge = {"class_name": "Merge", "config": {"name": "merge_1", "mode": "concat",
                                                "layers": [branch, branch]}}  # fmt: skip
    text = refusal(sequential(merge, {"class_name": "Dense", "config": {
        "name": "d", **dense_config(input_dim=None)}}))  # fmt: skip
    assert "layer 'merge_1'" in text and "branching Sequential" in text


@pytest.mark.parametrize("mode", [1, 2])
def test_batchnormalization_modes_1_and_2_are_refused(mode):
    bn = first("BatchNormalization", [4], epsilon=0.001, mode=mode, axis=-1, momentum=0.99)
    text = refusal(sequential(bn))
    assert "layer 'batchnormalization_1'" in text and f"mode={mode}" in text


def test_full_border_mode_is_refused():
    conv = first(
        "Convolution2D", [3, 8, 8], nb_filter=4, nb_row=3, nb_col=3, border_mode="full",
        subsample=[1, 1], dim_ordering="th",
    )  # fmt: skip
    text = refusal(sequential(conv))
    assert "layer 'convolution2d_1'" in text and "border_mode='full'" in text


@pytest.mark.parametrize("class_name", ["MaxoutDense", "Highway"])
def test_keras1_only_layers_are_refused(class_name):
    text = refusal(sequential(first(class_name, [3], **dense_config())))
    assert f"layer '{class_name.lower()}_1'" in text and class_name in text


def test_refusals_name_the_file(tmp_path):
    from normify.errors import ModelLoadError
    from normify.files import read_model_file

    path = tmp_path / "old.h5"
    bn = first("BatchNormalization", [4], epsilon=0.001, mode=2, axis=-1, momentum=0.99)
    with h5py.File(path, "w") as handle:
        handle.attrs["keras_version"] = b"1.2.2"
        handle.attrs["model_config"] = json.dumps(sequential(bn)).encode()
        group = handle.create_group("model_weights")
        group.attrs["layer_names"] = []
    with pytest.raises(ModelLoadError) as caught:
        read_model_file(path)
    assert "old.h5" in str(caught.value) and "mode=2" in str(caught.value)


# ------------------------------------------------------------------- weights


def weight_rule(config: dict, origin: Origin = KERAS1, path: str | None = None):
    translation = translate(config, origin)
    rules = translation.weight_rules
    key = path or next(iter(rules))
    functions = [rule.apply for rule in rules[key] if rule.rule == "keras1-weights"]
    assert len(functions) == 1
    return functions[0]


def test_lstm_gate_arrays_are_concatenated_in_keras_2_order():
    lstm = first("LSTM", [7, 3], output_dim=2, inner_activation="sigmoid", input_dim=3)
    apply = weight_rule(sequential(lstm))
    arrays = []
    for value in (1.0, 2.0, 3.0, 4.0):  # gates i, c, f, o
        arrays += [np.full((3, 2), value), np.full((2, 2), value), np.full((2,), value)]
    kernel, recurrent, bias = apply(arrays)
    assert kernel.shape == (3, 8) and recurrent.shape == (2, 8) and bias.shape == (8,)
    assert list(bias) == [1, 1, 3, 3, 2, 2, 4, 4]  # i, f, c, o
    # a layer saved with consume_less="gpu" held Keras 2's three arrays already
    three = [np.zeros((3, 8)), np.zeros((2, 8)), np.zeros(8)]
    assert apply(three) is three


def test_gru_gate_arrays_are_concatenated():
    gru = first("GRU", [7, 3], output_dim=2, inner_activation="sigmoid", input_dim=3)
    apply = weight_rule(sequential(gru))
    arrays = []
    for value in (1.0, 2.0, 3.0):
        arrays += [np.full((3, 2), value), np.full((2, 2), value), np.full((2,), value)]
    kernel, recurrent, bias = apply(arrays)
    assert list(bias) == [1, 1, 2, 2, 3, 3]


def conv(ordering: str) -> dict:
    return sequential(first(
        "Convolution2D", [3, 8, 8], nb_filter=4, nb_row=3, nb_col=2, border_mode="valid",
        subsample=[1, 1], dim_ordering=ordering, bias=True,
    ))  # fmt: skip


def test_th_kernels_are_transposed_and_theano_kernels_flipped():
    kernel = np.arange(4 * 3 * 3 * 2, dtype="float32").reshape(4, 3, 3, 2)
    (moved, bias) = weight_rule(conv("th"))([kernel, np.zeros(4)])
    assert moved.shape == (3, 2, 3, 4)
    assert np.array_equal(moved, np.transpose(kernel, (2, 3, 1, 0)))
    (flipped, _) = weight_rule(conv("th"), THEANO)([kernel, np.zeros(4)])
    assert np.array_equal(flipped, np.transpose(kernel, (2, 3, 1, 0))[::-1, ::-1])


def test_tf_kernels_are_left_alone_unless_theano_convolved():
    assert not translate(conv("tf")).weight_rules
    kernel = np.arange(3 * 2 * 3 * 4, dtype="float32").reshape(3, 2, 3, 4)
    (flipped, _) = weight_rule(conv("tf"), THEANO)([kernel, np.zeros(4)])
    assert np.array_equal(flipped, kernel[::-1, ::-1])


def test_conv1d_kernels_are_squeezed():
    conv1d = first(
        "Convolution1D", [10, 3], nb_filter=4, filter_length=3, border_mode="valid",
        subsample_length=1, input_dim=3, input_length=10,
    )  # fmt: skip
    kernel = np.arange(3 * 1 * 3 * 4, dtype="float32").reshape(3, 1, 3, 4)
    (squeezed, _) = weight_rule(sequential(conv1d))([kernel, np.zeros(4)])
    assert np.array_equal(squeezed, kernel[:, 0])


def test_weights_keras_2_saved_are_left_alone():
    keras2_weights = Origin(formats.KERAS1, "1.2.2", None, keras1_weights=False)
    assert not translate(conv("th"), keras2_weights).weight_rules


def test_wrapped_lstm_weights_are_translated_half_by_half():
    lstm = {
        "class_name": "LSTM",
        "config": {
            "name": "lstm_1",
            "output_dim": 2,
            "inner_activation": "sigmoid",
            "input_dim": 3,
        },
    }
    wrapper = first("Bidirectional", [7, 3], layer=lstm, merge_mode="concat")
    apply = weight_rule(sequential(wrapper), path="bidirectional_1")
    half = []
    for value in (1.0, 2.0, 3.0, 4.0):
        half += [np.full((3, 2), value), np.full((2, 2), value), np.full((2,), value)]
    out = apply(half + half)
    assert len(out) == 6 and list(out[2]) == list(out[5]) == [1, 1, 3, 3, 2, 2, 4, 4]


# ----------------------------------------------------------------- fixtures


@pytest.mark.parametrize("name", sorted(p.stem for p in FORMATS.glob("k1_*.h5")))
def test_keras1_fixtures_are_keras_1_2_2_layouts(name):
    with h5py.File(FORMATS / f"{name}.h5") as handle:
        assert handle.attrs["keras_version"] in (b"1.2.2", "1.2.2")
        assert "keras_version" not in handle["model_weights"].attrs
        config = json.loads(handle.attrs["model_config"])
    if config["class_name"] == "Sequential":
        assert isinstance(config["config"], list)
    else:
        assert config["class_name"] == "Model"
        for layer in config["config"]["layers"]:
            for node in layer["inbound_nodes"]:
                assert all(len(item) == 3 for item in node)
