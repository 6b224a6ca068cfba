"""TFRecord files (images, serialized tensors, value lists, compressed) and tf.data.Dataset as calibration data."""

from __future__ import annotations

import numpy as np
import pytest

from bnfreeze.errors import InputError
from bnfreeze.io.records import dataset_data, load_records
from bnfreeze.io.signature import TensorSpec
from bnfreeze.io.sources import check_data_path, open_data

SPEC = [TensorSpec("image", (None, 6, 5, 2), "float32")]
IMAGE_SPEC = [TensorSpec("image", (None, 6, 5, 3), "float32")]


def example(**features):
    import tensorflow as tf

    def feature(value):
        if isinstance(value, bytes):
            return tf.train.Feature(bytes_list=tf.train.BytesList(value=[value]))
        value = np.asarray(value).ravel()
        if np.issubdtype(value.dtype, np.integer):
            return tf.train.Feature(int64_list=tf.train.Int64List(value=value))
        return tf.train.Feature(float_list=tf.train.FloatList(value=value))

    return tf.train.Example(features=tf.train.Features(
        feature={k: feature(v) for k, v in features.items()})).SerializeToString()


def write(path, records, compression: str = ""):
    import tensorflow as tf

    with tf.io.TFRecordWriter(str(path), options=compression or None) as writer:
        for record in records:
            writer.write(record)
    return path


def serialized(x):
    import tensorflow as tf

    return tf.io.serialize_tensor(tf.constant(x)).numpy()


def read_all(data, batch_size=4):
    return np.concatenate([np.asarray(b["image"]) for b in data.batches(batch_size)])


@pytest.fixture(scope="module")
def samples():
    return np.random.default_rng(0).normal(2, 3, (11, 6, 5, 2)).astype(np.float32)


def test_serialized_tensors_and_value_lists_over_several_files_in_order(tmp_path, samples):
    write(tmp_path / "a-0.tfrecord", [example(x=serialized(s), label=1) for s in samples[:7]])
    write(tmp_path / "a-1.tfrecord", [example(x=serialized(s)) for s in samples[7:]])
    data = open_data(str(tmp_path / "a-*.tfrecord"), SPEC)
    assert data.format.kind == "serialized" and data.format.feature == "x" and data.size is None
    np.testing.assert_array_equal(read_all(data), samples)
    assert data.count() == 11
    np.testing.assert_array_equal(np.asarray(data.take([9, 2])["image"]), samples[[2, 9]])
    np.testing.assert_array_equal(read_all(data.head(5)), samples[:5])
    np.testing.assert_array_equal(read_all(data.shard(1, 2, 4)), samples[7:])  # by file
    write(tmp_path / "list.tfrecord.gz", [example(values=s) for s in samples], "GZIP")
    data = open_data(tmp_path / "list.tfrecord.gz", SPEC, feature="values")
    assert data.format.kind == "float_list" and data.compression == "GZIP"
    np.testing.assert_array_equal(read_all(data), samples)


def test_int64_lists_are_cast_and_uint8_tensors_feed_a_float_input(tmp_path):
    ints = np.arange(2 * 60).reshape(2, 6, 5, 2)
    write(tmp_path / "i.tfrecord", [example(x=s) for s in ints])
    np.testing.assert_array_equal(read_all(open_data(tmp_path / "i.tfrecord", SPEC)), ints.astype(np.float32))
    write(tmp_path / "u.tfrecord", [example(x=serialized(s.astype(np.uint8))) for s in ints])
    np.testing.assert_array_equal(read_all(open_data(tmp_path / "u.tfrecord", SPEC)), ints.astype(np.float32))


def test_encoded_images_decode_resize_and_rescale_like_a_folder(tmp_path):
    import tensorflow as tf

    from bnfreeze.io.images import load_image_folder

    rng = np.random.default_rng(1)
    folder = tmp_path / "images"
    folder.mkdir()
    records = []
    for i in range(5):
        png = tf.io.encode_png(rng.integers(0, 256, (9, 7, 3), dtype=np.uint8)).numpy()
        (folder / f"{i}.png").write_bytes(png)
        records.append(example(**{"image/encoded": png, "image/class/label": i}))
    write(tmp_path / "img.tfrecord", records)
    data = open_data(tmp_path / "img.tfrecord", IMAGE_SPEC, rescale=1 / 255)
    assert data.format.kind == "image" and data.format.feature == "image/encoded"
    expected = np.concatenate([b["image"] for b in load_image_folder(folder, IMAGE_SPEC, 1 / 255).batches(5)])
    np.testing.assert_allclose(read_all(data), expected, rtol=1e-6)
    assert read_all(data).max() <= 1.0


