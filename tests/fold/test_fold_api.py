"""The fold API: the parity check catches a wrong fold."""

import keras
import numpy as np
import pytest
from keras import layers
from support import randomize_bn

import bnfreeze
from bnfreeze.fold.rules import RULES
from bnfreeze.fold.rules.backward_conv import ConvBackward


class OneChannelWrong(ConvBackward):
    """A deliberately broken rule: forgets the shift of the last channel."""

    def rewrite(self, match, weights):
        update = super().rewrite(match, weights)
        bias = update.weights["bias"].copy()
        bias[-1] -= np.float32(match.site.affine.shift[-1])
        update.weights["bias"] = bias
        return update


def _model():
    a = keras.Input((9, 9, 3))
    x = layers.Conv2D(6, 3, padding="same")(a)
    x = layers.BatchNormalization()(x)
    model = keras.Model(a, layers.ReLU()(x))
    randomize_bn(model)
    return model


def test_a_wrong_fold_for_one_channel_is_caught():
    rules = tuple(OneChannelWrong() if isinstance(r, ConvBackward) else r for r in RULES)
    with pytest.raises(bnfreeze.ParityError) as info:
        bnfreeze.fold(_model(), rules=rules)
    assert info.value.parity is not None and not info.value.parity.passed


def test_result_report_has_the_documented_shape():
    result = bnfreeze.fold(_model())
    assert set(result.report) == {"model", "output", "folded", "kept", "dropped", "structure", "default_call", "parity"}
    parity = result.report["parity"]
    assert parity["samples"] == 28 and parity["passed"] is True
    # one sample, batches at three magnitudes and the default call, each with its own numbers
    runs = [(r["call"], r["batch"], r["inputs"]) for r in parity["runs"]]
    assert runs == [("training=False", 1, "random x1"), ("training=False", 8, "random x1"),
                    ("training=False", 8, "random x10"), ("training=False", 8, "random x100"),
                    ("default call", 3, "random x1")]


def test_model_without_bn_is_copied_unchanged():
    a = keras.Input((4,))
    model = keras.Model(a, layers.Dense(2)(a))
    result = bnfreeze.fold(model)
    assert result.report["folded"] == [] and result.report["kept"] == []
    assert result.model is not model
    np.testing.assert_array_equal(result.model.get_weights()[0], model.get_weights()[0])
