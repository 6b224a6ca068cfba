"""keras.applications architectures (weights=None) with randomised BN statistics.

The counts are facts of each architecture: ResNet50, MobileNetV2,
EfficientNetB0, InceptionV3 and Xception put every BN right after a bias-free
convolution; DenseNet121 and ResNet50V2 use pre-activation blocks whose BNs
read a Concatenate, an Add or a pooling layer and cannot fold backward.
"""

import collections
import re

import keras
import pytest
from support import bn_count, randomize_bn

import bnfreeze

# name: (BN layers, folded, {producer class of the kept ones: count})
ZOO = {
    "ResNet50": (53, 53, {}),
    "MobileNetV2": (52, 52, {}),
    "EfficientNetB0": (49, 49, {}),
    "InceptionV3": (94, 94, {}),
    "Xception": (40, 40, {}),
    "DenseNet121": (121, 59, {"Concatenate": 58, "AveragePooling2D": 3, "MaxPooling2D": 1}),
    "ResNet50V2": (49, 32, {"Add": 16, "MaxPooling2D": 1}),
}


def _producer_class(reason: str) -> str:
    found = re.search(r"input comes from \S+ \((\w+)\), not a layer bnfreeze folds into", reason)
    assert found, reason
    return found.group(1)


@pytest.mark.slow
@pytest.mark.parametrize("name", list(ZOO))
def test_zoo(name):
    total, folded, kept = ZOO[name]
    keras.utils.set_random_seed(0)
    model = getattr(keras.applications, name)(weights=None, input_shape=(96, 96, 3), classifier_activation=None)
    randomize_bn(model, seed=3)
    assert bn_count(model) == total
    result = bnfreeze.fold(model, atol=1e-4, rtol=1e-4)
    assert len(result.report["folded"]) == folded
    assert collections.Counter(_producer_class(k["reason"]) for k in result.report["kept"]) == kept
    assert bn_count(result.model) == total - folded
    # pre-activation blocks: BN -> ReLU -> Conv, kept for the ReLU
    assert all("relu" in k["reason"] for k in result.report["kept"]), result.report["kept"]
    parity = result.report["parity"]
    assert parity["passed"] and parity["max_rel"] <= 1e-4, parity
