"""Data that does not fit the model's input is refused before any work, in every data path.

Issue 23, class 3: 300 in a uint8 input was wrapped to 44, negatives to 2**8 - n, and token ids at or beyond
an Embedding's vocabulary crashed TensorFlow (exit 3). Now: one line naming the file, the input, the value,
where it is and the allowed range; exit 2; nothing written.
"""

from __future__ import annotations

import keras
import numpy as np
import pytest
from keras import layers

import bnfreeze
from bnfreeze.errors import InputError
from bnfreeze.io.signature import input_specs
from bnfreeze.io.sources import as_data, open_data


def _uint8_model():
    x = keras.Input((4, 4, 1), dtype="uint8", name="img")
    y = layers.BatchNormalization(name="bn")(layers.Conv2D(2, 3, name="c")(layers.Rescaling(1 / 255)(x)))
    return keras.Model(x, layers.Dense(2)(layers.Flatten()(y)))


def _token_model(vocabularies=(50,), nested=False):
    inputs, branches = [], []
    for i, size in enumerate(vocabularies):
        t = keras.Input((6,), dtype="int32", name=f"tokens{i}")
        inputs.append(t)
        if nested:
            inner_in = keras.Input((6,), dtype="int32")
            inner = keras.Model(inner_in, layers.Embedding(size, 3, name=f"emb{i}")(inner_in), name=f"block{i}")
            branches.append(inner(t))
        else:
            branches.append(layers.Embedding(size, 3, name=f"emb{i}")(t))
    hidden = branches[0] if len(branches) == 1 else layers.Concatenate()(branches)
    return keras.Model(inputs, layers.Dense(2)(layers.BatchNormalization(name="bn")(layers.Flatten()(hidden))))


@pytest.mark.parametrize("values,stored,bad", [
    (300, "int32", "300"), (-1, "int16", "-1"), (256, "int64", "256"), (-129, "int64", "-129"),
])
def test_uint8_input_refuses_what_a_cast_would_wrap(tmp_path, values, stored, bad):
    model = _uint8_model()
    data = np.random.default_rng(0).integers(0, 256, (9, 4, 4, 1)).astype(stored)
    data[6, 2, 1, 0] = values
    np.save(tmp_path / "d.npy", data)
    with pytest.raises(InputError, match=rf"d.npy: input img holds {bad} at sample 6; it takes 0..255 \(uint8\)"):
        open_data(tmp_path / "d.npy", input_specs(model))


def test_uint8_input_takes_its_whole_range_from_a_wider_dtype(tmp_path):
    model = _uint8_model()
    data = np.zeros((3, 4, 4, 1), "int64")
    data[0, 0, 0, 0], data[1, 1, 1, 0] = 0, 255
    np.save(tmp_path / "d.npy", data)
    feed = next(open_data(tmp_path / "d.npy", input_specs(model)).batches(3))
    assert feed["img"].dtype == np.uint8 and feed["img"].max() == 255


@pytest.mark.parametrize("nested", [False, True])
def test_token_ids_at_or_beyond_the_vocabulary_are_refused(tmp_path, nested):
    model = _token_model((50,), nested=nested)
    ids = np.random.default_rng(0).integers(0, 50, (8, 6)).astype("int32")
    np.save(tmp_path / "ok.npy", ids)
    assert open_data(tmp_path / "ok.npy", input_specs(model)).size == 8
    for value in (50, 1000, -1):
        ids[5, 3] = value
        np.savez(tmp_path / "bad.npz", tokens0=ids)
        with pytest.raises(InputError, match=rf"bad.npz: input tokens0 holds {value} at sample 5; it takes 0..49 "
                                             r"\(the vocabulary of emb0, input_dim 50\)"):
            open_data(tmp_path / "bad.npz", input_specs(model))


def test_each_input_is_bounded_by_its_own_vocabulary_not_the_smallest(tmp_path):
    model = _token_model((10, 100))
    specs = input_specs(model)
    assert [(s.values.low, s.values.high) for s in specs] == [(0, 9), (0, 99)]
    np.savez(tmp_path / "d.npz", tokens0=np.full((3, 6), 9, "int32"), tokens1=np.full((3, 6), 99, "int32"))
    assert open_data(tmp_path / "d.npz", specs).size == 3  # 99 is valid for tokens1, though tokens0 stops at 9


def test_category_encoding_bounds_its_input():
    x = keras.Input((2,), dtype="int64", name="cat")
    model = keras.Model(x, layers.CategoryEncoding(num_tokens=7, output_mode="multi_hot")(x))
    (spec,) = input_specs(model)
    assert (spec.values.low, spec.values.high) == (0, 6)
    with pytest.raises(InputError, match="input cat holds 7 at sample 1; it takes 0..6"):
        as_data({"cat": np.array([[0, 6], [7, 1]], "int64")}, [spec])


