"""Calibration data: every kind of source, every way it can be wrong, batching and progress."""

from __future__ import annotations

import itertools
import subprocess
import sys

import keras
import numpy as np
import pytest

from normify import data
from normify.data import CalibrationData, InputSpec, input_specs, load_data, progress
from normify.errors import NormifyError, UnsupportedModelError

IMAGE = "(None, 8, 8, 3)"
TOKENS = "(None, None)"
VECTOR = "(None, 4)"


@pytest.fixture(scope="module")
def tf():
    """TensorFlow, for the tf.data sources; absent from the JAX and PyTorch environments."""
    return pytest.importorskip("tensorflow", reason="tf.data needs TensorFlow, not installed here")


@pytest.fixture(scope="module")
def single() -> list[InputSpec]:
    """One float input 'image' of shape (8, 8, 3)."""
    image = keras.Input((8, 8, 3), name="image")
    return input_specs(keras.Model(image, keras.layers.Flatten()(image)))


@pytest.fixture(scope="module")
def multi() -> list[InputSpec]:
    """A float input 'vector' (4,) and an int input 'tokens' with an open length."""
    vector = keras.Input((4,), name="vector")
    tokens = keras.Input((None,), name="tokens", dtype="int32")
    pooled = keras.layers.GlobalAveragePooling1D()(keras.layers.Embedding(10, 4)(tokens))
    return input_specs(keras.Model([vector, tokens], keras.layers.Add()([vector, pooled])))


def images(count: int, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).standard_normal((count, 8, 8, 3)).astype("float32")


def pair(count: int, length: int = 5) -> tuple[np.ndarray, np.ndarray]:
    vectors = np.arange(count * 4, dtype="float32").reshape(count, 4)
    tokens = np.arange(count * length, dtype="int64").reshape(count, length) % 10
    return vectors, tokens


def error(source: object, specs: list[InputSpec], **options: object) -> str:
    """The message load_data raises, checked to be a single line."""
    with pytest.raises(NormifyError) as info:
        load_data(source, specs, **options)
    message = str(info.value)
    assert "\n" not in message
    return message


def joined(calibration: CalibrationData) -> list[np.ndarray]:
    """All batches glued back together, one array per input."""
    batches = list(calibration.batches())
    return [np.concatenate(parts) for parts in zip(*batches, strict=True)]


# --- input_specs -------------------------------------------------------------------------------


def test_input_specs_read_names_shapes_and_dtypes(single, multi):
    assert single == [InputSpec("image", (8, 8, 3), "float32")]
    assert multi == [
        InputSpec("vector", (4,), "float32"),
        InputSpec("tokens", (None,), "int32"),
    ]


def test_input_specs_of_a_model_without_inputs():
    class Bare:
        inputs: list = []

    with pytest.raises(UnsupportedModelError):
        input_specs(Bare())


# --- sources -----------------------------------------------------------------------------------


def test_numpy_array(single):
    x = images(10)
    calibration = load_data(x, single)
    assert calibration.samples == 10 and len(calibration) == 1
    np.testing.assert_array_equal(joined(calibration)[0], x)


def test_backend_tensor_is_one_array(single):
    calibration = load_data(keras.ops.convert_to_tensor(images(3)), single)
    assert calibration.samples == 3


@pytest.mark.parametrize("container", [list, tuple])
def test_arrays_per_input(multi, container):
    vectors, tokens = pair(6)
    got = joined(load_data(container([vectors, tokens]), multi))
    np.testing.assert_array_equal(got[0], vectors)
    np.testing.assert_array_equal(got[1], tokens)


def test_dict_by_input_name(multi):
    vectors, tokens = pair(6)
    got = joined(load_data({"tokens": tokens, "vector": vectors}, multi))
    np.testing.assert_array_equal(got[0], vectors)
    np.testing.assert_array_equal(got[1], tokens)


def test_npz_named_after_inputs(tmp_path, multi):
    vectors, tokens = pair(6)
    np.savez(tmp_path / "data.npz", tokens=tokens, vector=vectors)
    got = joined(load_data(tmp_path / "data.npz", multi))
    np.testing.assert_array_equal(got[0], vectors)
    np.testing.assert_array_equal(got[1], tokens)


