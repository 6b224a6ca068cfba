"""Streamed reading of .npz members and the data checks."""

import zipfile

import numpy as np
import pytest

from bnfreeze.io.arrays import NpzMember, load_arrays
from bnfreeze.io.sources import open_data
from bnfreeze.errors import InputError
from bnfreeze.io.signature import TensorSpec

SPEC = [TensorSpec("image", (None, 4, 4, 2), "float32")]


@pytest.mark.parametrize("save", [np.savez, np.savez_compressed])
def test_npz_members_are_read_by_row_range(tmp_path, save):
    x = np.random.default_rng(0).random((50, 4, 4, 2)).astype(np.float32)
    path = tmp_path / "d.npz"
    save(path, x=x, y=np.arange(50))
    data = load_arrays(path, SPEC)
    assert isinstance(data.arrays["image"], NpzMember)
    got = np.concatenate([b["image"] for b in data.batches(7)])
    np.testing.assert_array_equal(got, x)
    np.testing.assert_array_equal(data.take([9, 3])["image"], x[[3, 9]])
    np.testing.assert_array_equal(data.labels, np.arange(50))


def test_corrupt_npz_member_is_named(tmp_path):
    x = np.random.default_rng(0).random((50, 4, 4, 2)).astype(np.float32)
    path = tmp_path / "d.npz"
    np.savez(path, x=x)
    raw = bytearray(path.read_bytes())
    raw[len(raw) // 2] ^= 0xFF  # flip bits inside the stored array
    path.write_bytes(bytes(raw))
    with pytest.raises(InputError, match="d.npz"):
        data = load_arrays(path, SPEC)
        for _ in data.batches(50):
            pass


def test_folder_needs_an_image_model(tmp_path):
    (tmp_path / "a.png").write_bytes(b"")
    with pytest.raises(InputError, match="one image input"):
        open_data(tmp_path, [TensorSpec("v", (None, 3), "float32")])
    with pytest.raises(InputError, match="holds no images"):
        (tmp_path / "a.png").unlink()
        open_data(tmp_path, SPEC[:1] and [TensorSpec("i", (None, 8, 8, 3), "float32")])


@pytest.mark.parametrize("suffix", [".npy", ".npz"])
def test_rescale_multiplies_array_data_as_it_does_pixels(tmp_path, suffix):
    raw = np.random.default_rng(0).integers(0, 256, (7, 4, 4, 2)).astype(np.uint8)
    path = tmp_path / f"x{suffix}"
    np.save(path, raw) if suffix == ".npy" else np.savez(path, image=raw)
    data = open_data(path, SPEC, rescale=1 / 255)
    got = np.concatenate([b["image"] for b in data.batches(3)])
    assert got.dtype == np.float32
    np.testing.assert_array_equal(got, raw.astype(np.float32) * np.float32(1 / 255))
    np.testing.assert_array_equal(data.take([5, 1])["image"], got[[1, 5]])  # a subset is rescaled too
    assert np.concatenate([b["image"] for b in open_data(path, SPEC).batches(7)]).max() == raw.max()


def test_rescale_leaves_integer_inputs_alone_and_needs_a_float_one(tmp_path):
    tokens = np.arange(12).reshape(3, 4).astype(np.int32)
    image = np.full((3, 2), 200, np.uint8)
    path = tmp_path / "two.npz"
    np.savez(path, tokens=tokens, image=image)
    specs = [TensorSpec("tokens", (None, 4), "int32"), TensorSpec("image", (None, 2), "float32")]
    feed = next(open_data(path, specs, rescale=0.5).batches(3))
    np.testing.assert_array_equal(feed["tokens"], tokens)  # ids are not scaled
    np.testing.assert_array_equal(feed["image"], np.full((3, 2), 100.0, np.float32))
    with pytest.raises(InputError, match="two.npz: --rescale multiplies float inputs; the model's inputs are "
                                         "tokens \\(int32\\)"):
        open_data(path, specs[:1], rescale=0.5)


def test_zip_without_arrays(tmp_path):
    path = tmp_path / "e.npz"
    with zipfile.ZipFile(path, "w") as archive:
        archive.writestr("readme.txt", "hi")
    with pytest.raises(InputError, match="e.npz"):
        load_arrays(path, SPEC)


def test_shards_are_contiguous_ranges_of_whole_batches(tmp_path):
    x = np.arange(45 * 32, dtype=np.float32).reshape(45, 4, 4, 2)
    np.save(tmp_path / "x.npy", x)
    data = load_arrays(tmp_path / "x.npy", SPEC)
    for workers, expected in [(2, [(0, 16), (16, 45)]), (3, [(0, 16), (16, 32), (32, 45)]),
                              (4, [(0, 0), (0, 16), (16, 32), (32, 45)])]:
        shards = [data.shard(i, workers, 16) for i in range(workers)]
        assert [(s.start, s.start + s.size) for s in shards] == expected
        got = [np.concatenate([b["image"] for b in s.batches(16)]) for s in shards if s.size]
        np.testing.assert_array_equal(np.concatenate(got), x)
    head = data.head(20)
    assert head.size == 20 and [s.size for s in (head.shard(0, 2, 16), head.shard(1, 2, 16))] == [16, 4]
    np.testing.assert_array_equal(head.shard(1, 2, 16).take([3, 1])["image"], x[[17, 19]])


def test_npy_rows_are_read_not_mapped(tmp_path):
    from bnfreeze.io.arrays import NpyRows

    x = np.random.default_rng(0).random((30, 4, 4, 2)).astype(np.float32)
    np.save(tmp_path / "x.npy", x)
    data = load_arrays(tmp_path / "x.npy", SPEC)
    assert isinstance(data.arrays["image"], NpyRows) and not isinstance(data.arrays["image"], np.memmap)
    np.testing.assert_array_equal(np.concatenate([b["image"] for b in data.batches(7)]), x)


@pytest.mark.parametrize("array, message", [
    (np.zeros((3, 4, 4, 2), np.complex64), "complex numbers"),
    (np.zeros((3, 4, 4, 2), bool), "booleans"),
])
def test_complex_and_boolean_data_are_refused(tmp_path, array, message):
    np.save(tmp_path / "x.npy", array)
    with pytest.raises(InputError, match=f"x.npy: image has dtype .*{message}"):
        load_arrays(tmp_path / "x.npy", SPEC)


def test_an_npz_array_must_be_named_after_the_input_or_x(tmp_path):
    x = np.zeros((3, 4, 4, 2), np.float32)
    np.savez(tmp_path / "a.npz", images=x)
    with pytest.raises(InputError, match=r"a.npz: needs arrays named image \(or x for one input\); it has images"):
        load_arrays(tmp_path / "a.npz", SPEC)
    np.savez(tmp_path / "b.npz", image=x, y=np.arange(3))
    assert load_arrays(tmp_path / "b.npz", SPEC).size == 3


def test_random_text_inputs_are_fed_as_text():
    """A text input (dtype "string", a StringLookup model) is fed its random words as they are."""
    from bnfreeze.parity import random_data

    specs = [TensorSpec("words", (None, 3), "string"), TensorSpec("x", (None, 2), "float32")]
    (feed,) = list(random_data(specs, 4, seed=0).batches(8))
    assert feed["words"].shape == (4, 3) and feed["words"].dtype.kind == "U"
    assert feed["x"].dtype == np.float32


@pytest.mark.parametrize("labels,message", [
    (np.array(3), "y is a single number; give one label per sample"),
    (np.array(["cat"] * 6), "y holds <U3 values; labels are class indices"),
    (np.array([0, 1, np.nan, 1, 0, 1]), r"y has a NaN or infinite label \(sample 2\)"),
    (np.array([0, 1, 0.5, 1, 0, 1]), r"y has a fractional label \(0.5 at sample 2\)"),
    (np.array([0, 1, 2, -1, 0, 1]), r"y has a negative label \(-1 at sample 3\)"),
    (np.where(np.arange(18).reshape(6, 3) == 4, np.inf, np.eye(3)[[0, 1, 2, 0, 1, 2]]),
     r"y has a NaN or infinite label \(sample 1\)"),
])
def test_labels_that_name_no_class_are_refused_naming_the_file(tmp_path, labels, message):
    path = tmp_path / "d.npz"
    np.savez(path, x=np.zeros((6, 4, 4, 2), np.float32), y=labels)
    with pytest.raises(InputError, match=f"^{path}: " + message):
        load_arrays(path, SPEC)


def test_whole_float_labels_and_one_hot_rows_are_labels(tmp_path):
    for labels in (np.array([0.0, 1.0, 2.0, 1.0]), np.eye(3)[[0, 2, 1, 1]].astype(np.float32)):
        path = tmp_path / "d.npz"
        np.savez(path, x=np.zeros((4, 4, 4, 2), np.float32), y=labels)
        assert len(load_arrays(path, SPEC).labels) == 4
