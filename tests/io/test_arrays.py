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
    with pytest.raises(InputError, match="applies to images only"):
        np.save(tmp_path / "x.npy", np.zeros((2, 4, 4, 2), np.float32))
        open_data(tmp_path / "x.npy", SPEC, rescale=0.5)


def test_zip_without_arrays(tmp_path):
    path = tmp_path / "e.npz"
    with zipfile.ZipFile(path, "w") as archive:
        archive.writestr("readme.txt", "hi")
    with pytest.raises(InputError, match="e.npz"):
        load_arrays(path, SPEC)