def test_npz_positional_in_input_order(tmp_path, multi):
    vectors, tokens = pair(6)
    np.savez(tmp_path / "data.npz", vectors, tokens)
    got = joined(load_data(str(tmp_path / "data.npz"), multi))
    np.testing.assert_array_equal(got[0], vectors)
    np.testing.assert_array_equal(got[1], tokens)


def test_npz_single_input(tmp_path, single):
    np.savez_compressed(tmp_path / "data.npz", image=images(5))
    assert load_data(tmp_path / "data.npz", single).samples == 5


def test_npy_single_input(tmp_path, single):
    x = images(7)
    np.save(tmp_path / "data.npy", x)
    calibration = load_data(tmp_path / "data.npy", single, max_samples=4)
    np.testing.assert_array_equal(joined(calibration)[0], x[:4])
    assert not isinstance(calibration.arrays[0], np.memmap)


def test_generator_of_arrays(single):
    x = images(10)
    calibration = load_data((x[i : i + 3] for i in range(0, 10, 3)), single, batch_size=4)
    np.testing.assert_array_equal(joined(calibration)[0], x)


def test_list_of_batches_for_a_single_input(single):
    x = images(6)
    calibration = load_data([x[:2], x[2:4], x[4:]], single)
    np.testing.assert_array_equal(joined(calibration)[0], x)


def test_generator_of_x_y_with_list_x(multi):
    vectors, tokens = pair(6)
    labels = np.zeros(6)

    def batches():
        for i in range(0, 6, 2):
            yield [vectors[i : i + 2], tokens[i : i + 2]], labels[i : i + 2]

    got = joined(load_data(batches(), multi))
    np.testing.assert_array_equal(got[0], vectors)
    np.testing.assert_array_equal(got[1], tokens)


def test_generator_of_bare_per_input_tuples(multi):
    vectors, tokens = pair(4)
    got = joined(load_data(iter([(vectors, tokens)]), multi))
    np.testing.assert_array_equal(got[1], tokens)


@pytest.mark.parametrize("extra", [(), (np.zeros(6),), (np.zeros(6), np.ones(6))])
def test_single_input_batch_tuples(single, extra):
    x = images(6)
    calibration = load_data([(x, *extra)], single)
    np.testing.assert_array_equal(joined(calibration)[0], x)


def test_py_dataset(single):
    x = images(10)

    class Batches(keras.utils.PyDataset):
        def __len__(self) -> int:
            return 4

        def __getitem__(self, index: int):
            return x[index * 3 : index * 3 + 3], np.zeros(3)

    np.testing.assert_array_equal(joined(load_data(Batches(), single))[0], x)


def test_tf_dataset_of_x_y_tuples(single, tf):
    x = images(10)
    dataset = tf.data.Dataset.from_tensor_slices((x, np.arange(10))).batch(4)
    calibration = load_data(dataset, single, batch_size=5)
    np.testing.assert_array_equal(joined(calibration)[0], x)
    assert [len(batch[0]) for batch in calibration.batches()] == [5, 5]


def test_tf_dataset_of_dicts(multi, tf):
    vectors, tokens = pair(9)
    dataset = tf.data.Dataset.from_tensor_slices({"vector": vectors, "tokens": tokens}).batch(4)
    got = joined(load_data(dataset, multi))
    np.testing.assert_array_equal(got[0], vectors)
    np.testing.assert_array_equal(got[1], tokens)
    assert got[1].dtype == np.int32


def test_tf_dataset_of_dict_x_and_y(multi, tf):
    vectors, tokens = pair(5)
    x = {"vector": vectors, "tokens": tokens}
    dataset = tf.data.Dataset.from_tensor_slices((x, np.zeros(5))).batch(2)
    assert load_data(dataset, multi).samples == 5


def test_infinite_dataset_is_read_only_up_to_max_samples(single):
    pulled = []

    def forever():
        for index in itertools.count():
            pulled.append(index)
            yield images(4, seed=index)

    calibration = load_data(forever(), single, max_samples=10)
    assert calibration.samples == 10
    assert pulled == [0, 1, 2]
    np.testing.assert_array_equal(joined(calibration)[0][8:], images(4, seed=2)[:2])


