"""Data that looks unscaled for a float model gets a warning naming --rescale (and nothing is rescaled)."""

import warnings

import numpy as np
import pytest

from bnfreeze.errors import DataWarning
from bnfreeze.io.signature import input_specs
from bnfreeze.io.sources import open_data


def _model(first=None):
    import keras

    inputs = keras.Input((4, 4, 2), name="image")
    x = inputs if first is None else first(inputs)
    x = keras.layers.Conv2D(3, 1)(x)
    return keras.Model(inputs, keras.layers.BatchNormalization()(x))


def _warned(path, model, **kwargs) -> list[str]:
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        open_data(path, input_specs(model), model=model, **kwargs)
    return [str(w.message) for w in caught if issubclass(w.category, DataWarning)]


@pytest.fixture()
def raw(tmp_path):
    path = tmp_path / "raw.npy"
    np.save(path, np.random.default_rng(0).integers(0, 256, (6, 4, 4, 2)).astype(np.uint8))
    return path


def test_raw_pixels_for_a_model_that_does_not_rescale_warn_and_name_rescale(raw):
    (message,) = _warned(raw, _model())
    assert message.startswith(f"{raw}: image holds whole numbers 0..")
    assert "does not rescale" in message and "--rescale 1/255" in message


def test_no_warning_where_the_data_or_the_model_is_scaled(raw, tmp_path):
    import keras

    assert _warned(raw, _model(), rescale=1 / 255) == []  # the user said how
    assert _warned(raw, _model(keras.layers.Rescaling(1 / 255))) == []  # the model scales its input itself
    assert _warned(raw, _model(lambda x: x / 255.0)) == []  # an op on the input before its first layer
    inner = _model(keras.layers.Normalization(mean=0.0, variance=1.0))
    outer_in = keras.Input((4, 4, 2), name="image")
    assert _warned(raw, keras.Model(outer_in, inner(outer_in))) == []  # the first layers of a nested model
    scaled = tmp_path / "scaled.npy"
    np.save(scaled, np.random.default_rng(0).uniform(0, 1, (6, 4, 4, 2)).astype(np.float32))
    assert _warned(scaled, _model()) == []
    binary = tmp_path / "binary.npy"
    np.save(binary, np.random.default_rng(0).integers(0, 2, (6, 4, 4, 2)).astype(np.float32))
    assert _warned(binary, _model()) == []  # 0/1 masks are not pixels
    standardised = tmp_path / "std.npy"
    np.save(standardised, np.round(np.random.default_rng(0).normal(0, 3, (6, 4, 4, 2))).astype(np.float32))
    assert _warned(standardised, _model()) == []  # negative values: not raw pixels


def test_the_command_line_prints_one_warning_line(raw, tmp_path):
    from support import bnfreeze

    model = _model()
    model.save(tmp_path / "m.keras")
    proc = bnfreeze("fold", tmp_path / "m.keras", "--data", raw, "-o", tmp_path / "f.keras")
    assert proc.returncode == 0, proc.stderr
    warned = [line for line in proc.stderr.splitlines() if line.startswith("bnfreeze: warning: ")]
    assert len(warned) == 1 and "--rescale 1/255" in warned[0] and str(raw) in warned[0], proc.stderr
    proc = bnfreeze("fold", tmp_path / "m.keras", "--data", raw, "--rescale", "1/255", "-o", tmp_path / "g.keras")
    assert proc.returncode == 0 and "warning" not in proc.stderr, proc.stderr
