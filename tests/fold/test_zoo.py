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
from support import bn_count, noise_floor, randomize_bn

import bnfreeze

# name: (BN layers, folded, {producer class of the kept ones: count}, words in every kept reason)
ZOO = {
    "ResNet50": (53, 53, {}, ""),
    "MobileNetV2": (52, 52, {}, ""),
    "MobileNetV3Small": (34, 34, {}, ""),
    "EfficientNetB0": (49, 49, {}, ""),
    # parity not judged: see CHAOTIC
    "EfficientNetV2B0": (59, 59, {}, ""),
    "InceptionV3": (94, 94, {}, ""),
    "Xception": (40, 40, {}, ""),
    # pre-activation blocks: BN -> ReLU -> Conv
    "DenseNet121": (121, 59, {"Concatenate": 58, "AveragePooling2D": 3, "MaxPooling2D": 1}, "relu"),
    "ResNet50V2": (49, 32, {"Add": 16, "MaxPooling2D": 1}, "relu"),
    # the 'adjust' BNs read a Concatenate and feed two branches
    "NASNetMobile": (192, 188, {"Concatenate": 4}, "feeds both"),
    # no BN at all: the control
    "ConvNeXtTiny": (0, 0, {}, ""),
}


#: With randomised BN statistics this network is chaotic in float32: moving its input
#: by 1e-7 (relative) moves its logits by 4e-4 to 8e-2 (tests/support.py:noise_floor),
#: so no float32 rewrite can be judged at 1e-4. Its fold plan is checked; its parity
#: is measured against the noise floor only.
CHAOTIC = {"EfficientNetV2B0"}

def _producer_class(reason: str) -> str:
    found = re.search(r"input comes from \S+ \((\w+)\), not a layer bnfreeze folds into", reason)
    assert found, reason
    return found.group(1)


@pytest.mark.slow
@pytest.mark.parametrize("name", list(ZOO))
def test_zoo(name):
    total, folded, kept, words = ZOO[name]
    keras.utils.set_random_seed(0)
    model = getattr(keras.applications, name)(weights=None, input_shape=(96, 96, 3), classifier_activation=None)
    randomize_bn(model, seed=3)
    assert bn_count(model) == total
    if name in CHAOTIC:
        result = bnfreeze.fold(model, check=False)
        assert len(result.report["folded"]) == folded and noise_floor(model) > 1e-4
        return
    rtol = 1e-4
    result = bnfreeze.fold(model, atol=1e-4, rtol=rtol)
    assert len(result.report["folded"]) == folded
    assert collections.Counter(_producer_class(k["reason"]) for k in result.report["kept"]) == kept
    assert bn_count(result.model) == total - folded
    assert all(words in k["reason"] for k in result.report["kept"]), result.report["kept"]
    parity = result.report["parity"]
    assert parity["passed"] and parity["max_rel"] <= rtol, parity