def test_float16_input_refuses_values_its_dtype_cannot_hold(tmp_path):
    x = keras.Input((3,), dtype="float16", name="f")
    model = keras.Model(x, layers.Dense(2, dtype="float32")(x))
    np.save(tmp_path / "d.npy", np.array([[1.0, 2.0, 3.0], [1.0, 7e4, 0.0]], "float32"))
    with pytest.raises(InputError, match="input f holds 70000.0 at sample 1; it takes values of magnitude up to 65504"):
        open_data(tmp_path / "d.npy", input_specs(model))
    np.save(tmp_path / "ok.npy", np.array([[65504.0, -65504.0, 0.5]], "float32"))
    assert open_data(tmp_path / "ok.npy", input_specs(model)).size == 1


def test_several_array_files_are_one_set_and_name_the_file_at_fault(tmp_path):
    model = _uint8_model()
    rng = np.random.default_rng(0)
    parts = [rng.integers(0, 256, (n, 4, 4, 1)).astype("uint8") for n in (5, 1, 7)]
    for i, part in enumerate(parts):
        np.save(tmp_path / f"p{i}.npy", part)
    data = open_data([tmp_path / f"p{i}.npy" for i in range(3)], input_specs(model))
    assert data.size == 13
    whole = np.concatenate(parts)
    batches = [feed["img"] for feed in data.batches(4)]
    assert [len(b) for b in batches] == [4, 4, 4, 1]  # batches cross the files as one array would
    np.testing.assert_array_equal(np.concatenate(batches), whole)
    np.testing.assert_array_equal(data.take([0, 5, 12])["img"], whole[[0, 5, 12]])
    bad = parts[2].astype("int32")
    bad[3, 0, 0, 0] = 999
    np.save(tmp_path / "p2.npy", bad)
    with pytest.raises(InputError, match=r"p2.npy: input img holds 999 at sample 3"):
        open_data([tmp_path / f"p{i}.npy" for i in range(3)], input_specs(model))
    np.save(tmp_path / "other.npy", np.zeros((2, 5, 5, 1), "uint8"))
    with pytest.raises(InputError, match="other.npy: img has shape"):
        open_data([tmp_path / "p0.npy", tmp_path / "other.npy"], input_specs(model))
    with pytest.raises(InputError, match="several data paths must all be .npy/.npz files"):
        open_data([tmp_path / "p0.npy", tmp_path / "x.tfrecord"], input_specs(model))


def test_several_array_files_recalibrate_as_their_concatenation(tmp_path):
    x = keras.Input((3,), name="x")
    model = keras.Model(x, layers.BatchNormalization(name="bn")(layers.Dense(4, name="d")(x)))
    rng = np.random.default_rng(2)
    a, b = rng.standard_normal((30, 3)).astype("float32"), (rng.standard_normal((11, 3)) * 3 + 1).astype("float32")
    np.save(tmp_path / "a.npy", a)
    np.savez(tmp_path / "b.npz", x=b)
    np.save(tmp_path / "ab.npy", np.concatenate([a, b]))
    specs = input_specs(model)
    apart = bnfreeze.recalibrate(model, open_data([tmp_path / "a.npy", tmp_path / "b.npz"], specs), batch_size=8)
    whole = bnfreeze.recalibrate(model, open_data(tmp_path / "ab.npy", specs), batch_size=8)
    for name in ("moving_mean", "moving_variance"):
        np.testing.assert_array_equal(getattr(apart.model.get_layer("bn"), name).numpy(),
                                      getattr(whole.model.get_layer("bn"), name).numpy())


def test_labels_in_some_files_only_are_refused(tmp_path):
    x = keras.Input((3,), name="x")
    model = keras.Model(x, layers.Dense(2)(x))
    np.savez(tmp_path / "a.npz", x=np.zeros((2, 3), "float32"), y=np.zeros(2))
    np.savez(tmp_path / "b.npz", x=np.zeros((2, 3), "float32"))
    with pytest.raises(InputError, match="b.npz: has no labels"):
        open_data([tmp_path / "a.npz", tmp_path / "b.npz"], input_specs(model))


def _write_pngs(folder, count=3, size=5):
    from PIL import Image

    folder.mkdir()
    rng = np.random.default_rng(0)
    for i in range(count):
        Image.fromarray(rng.integers(0, 256, (size, size), dtype=np.uint8)).save(folder / f"{i}.png")


def test_image_folders_for_integer_inputs_check_the_rescale_and_round(tmp_path):
    model = _uint8_model()
    _write_pngs(tmp_path / "imgs")
    specs = input_specs(model)
    with pytest.raises(InputError, match=r"imgs: pixels 0..255 times --rescale 0.00392157 are not whole numbers"):
        open_data(tmp_path / "imgs", specs, 1 / 255)
    with pytest.raises(InputError, match=r"imgs: pixels 0..255 times --rescale 2 reach 510"):
        open_data(tmp_path / "imgs", specs, 2)
    # resized from 5x5 to 4x4: bilinear values between integers are rounded, not truncated
    import tensorflow as tf

    feed = next(open_data(tmp_path / "imgs", specs).batches(3))["img"]
    first = sorted((tmp_path / "imgs").iterdir())[0]
    expected = tf.image.resize(tf.cast(tf.io.decode_png(tf.io.read_file(str(first)), 1), tf.float32), (4, 4))
    np.testing.assert_array_equal(feed[0], np.rint(expected.numpy()).astype(np.uint8))