def test_infinite_tf_dataset_is_read_only_up_to_max_samples(single, tf):
    repeated = tf.data.Dataset.from_tensor_slices(images(3)).batch(2).repeat()
    assert load_data(repeated, single, max_samples=7).samples == 7


# --- truncation, batching, re-iteration, casting -----------------------------------------------


def test_max_samples_keeps_the_first_samples(multi):
    vectors, tokens = pair(25)
    calibration = load_data([vectors, tokens], multi, max_samples=10)
    assert calibration.samples == 10
    np.testing.assert_array_equal(joined(calibration)[0], vectors[:10])


@pytest.mark.parametrize(
    ("samples", "batch_size", "sizes"),
    [(25, 8, [8, 8, 8, 1]), (16, 8, [8, 8]), (3, 64, [3]), (5, 1, [1] * 5)],
)
def test_batches_are_consecutive_slices(single, samples, batch_size, sizes):
    x = images(samples)
    calibration = load_data(x, single, batch_size=batch_size)
    batches = list(calibration.batches())
    assert [len(batch[0]) for batch in batches] == sizes
    assert len(calibration) == len(sizes)
    np.testing.assert_array_equal(batches[-1][0], x[samples - sizes[-1] :])


def test_batches_of_several_inputs_line_up(multi):
    vectors, tokens = pair(5)
    for batch in load_data([vectors, tokens], multi, batch_size=2).batches():
        assert len(batch) == 2 and len(batch[0]) == len(batch[1])


def test_one_shot_sources_can_be_iterated_again(single):
    x = images(9)
    calibration = load_data((x[i : i + 2] for i in range(0, 9, 2)), single, batch_size=4)
    first = [batch[0].copy() for batch in calibration.batches()]
    second = [batch[0] for batch in calibration.batches()]
    assert len(first) == len(second) == 3
    for a, b in zip(first, second, strict=True):
        np.testing.assert_array_equal(a, b)


def test_dtypes_are_cast_to_the_inputs(multi):
    vectors = np.arange(12, dtype="int64").reshape(3, 4)
    tokens = np.array([[1.0, 2.0], [3.0, 4.0], [5.0, 0.0]])
    got = joined(load_data({"vector": vectors, "tokens": tokens}, multi))
    assert got[0].dtype == np.float32 and got[1].dtype == np.int32
    np.testing.assert_array_equal(got[1], [[1, 2], [3, 4], [5, 0]])


def test_float64_is_narrowed_to_float32(single):
    assert joined(load_data(images(2).astype("float64"), single))[0].dtype == np.float32


def test_open_dimensions_accept_any_length(multi):
    vectors, tokens = pair(3, length=11)
    assert load_data([vectors, tokens], multi).arrays[1].shape == (3, 11)


# --- validation errors -------------------------------------------------------------------------


def test_unknown_and_missing_npz_names(tmp_path, multi):
    vectors, _ = pair(3)
    np.savez(tmp_path / "data.npz", vector=vectors, tokenz=vectors)
    message = error(tmp_path / "data.npz", multi)
    assert message.startswith(f"{tmp_path / 'data.npz'}: ")
    assert "unknown 'tokenz'" in message and "missing 'tokens'" in message
    assert f"'vector' {VECTOR}" in message and f"'tokens' {TOKENS}" in message


def test_path_label_names_the_file(tmp_path, single):
    np.savez(tmp_path / "x.npz", pixels=images(2))
    message = error(tmp_path / "x.npz", single, path_label="data.npz")
    assert message.startswith("data.npz: ") and "'image'" in message and IMAGE in message


def test_dict_with_wrong_names(multi):
    message = error({"vector": pair(2)[0]}, multi)
    assert "missing 'tokens'" in message and TOKENS in message


def test_positional_npz_with_too_many_arrays(tmp_path, multi):
    vectors, tokens = pair(3)
    np.savez(tmp_path / "data.npz", vectors, tokens, tokens)
    message = error(tmp_path / "data.npz", multi)
    assert "got 3 arrays but the model has 2 inputs" in message
    assert "'tokens'" in message and TOKENS in message


