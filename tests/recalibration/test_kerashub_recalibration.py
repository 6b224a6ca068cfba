"""recalibrate on KerasHub models (built from architecture arguments, random weights): the BNs inside
KerasHub's own blocks are measured, and the statistics go into the model of KerasHub's classes."""

import json

import numpy as np
import pytest

keras_hub = pytest.importorskip("keras_hub", reason="keras-hub (a test extra) is not installed")

import keras  # noqa: E402
import kerashub_zoo as zoo  # noqa: E402
from support import bnfreeze as cli  # noqa: E402

from bnfreeze.fold.classes import is_batch_norm  # noqa: E402
from bnfreeze.fold.plain import plain_model  # noqa: E402
from bnfreeze.recalibration import recalibrate  # noqa: E402


def _statistics(model) -> list[tuple[np.ndarray, np.ndarray]]:
    """Every BN's moving statistics, in the order the model tracks its layers."""
    return [(layer.moving_mean.numpy(), layer.moving_variance.numpy())
            for layer in model._flatten_layers(include_self=False, recursive=True) if is_batch_norm(layer)]


@pytest.fixture(scope="module")
def efficientnet():
    model = zoo.BACKBONES["efficientnet_v2"](0)  # FusedMBConvBlock and MBConvBlock: their own call
    zoo.randomize_bn(model, seed=5)
    x = np.random.default_rng(0).random((20, *zoo.IMAGE_SHAPES["efficientnet_v2"]), dtype=np.float32)
    return model, x


def test_every_bn_of_a_kerashub_backbone_is_recalibrated_into_its_own_class(efficientnet):
    model, x = efficientnet
    result = recalibrate(model, x, batch_size=8)
    assert type(result.model) is type(model)
    assert result.report["kept"] == []
    assert len(result.changes) == zoo.inventory(model)["bn_count"]
    actions = {n["action"] for n in result.report["structure"]}
    assert {"read as Functional", "traced"} <= actions
    # the same statistics as recalibrating bnfreeze's plain reading of the model (a Functional graph of
    # Keras layers, already exact by the other tests), BN by BN
    plain = recalibrate(plain_model(model).model, x, batch_size=8)
    mine, theirs, before = _statistics(result.model), _statistics(plain.model), _statistics(model)
    assert len(mine) == len(theirs) == len(before)
    for (mean, var), (want_mean, want_var), (old_mean, _) in zip(mine, theirs, before):
        np.testing.assert_array_equal(mean, want_mean)
        np.testing.assert_array_equal(var, want_var)
        assert not np.allclose(mean, old_mean)  # every one moved
    # the weights other than the statistics are the input's
    for got, want in zip(result.model.weights, model.weights):
        if "moving" not in got.path:
            np.testing.assert_array_equal(got.numpy(), want.numpy())


def test_the_command_line_writes_a_kerashub_file_that_keras_hub_loads(efficientnet, tmp_path):
    model, x = efficientnet
    source, data, out = tmp_path / "hub.keras", tmp_path / "x.npy", tmp_path / "hub.recal.keras"
    model.save(source)
    np.save(data, x)
    proc = cli("recalibrate", source, "--calib-data", data, "-o", out, "--report", tmp_path / "report.json")
    assert proc.returncode == 0, proc.stderr
    assert "traced" in proc.stdout and "not recalibrated" not in proc.stdout
    report = json.loads((tmp_path / "report.json").read_text())
    assert len(report["batch_norms"]) == zoo.inventory(model)["bn_count"]
    assert report["structure"]
    loaded = keras.models.load_model(out)
    assert type(loaded) is type(model)
    again = recalibrate(keras.models.load_model(source), x, batch_size=32)
    for (mean, var), (want_mean, want_var) in zip(_statistics(loaded), _statistics(again.model)):
        np.testing.assert_allclose(mean, want_mean, rtol=1e-5, atol=1e-6)
        np.testing.assert_allclose(var, want_var, rtol=1e-5, atol=1e-6)