def test_tfrecords_are_checked_before_any_work(tmp_path):
    import tensorflow as tf

    model = _token_model((50,))
    with tf.io.TFRecordWriter(str(tmp_path / "t.tfrecord")) as writer:
        for i in range(6):
            ids = [1, 2, 3, 4, 5, 60 if i == 4 else 6]
            feature = {"tokens0": tf.train.Feature(int64_list=tf.train.Int64List(value=ids))}
            writer.write(tf.train.Example(features=tf.train.Features(feature=feature)).SerializeToString())
    with pytest.raises(InputError, match=r"t.tfrecord: record 5: input tokens0 holds 60; it takes 0..49"):
        open_data([str(tmp_path / "t.tfrecord")], input_specs(model))
    u8 = _uint8_model()
    with tf.io.TFRecordWriter(str(tmp_path / "u.tfrecord")) as writer:
        for i in range(3):
            value = tf.io.serialize_tensor(tf.constant(np.full((4, 4, 1), -5 if i == 2 else 7, np.int32)))
            feature = {"img": tf.train.Feature(bytes_list=tf.train.BytesList(value=[value.numpy()]))}
            writer.write(tf.train.Example(features=tf.train.Features(feature=feature)).SerializeToString())
    with pytest.raises(InputError, match=r"u.tfrecord: record 3: input img holds -5; it takes 0..255"):
        open_data(str(tmp_path / "u.tfrecord"), input_specs(u8))


def test_datasets_and_arrays_in_memory_are_checked_too():
    import tensorflow as tf

    model = _token_model((50,))
    ids = np.ones((4, 6), "int64")
    ids[2, 0] = 77
    for data in (ids, tf.data.Dataset.from_tensor_slices(ids), tf.data.Dataset.from_tensor_slices(ids).batch(3)):
        with pytest.raises(InputError, match="input tokens0 holds 77 at sample 2; it takes 0..49"):
            bnfreeze.recalibrate(model, data)
    floats = tf.data.Dataset.from_tensor_slices(np.ones((2, 6), "float32"))
    with pytest.raises(InputError, match="holds floats"):
        bnfreeze.recalibrate(model, floats)


def test_verify_data_is_checked_against_every_keras_model_compared(tmp_path):
    from bnfreeze.verify import verify

    _token_model((50,)).save(tmp_path / "big.keras")
    small = _token_model((20,))
    small.save(tmp_path / "small.keras")
    np.save(tmp_path / "d.npy", np.full((3, 6), 30, "int32"))  # fits the reference, not the candidate
    with pytest.raises(InputError, match=r"d.npy: input tokens0 holds 30 at sample 0; the candidate .*small.keras takes 0..19"):
        verify(tmp_path / "big.keras", [tmp_path / "small.keras"], data=tmp_path / "d.npy")


def test_a_candidate_input_narrower_than_the_data_refuses_rather_than_wraps():
    from bnfreeze.verify.runners.base import IOSpec, to_input

    with pytest.raises(InputError, match="input q cannot take 300"):
        to_input(np.array([[1, 300]], "int32"), IOSpec("q", (None, 2), "uint8"))
    assert to_input(np.array([[1, 255]], "int32"), IOSpec("q", (None, 2), "uint8")).dtype == np.uint8


def test_the_command_line_refuses_with_one_line_and_writes_nothing(tmp_path):
    from click.testing import CliRunner

    from bnfreeze.cli import main

    model = _token_model((50,))
    model.save(tmp_path / "m.keras")
    ids = np.ones((20, 6), "int32")
    ids[17, 2] = 50
    np.save(tmp_path / "d.npy", ids)
    before = sorted(p.name for p in tmp_path.iterdir())
    for args in (["recalibrate", tmp_path / "m.keras", "--calib-data", tmp_path / "d.npy"],
                 ["fold", tmp_path / "m.keras", "--data", tmp_path / "d.npy"],
                 ["quantize", tmp_path / "m.keras", "--calib-data", tmp_path / "d.npy", "--tflite", tmp_path / "q.tflite"],
                 ["verify", tmp_path / "m.keras", tmp_path / "m.keras", "--data", tmp_path / "d.npy",
                  "--json", tmp_path / "v.json"]):
        result = CliRunner().invoke(main, [str(a) for a in args])
        assert result.exit_code == 2, (args, result.output)
        assert "d.npy: input tokens0 holds 50 at sample 17; it takes 0..49" in result.output
        assert "Traceback" not in result.output
        assert sorted(p.name for p in tmp_path.iterdir()) == before