def test_wrong_number_of_arrays(multi):
    vectors, tokens = pair(3)
    message = error([vectors, tokens, tokens], multi)
    assert "got 3 arrays" in message and "'vector'" in message and VECTOR in message


def test_single_array_for_a_multi_input_model(multi):
    message = error(pair(3)[0], multi)
    assert "got 1 array but the model has 2 inputs" in message and VECTOR in message


def test_batch_with_a_single_array_for_a_multi_input_model(multi):
    message = error(iter([pair(3)[0]]), multi)
    assert message.startswith("batch 0: got 1 array ") and TOKENS in message


def test_shape_mismatch(single, tmp_path):
    np.savez(tmp_path / "data.npz", image=np.zeros((10, 8, 8, 4), "float32"))
    message = error(tmp_path / "data.npz", single, path_label="data.npz")
    assert message == (
        f"data.npz: input 'image' has shape (10, 8, 8, 4) but the model expects {IMAGE}"
    )


def test_rank_mismatch(single):
    message = error(np.zeros((10, 8, 8)), single)
    assert message == f"input 'image' has shape (10, 8, 8) but the model expects {IMAGE}"


def test_missing_batch_dimension_gets_a_hint(single):
    message = error(np.zeros((8, 8, 3)), single)
    assert "'image'" in message and IMAGE in message and "lacks the batch dimension" in message


def test_shape_mismatch_in_a_later_batch(single):
    message = error([images(2), np.zeros((2, 8, 8, 1))], single)
    assert message.startswith("batch 1: input 'image' has shape (2, 8, 8, 1)") and IMAGE in message


def test_unbatched_tf_dataset(single, tf):
    message = error(tf.data.Dataset.from_tensor_slices(images(3)), single)
    assert "(8, 8, 3)" in message and IMAGE in message and "lacks the batch dimension" in message


def test_inconsistent_sample_counts(multi):
    vectors, _ = pair(5)
    _, tokens = pair(3)
    message = error({"vector": vectors, "tokens": tokens}, multi, path_label="data.npz")
    assert message.startswith("data.npz: input 'tokens' has 3 samples")
    assert "'vector' has 5" in message and TOKENS in message


def test_batches_with_different_open_dimensions(multi):
    first, second = pair(2, length=3), pair(2, length=4)
    message = error(iter([first, second]), multi)
    assert "'tokens'" in message and "(3,), (4,)" in message and TOKENS in message


@pytest.mark.parametrize(
    ("tokens", "problem"),
    [
        (np.array([[1.5, 2.0]]), "non-integral float64 values"),
        (np.array([[np.nan, 2.0]]), "non-integral float64 values"),
        (np.array([[2.0**40, 1.0]]), "outside int32"),
        (np.array([[2**40, 1]]), "outside int32"),
        (np.array([[-1, 1]], dtype="int8").astype("uint64"), "outside int32"),
        (np.array([[True, False]]), "the data is bool"),
    ],
)
def test_unsafe_casts_to_an_integer_input(multi, tokens, problem):
    message = error([pair(1)[0], tokens], multi)
    assert message.startswith("input 'tokens' expects int32") and TOKENS in message
    assert problem in message


@pytest.mark.parametrize(
    "values",
    [
        np.array([[[[True]]]]).repeat(8, 1).repeat(8, 2).repeat(3, 3),
        np.full((1, 8, 8, 3), "a"),
        np.full((1, 8, 8, 3), None, dtype=object),
        np.zeros((1, 8, 8, 3), complex),
    ],
    ids=["bool", "string", "object", "complex"],
)
def test_unusable_dtypes(single, values):
    message = error(values, single)
    assert message.startswith("input 'image' ") and IMAGE in message and "float32" in message


def test_float_overflow(single):
    message = error(np.full((1, 8, 8, 3), 1e300), single)
    assert "overflow" in message and "'image'" in message and IMAGE in message


def test_ragged_lists(single):
    message = error({"image": [[1.0], [1.0, 2.0]]}, single)
    assert "input 'image' cannot be read as an array" in message and IMAGE in message


