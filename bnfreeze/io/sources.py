"""Where calibration and evaluation data come from: array files or image folders.

:func:`open_data` picks the loader by what the path is; both loaders give the
same interface (``size``, ``specs``, ``batches(batch_size, limit)``,
``take(indices)``, ``label_batches``).
"""

from __future__ import annotations

from pathlib import Path

from bnfreeze.errors import InputError
from bnfreeze.io.arrays import load_arrays
from bnfreeze.io.images import load_image_folder
from bnfreeze.io.signature import TensorSpec


def open_data(path, specs: list[TensorSpec], rescale: float | None = None):
    """Calibration or evaluation data: a ``.npy``/``.npz`` file, or a folder of images."""
    path = Path(path)
    if path.is_dir():
        return load_image_folder(path, specs, 1.0 if rescale is None else rescale)
    if rescale is not None:
        raise InputError(f"{path}: --rescale applies to a folder of images only")
    return load_arrays(path, specs)