@pytest.mark.parametrize("case, message", [
    ("missing", "no such file"),
    ("no_match", "matches no files"),
    ("not_records", "not a readable TFRecord file"),
    ("empty", "holds no records"),
    ("feature", "no feature 'nope'; they have x"),
    ("shape", "holds tensors of shape (3, 5, 2)"),
    ("list_size", "holds 7 values per record"),
    ("complex", "complex64 tensors"),
    ("image_type", "is a float_list, not encoded image bytes"),
])
def test_bad_tfrecords_at_open_name_the_file(tmp_path, case, message):
    path = tmp_path / "bad.tfrecord"
    kwargs = {}
    if case == "missing":
        path = tmp_path / "absent.tfrecord"
    elif case == "no_match":
        path = tmp_path / "absent-*.tfrecord"
    elif case == "not_records":
        path.write_bytes(b"this is not a TFRecord file at all, just some text" * 4)
    elif case == "empty":
        write(path, [])
    elif case == "feature":
        write(path, [example(x=serialized(np.zeros((6, 5, 2), np.float32)))])
        kwargs["feature"] = "nope"
    elif case == "shape":
        write(path, [example(x=serialized(np.zeros((3, 5, 2), np.float32)))])
    elif case == "list_size":
        write(path, [example(x=np.zeros(7, np.float32))])
    elif case == "complex":
        write(path, [example(x=serialized(np.zeros((6, 5, 2), np.complex64)))])
    elif case == "image_type":
        write(path, [example(x=np.zeros(60, np.float32))])
        kwargs["feature_type"] = "image"
    with pytest.raises(InputError, match="bad.tfrecord|absent") as info:
        open_data(str(path), SPEC, **kwargs)
    assert message in str(info.value) and str(path) in str(info.value)


def test_a_bad_record_in_a_later_file_is_named_with_its_number(tmp_path, samples):
    write(tmp_path / "s-0.tfrecord", [example(x=serialized(s)) for s in samples[:6]])
    bad = [example(x=serialized(s)) for s in samples[6:]]
    bad[2] = example(x=b"garbage that is not a tensor")
    write(tmp_path / "s-1.tfrecord", bad)
    nan = samples[:3].copy()
    nan[1, 0, 0, 0] = np.nan
    write(tmp_path / "s-2.tfrecord", [example(x=serialized(s)) for s in nan])
    data = open_data(str(tmp_path / "s-*.tfrecord"), SPEC)
    with pytest.raises(InputError, match=r"s-1.tfrecord: record 3: feature 'x' \(a serialized tensor\)"):
        read_all(data)
    with pytest.raises(InputError, match=r"s-2.tfrecord: record 2: holds NaN or Inf"):
        read_all(data.shard(0, 2, 4))  # files s-0 and s-2

def test_a_truncated_file_is_named(tmp_path, samples):
    path = write(tmp_path / "t.tfrecord", [example(x=serialized(s)) for s in samples])
    raw = path.read_bytes()
    path.write_bytes(raw[: len(raw) - 40])
    with pytest.raises(InputError, match="t.tfrecord: not a readable TFRecord file"):
        read_all(open_data(path, SPEC))


def test_missing_data_is_found_before_anything_else(tmp_path):
    with pytest.raises(InputError, match="no such file or folder"):
        check_data_path(tmp_path / "absent.npy")
    with pytest.raises(InputError, match="matches no files"):
        check_data_path(str(tmp_path / "*.tfrecord"))


def test_a_dataset_of_samples_or_batches(samples):
    import tensorflow as tf

    for dataset in (tf.data.Dataset.from_tensor_slices(samples),
                    tf.data.Dataset.from_tensor_slices((samples, np.arange(11))).batch(3),
                    tf.data.Dataset.from_tensor_slices({"image": samples.astype(np.float64)})):
        data = dataset_data(dataset, SPEC)
        np.testing.assert_allclose(read_all(data), samples, rtol=1e-7)
        assert data.count() == 11
        np.testing.assert_allclose(np.asarray(data.take([4, 1])["image"]), samples[[1, 4]], rtol=1e-7)
        np.testing.assert_allclose(read_all(data.shard(1, 2, 4)), samples[1::2], rtol=1e-7)
    with pytest.raises(InputError, match="infinite"):
        dataset_data(tf.data.Dataset.from_tensor_slices(samples).repeat(), SPEC)
    with pytest.raises(InputError, match="rank 2"):
        dataset_data(tf.data.Dataset.from_tensor_slices(np.zeros((4, 3, 2), np.float32)), SPEC)
    with pytest.raises(InputError, match="complex"):
        dataset_data(tf.data.Dataset.from_tensor_slices(samples.astype(np.complex64)), SPEC)


def test_load_records_needs_one_input(tmp_path, samples):
    write(tmp_path / "a.tfrecord", [example(x=serialized(samples[0]))])
    with pytest.raises(InputError, match="one input"):
        load_records(str(tmp_path / "a.tfrecord"), SPEC * 2)