@pytest.mark.parametrize(
    "source",
    [np.zeros((0, 8, 8, 3)), iter([]), [], iter([np.zeros((0, 8, 8, 3))])],
    ids=["empty-array", "empty-generator", "empty-list", "empty-batch"],
)
def test_no_samples(single, source):
    message = error(source, single)
    assert "no samples" in message and "'image'" in message and IMAGE in message


def test_empty_npz(tmp_path, single):
    np.savez(tmp_path / "data.npz")
    message = error(tmp_path / "data.npz", single)
    assert "missing 'image'" in message and IMAGE in message


@pytest.mark.parametrize(
    ("name", "content"),
    [
        ("data.npz", b"PK\x03\x04 this is no zip archive"),
        ("data.npy", b"\x93NUMPY garbage"),
        ("data.npy", b"just some text\n"),
        ("data.npz", b""),
    ],
)
def test_corrupt_files(tmp_path, single, name, content):
    (tmp_path / name).write_bytes(content)
    message = error(tmp_path / name, single)
    assert message.startswith(f"{tmp_path / name}: not a valid .npz/.npy file")


def test_truncated_npz(tmp_path, single):
    np.savez(tmp_path / "full.npz", image=images(20))
    whole = (tmp_path / "full.npz").read_bytes()
    (tmp_path / "cut.npz").write_bytes(whole[: len(whole) // 2])
    assert "not a valid .npz/.npy file" in error(tmp_path / "cut.npz", single)


def test_missing_file_and_directory(tmp_path, single):
    assert error(tmp_path / "nope.npz", single) == f"{tmp_path / 'nope.npz'}: no such file"
    assert error(tmp_path, single) == f"{tmp_path}: is not a file"


@pytest.mark.parametrize("suffix", ["npy", "npz"])
def test_pickled_object_arrays_are_refused(tmp_path, single, suffix):
    path = tmp_path / f"data.{suffix}"
    objects = np.array([{"a": 1}, None], dtype=object)
    if suffix == "npy":
        np.save(path, objects, allow_pickle=True)
    else:
        np.savez(path, image=objects)
    assert "pickled object array" in error(path, single)


@pytest.mark.parametrize(
    "options",
    [{"batch_size": 0}, {"max_samples": 0}, {"batch_size": -3}, {"max_samples": True}],
)
def test_counts_must_be_positive(single, options):
    message = error(images(2), single, **options)
    assert message.startswith(next(iter(options))) and "positive integer" in message


def test_unsupported_source(single):
    assert "cannot read calibration data from a int" in error(5, single)


def test_user_errors_are_normify_errors_with_the_path(tmp_path, single):
    with pytest.raises(NormifyError) as info:
        load_data(np.zeros((2, 3)), single, path_label="inputs.npz")
    assert info.value.path == "inputs.npz"


# --- progress ----------------------------------------------------------------------------------


def test_progress_is_silent_when_stderr_is_not_a_terminal(capsys):
    assert list(progress(range(5), total=5, description="calibrating")) == [0, 1, 2, 3, 4]
    captured = capsys.readouterr()
    assert captured.err == "" and captured.out == ""


def test_progress_is_silent_when_quiet(capsys, monkeypatch):
    monkeypatch.setattr(data, "_stderr_is_terminal", lambda: True)
    assert list(progress(iter("abc"), total=3, description="x", quiet=True)) == ["a", "b", "c"]
    assert capsys.readouterr().err == ""


def test_progress_on_a_terminal_yields_everything(monkeypatch):
    monkeypatch.setattr(data, "_stderr_is_terminal", lambda: True)
    assert list(progress(range(4), total=4, description="calibrating")) == [0, 1, 2, 3]


def test_progress_over_calibration_batches(single):
    calibration = load_data(images(10), single, batch_size=3)
    seen = list(progress(calibration.batches(), total=len(calibration), description="x"))
    assert len(seen) == 4


def test_data_module_does_not_import_a_backend():
    # A fresh interpreter: this test process has long since imported Keras and TensorFlow.
    code = "import sys, normify.data; print(sorted({'keras', 'tensorflow'} & set(sys.modules)))"
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "[]"
