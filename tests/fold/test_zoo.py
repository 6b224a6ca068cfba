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
    # pre-activation blocks: BN -> ReLU -> Conv; with a third of the gammas negative every one of these BNs has a
    # negative channel, which the pre-activation fold cannot take through the ReLU (positive: test below)
    "DenseNet121": (121, 59, {"Concatenate": 58, "AveragePooling2D": 3, "MaxPooling2D": 1}, "scale is negative on channel"),
    "ResNet50V2": (49, 32, {"Add": 16, "MaxPooling2D": 1}, "scale is negative on channel"),
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


# name: (BN layers, pre-activation folds with the shift as an add, with the shift in an earlier bias)
PRE_ACTIVATION = {
    # 16 block BNs and post_bn: after the stem's zero-padded max pooling and after an Add that feeds the next
    # block's identity shortcut too, the shift stays as an add; after the 3 Adds that end a stack (the next
    # block has a conv shortcut) and the last one (read by post_bn alone) it goes into conv*_block*_3_conv's bias
    "ResNet50V2": (49, 13, 4),
    # every Concatenate, pooling and the stem's max pooling is read again (by the next Concatenate) or follows a
    # zero padding: all 62 keep an add
    "DenseNet121": (121, 62, 0),
}


@pytest.mark.slow
@pytest.mark.parametrize("name", list(PRE_ACTIVATION))
def test_pre_activation_zoo_with_positive_scales(name):
    """With positive BN scales every BN of the pre-activation networks folds (with a third of the gammas
    negative they are kept, each saying which channel: test_zoo)."""
    total, added, biased = PRE_ACTIVATION[name]
    keras.utils.set_random_seed(0)
    model = getattr(keras.applications, name)(weights=None, input_shape=(96, 96, 3), classifier_activation=None)
    randomize_bn(model, seed=3, negative=False)
    result = bnfreeze.fold(model, atol=1e-4, rtol=1e-4)
    assert bn_count(result.model) == 0 and not result.report["kept"]
    shifts = collections.Counter(f.get("shift") for f in result.report["folded"] if f["direction"] == "pre-activation")
    assert shifts["add"] == added and shifts["bias"] == biased and sum(shifts.values()) == added + biased
    assert result.report["parity"]["passed"] and result.report["parity"]["max_rel"] <= 1e-4


def _keras_hub_graphs():
    """KerasHub's pre-activation ResNet and its DenseNet, built from architecture arguments (random weights),
    read as the plain Functional graphs they are."""
    keras_hub = pytest.importorskip("keras_hub")
    resnet = keras_hub.models.ResNetBackbone(
        input_conv_filters=[64], input_conv_kernel_sizes=[7], stackwise_num_filters=[64, 32, 48],
        stackwise_num_blocks=[2, 2, 2], stackwise_num_strides=[1, 2, 2], block_type="bottleneck_block",
        use_pre_activation=True, image_shape=(64, 64, 3))
    basic = keras_hub.models.ResNetBackbone(
        input_conv_filters=[64], input_conv_kernel_sizes=[7], stackwise_num_filters=[64, 32],
        stackwise_num_blocks=[2, 2], stackwise_num_strides=[1, 2], block_type="basic_block",
        use_pre_activation=True, image_shape=(64, 64, 3))
    densenet = keras_hub.models.DenseNetBackbone(stackwise_num_repeats=[2, 3, 2], image_shape=(64, 64, 3))
    return {name: keras.Model(b.inputs, b.outputs) for name, b in
            (("resnet_v2_bottleneck", resnet), ("resnet_v2_basic", basic), ("densenet", densenet))}


@pytest.mark.slow
def test_keras_hub_pre_activation_backbones_as_plain_graphs():
    """All BNs fold but the last one, whose ReLU is the backbone's output (its scale has no layer to go to)."""
    for name, model in _keras_hub_graphs().items():
        randomize_bn(model, seed=5, negative=False)
        result = bnfreeze.fold(model, atol=1e-4, rtol=1e-4)
        (kept,) = result.report["kept"]
        assert "output is a model output" in kept["reason"], (name, kept)
        assert bn_count(result.model) == 1
        assert result.report["parity"]["passed"] and result.report["parity"]["max_rel"] <= 1e-4, name
        if name == "resnet_v2_bottleneck":
            # the stem's -inf padding and max pooling pass the first block's shift back into conv1_conv (its
            # basic-block twin's first block has an identity shortcut: the pooled tensor is read twice)
            first = next(f for f in result.report["folded"] if f["bn"] == "stack0_block0_pre_activation_bn")
            assert first.get("shift_into") == ["conv1_conv"], first
