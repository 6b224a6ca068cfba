"""Calibration images from a folder, read and resized in a ``tf.data`` pipeline.

Every PNG, JPEG, BMP or GIF under the folder (recursively, in sorted order)
is decoded to the model input's channel count, resized to its height and
width (bilinear), cast to float32 and multiplied by ``rescale``. Nothing else
is done: preprocessing the model needs (mean subtraction, ``/255``) must be
part of the model, or be given as ``rescale``. Images are read batch by batch
(with prefetching), so memory does not grow with the folder.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from pathlib import Path
from typing import Iterator

import numpy as np

from bnfreeze.io.arrays import feed_dtype
from bnfreeze.errors import InputError
from bnfreeze.io.ranges import check_pixels
from bnfreeze.io.signature import TensorSpec

IMAGE_SUFFIXES = {".png", ".jpg", ".jpeg", ".bmp", ".gif"}


@dataclass
class ImageLayout:
    height: int
    width: int
    channels: int
    channels_first: bool


def image_layout(folder, specs: list[TensorSpec]) -> ImageLayout:
    if len(specs) != 1 or len(specs[0].shape) != 4:
        raise InputError(f"{folder}: images feed a model with one image input (N, H, W, C); "
                         f"this model's inputs are {[s.shape for s in specs]}")
    _, a, b, c = specs[0].shape
    if c in (1, 3, 4) and a and b:
        return ImageLayout(a, b, c, False)
    if a in (1, 3, 4) and b and c:
        return ImageLayout(b, c, a, True)
    raise InputError(f"{folder}: the model's input {specs[0].shape} has no fixed height, width and 1, 3 or 4 "
                     "channels; give the images as a .npy file instead")


def decode_image(contents, layout: ImageLayout, rescale: float):
    """Encoded image bytes -> a float32 (H, W, C) or (C, H, W) tensor for the model (inside tf.data)."""
    import tensorflow as tf

    image = tf.io.decode_image(contents, channels=layout.channels, expand_animations=False)
    image = tf.image.resize(tf.cast(image, tf.float32), (layout.height, layout.width))
    image = image * rescale
    return tf.transpose(image, (2, 0, 1)) if layout.channels_first else image


@dataclass
class ImageFolderData:
    source: Path
    files: list[Path]
    specs: list[TensorSpec]
    layout: ImageLayout
    rescale: float = 1.0
    labels: None = None

    @property
    def size(self) -> int:
        return len(self.files)

    def count(self) -> int:
        return self.size

    def head(self, n: int) -> "ImageFolderData":
        return replace(self, files=self.files[:n])

    def shard(self, index: int, count: int, batch_size: int) -> "ImageFolderData":
        """Worker ``index`` of ``count``: a contiguous range of whole batches of files."""
        batches = -(-self.size // batch_size)
        first, last = (batches * index) // count, (batches * (index + 1)) // count
        return replace(self, files=self.files[first * batch_size:last * batch_size])

    def _load(self, path):
        import tensorflow as tf

        return decode_image(tf.io.read_file(path), self.layout, self.rescale)

    def _batches_of(self, files: list[Path], batch_size: int) -> Iterator[dict[str, np.ndarray]]:
        import tensorflow as tf

        dataset = tf.data.Dataset.from_tensor_slices([str(f) for f in files])
        dataset = dataset.map(self._load, num_parallel_calls=tf.data.AUTOTUNE, deterministic=True)
        dataset = dataset.batch(batch_size).prefetch(2)
        iterator = iter(dataset)
        for start in range(0, len(files), batch_size):
            try:
                batch = next(iterator)
            except (tf.errors.InvalidArgumentError, tf.errors.NotFoundError, tf.errors.UnknownError) as exc:
                raise InputError(self._culprit(files[start:start + batch_size], exc)) from exc
            values = batch.numpy()
            dtype = feed_dtype(self.specs[0].dtype)
            if np.issubdtype(dtype, np.integer):  # resized pixels lie between integers: rounded, not truncated
                values = np.rint(values)
            yield {self.specs[0].name: values.astype(dtype, copy=False)}

    def _culprit(self, files: list[Path], exc) -> str:
        for path in files:
            try:
                self._load(str(path))
            except Exception:  # noqa: BLE001 - any failure names this file
                return f"{path}: not a readable image"
        return f"{self.source}: could not read images ({str(exc).splitlines()[0][:120]})"

    def batches(self, batch_size: int, limit: int | None = None) -> Iterator[dict[str, np.ndarray]]:
        if batch_size < 1:
            raise InputError(f"batch size must be >= 1, got {batch_size}")
        return self._batches_of(self.files[:limit], batch_size)

    def take(self, indices) -> dict[str, np.ndarray]:
        return next(self._batches_of([self.files[int(i)] for i in indices], len(indices)))

    def label_batches(self, batch_size: int, limit: int | None = None):
        return iter(())


def load_image_folder(folder, specs: list[TensorSpec], rescale: float = 1.0) -> ImageFolderData:
    folder = Path(folder)
    layout = image_layout(folder, specs)
    check_pixels(specs[0], rescale, folder)
    files = sorted(p for p in folder.rglob("*") if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES)
    if not files:
        raise InputError(f"{folder}: holds no images ({', '.join(sorted(IMAGE_SUFFIXES))})")
    return ImageFolderData(folder, files, specs, layout, rescale)
