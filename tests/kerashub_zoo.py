"""Small KerasHub models that contain BatchNormalization, built from config.

A zoo for tests and benchmarks of the fold planner on real KerasHub
architectures. Every builder makes a model from documented architecture
arguments (small widths and depths, a small fixed image size), with random
weights seeded through ``keras.utils.set_random_seed``. Nothing is ever
downloaded: ``from_preset`` is never called, so the zoo works offline.

This module must not import bnfreeze: it describes the models the tool is
tested on, independently of the tool.

Public surface
--------------
``BACKBONES``
    Ordered ``name -> build(seed=0) -> keras.Model`` for every KerasHub vision
    backbone class of keras-hub 0.32 whose model contains at least one
    ``keras.layers.BatchNormalization`` (directly or inside KerasHub's own
    layers), with the variants that exercise different block types.
``TASKS``
    Ordered ``name -> build(seed=0) -> keras.Model`` for task models
    (classifiers, a segmenter, two detectors) on small backbones, each with
    its preprocessor and image converter attached.
``CHANNELS_FIRST``
    A few backbones again with ``data_format="channels_first"`` (BN axis 1).
``HEAVY``
    Entries far bigger than the rest (BASNet, ~50M parameters), which quick
    tests may leave out.
``SKIPPED``
    ``name -> reason`` for KerasHub classes or variants this zoo does not
    build.
``NO_BATCHNORM``
    KerasHub vision backbone classes that were checked and hold no
    BatchNormalization, so are out of scope (not skipped for cost).
``IMAGE_SHAPES``
    ``name -> input shape`` without the batch axis: ``(height, width,
    channels)``, or ``(channels, height, width)`` for CHANNELS_FIRST.
``randomize_bn(model, seed=0, positive=False)``
    Sets every BatchNormalization at any depth to statistics far from
    identity.
``inventory(model)``
    Counts BatchNormalization layers and the custom (non-Keras) layer classes
    that hold them.
``random_batch(name, batch_size=2, seed=0)``
    A float32 batch in [0, 1) of the entry's input shape.

Every builder pins ``keras.config.image_data_format()`` to channels_last
while it builds (several KerasHub layers read the global setting) and
restores the caller's setting afterwards. Building is deterministic: the
same seed gives bit-identical weights in any process and in any order.

Run ``python tests/kerashub_zoo.py [NAME ...]`` to build every entry (or the
named ones), run it, save and reload it, and print one line per model.
"""

import collections
import contextlib
import os
import sys
import tempfile
import time
import warnings

import numpy as np

if __name__ == "__main__":
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

import keras  # noqa: E402
import keras_hub  # noqa: E402

IMAGE_SHAPES = {}
BACKBONES = collections.OrderedDict()
TASKS = collections.OrderedDict()
CHANNELS_FIRST = collections.OrderedDict()

# Entries whose size is far above the rest (BASNet's decoder is fixed at
# 8 * projection_filters = 512 channels, and projection_filters must equal
# the ResNet encoder's 64 stem filters): ~50M parameters, ~200 MB saved.
HEAVY = frozenset({"basnet"})


@contextlib.contextmanager
def _image_data_format(data_format):
    """Some KerasHub layers (MobileNet blocks, DeepLabV3) read the global
    ``keras.config.image_data_format()`` in their constructors instead of a
    ``data_format`` argument: pin it while building, and restore the
    caller's setting afterwards."""
    previous = keras.config.image_data_format()
    keras.config.set_image_data_format(data_format)
    try:
        yield
    finally:
        keras.config.set_image_data_format(previous)


def _register(registry, name, image_shape, data_format="channels_last"):
    def decorator(fn):
        def build(seed: int = 0) -> keras.Model:
            with _image_data_format(data_format):
                keras.utils.set_random_seed(seed)
                return fn(seed)

        build.__name__ = f"build_{name}"
        build.__qualname__ = build.__name__
        build.__doc__ = fn.__doc__
        build.data_format = data_format
        if name in IMAGE_SHAPES:
            raise ValueError(f"duplicate zoo entry {name!r}")
        registry[name] = build
        IMAGE_SHAPES[name] = tuple(image_shape)
        return build

    return decorator


def backbone(name, image_shape):
    return _register(BACKBONES, name, image_shape)


def task(name, image_shape):
    return _register(TASKS, name, image_shape)


def channels_first(name, image_shape):
    # Built with an explicit data_format="channels_first" argument while the
    # global setting stays channels_last, as a user with a default
    # keras.json would (XceptionBackbone fails to build when both say
    # channels_first).
    return _register(CHANNELS_FIRST, name, image_shape)


# ---------------------------------------------------------------------------
# Argument dicts (facts from the keras-hub docstrings and *_backbone_test.py,
# shrunk to a few channels).
# ---------------------------------------------------------------------------


def _resnet_kwargs(block_type, pre_activation=False, image_shape=(32, 32, 3)):
    vd = block_type.endswith("_vd")
    return dict(
        # Basic blocks add the stem output to the first stack's output: the
        # stem must have 64 filters too.
        input_conv_filters=[16, 16, 64] if vd else [64],
        input_conv_kernel_sizes=[3, 3, 3] if vd else [7],
        # ResNetBackbone requires 64 filters in the first stack.
        stackwise_num_filters=[64, 32, 48],
        stackwise_num_blocks=[2, 2, 1],
        stackwise_num_strides=[1, 2, 2],
        block_type=block_type,
        use_pre_activation=pre_activation,
        image_shape=image_shape,
    )


def _small_resnet(block_type="basic_block", image_shape=(None, None, 3),
                  stages=3):
    """A ResNet encoder for the DeepLabV3 / BASNet / RetinaNet heads."""
    return keras_hub.models.ResNetBackbone(
        input_conv_filters=[64],
        input_conv_kernel_sizes=[7],
        stackwise_num_filters=[64, 32, 32, 48][:stages],
        stackwise_num_blocks=[2, 1, 1, 1][:stages],
        stackwise_num_strides=[1, 2, 2, 2][:stages],
        block_type=block_type,
        use_pre_activation=False,
        image_shape=image_shape,
    )


def _efficientnet_v1_kwargs():
    # EfficientNet-B0 layout ("v1" blocks, SE 0.25), shrunk.
    return dict(
        stackwise_kernel_sizes=[3, 3, 5, 3],
        stackwise_num_repeats=[1, 2, 1, 1],
        stackwise_input_filters=[16, 8, 16, 24],
        stackwise_output_filters=[8, 16, 24, 32],
        stackwise_expansion_ratios=[1, 6, 6, 6],
        stackwise_strides=[1, 2, 2, 2],
        stackwise_squeeze_and_excite_ratios=[0.25] * 4,
        stackwise_block_types=["v1"] * 4,
        stackwise_force_input_filters=[0] * 4,
        stackwise_nores_option=[False] * 4,
        stackwise_width_coefficients=[1.0] * 4,
        stackwise_depth_coefficients=[1.0] * 4,
        min_depth=None,
        include_stem_padding=True,
        use_depth_divisor_as_min_depth=True,
        cap_round_filter_decrease=True,
        stem_conv_padding="valid",
        batch_norm_momentum=0.9,
        batch_norm_epsilon=1e-5,
        dropout=0,
        input_shape=(32, 32, 3),
    )


def _efficientnet_v2_kwargs(block_types=("fused", "fused", "unfused",
                                         "unfused")):
    # EfficientNetV2 layout (FusedMBConv then MBConv with SE), shrunk.
    return dict(
        stackwise_kernel_sizes=[3, 3, 3, 3],
        stackwise_num_repeats=[2, 2, 2, 1],
        stackwise_input_filters=[8, 8, 16, 24],
        stackwise_output_filters=[8, 16, 24, 32],
        stackwise_expansion_ratios=[1, 4, 4, 6],
        stackwise_squeeze_and_excite_ratios=[0.0, 0.0, 0.25, 0.25],
        stackwise_strides=[1, 2, 2, 2],
        stackwise_block_types=list(block_types),
        stackwise_force_input_filters=[0] * 4,
        stackwise_nores_option=[False] * 4,
        stackwise_width_coefficients=[1.0] * 4,
        stackwise_depth_coefficients=[1.0] * 4,
        dropout=0,
        input_shape=(32, 32, 3),
    )


def _hgnetv2_kwargs(light, affine, image_shape=(64, 64, 3),
                    out_features=None):
    return dict(
        depths=[1, 2],
        embedding_size=16,
        hidden_sizes=[32, 48],
        stem_channels=[3, 8, 16],
        hidden_act="relu",
        use_learnable_affine_block=affine,
        # (in, mid, out, num_blocks, num_layers, kernel_size)
        stackwise_stage_filters=[
            [16, 8, 32, 1, 2, 3],
            [32, 16, 48, 2, 2, 5 if light else 3],
        ],
        apply_downsample=[False, True],
        use_lightweight_conv_block=[False, light],
        image_shape=image_shape,
        out_features=out_features,
    )


def _mobilenet_kwargs(image_shape=(32, 32, 3)):
    # MobileNetV3-style, from mobilenet_backbone_test.py, shrunk.
    return dict(
        stackwise_expansion=[[16, 24], [32, 48], [48]],
        stackwise_num_blocks=[2, 2, 1],
        stackwise_num_filters=[[8, 8], [16, 16], [24]],
        stackwise_kernel_size=[[3, 3], [5, 5], [5]],
        stackwise_num_strides=[[2, 1], [2, 1], [1]],
        stackwise_se_ratio=[[None, None], [0.25, 0.25], [0.25]],
        stackwise_activation=[
            ["relu", "relu"],
            ["hard_swish", "hard_swish"],
            ["hard_swish"],
        ],
        stackwise_padding=[[1, 1], [2, 2], [2]],
        output_num_filters=64,
        input_activation="hard_swish",
        output_activation="hard_swish",
        input_num_filters=16,
        image_shape=image_shape,
        depthwise_filters=8,
        depthwise_stride=2,
        depthwise_residual=False,
        squeeze_and_excite=0.5,
        last_layer_filter=48,
    )


def _mobilenetv5_kwargs(image_shape=(64, 64, 3)):
    # MobileNetV5 (Gemma3n's vision tower) with norm_layer="batch_norm": the
    # default "rms_norm" holds no BatchNormalization. Block types "er", "uir"
    # and "mqa" (from mobilenetv5_backbone_test.py and the builder). Not
    # used, because they fail to build from config in keras-hub 0.32: "ir"
    # (MobileNet's InvertedResidualBlock gets name=None) and any se_ratio > 0
    # on "uir" (the builder's SE lambda does not accept `filters=`).
    return dict(
        stackwise_block_types=[["er"], ["uir", "uir"], ["uir", "mqa"]],
        stackwise_num_blocks=[1, 2, 2],
        stackwise_num_filters=[[16], [24, 24], [32, 32]],
        stackwise_strides=[[2], [2, 1], [2, 1]],
        stackwise_act_layers=[["relu"], ["gelu", "relu"], ["gelu", "gelu"]],
        stackwise_exp_ratios=[[4.0], [4.0, 4.0], [4.0, 0.0]],
        stackwise_se_ratios=[[0.0], [0.0, 0.0], [0.0, 0.0]],
        stackwise_dw_kernel_sizes=[[0], [5, 3], [3, 0]],
        stackwise_dw_start_kernel_sizes=[[0], [3, 0], [5, 0]],
        stackwise_dw_end_kernel_sizes=[[0], [0, 3], [0, 0]],
        stackwise_exp_kernel_sizes=[[3], [0, 0], [0, 0]],
        stackwise_pw_kernel_sizes=[[1], [0, 0], [0, 0]],
        stackwise_num_heads=[[0], [0, 0], [0, 2]],
        stackwise_key_dims=[[0], [0, 0], [0, 8]],
        stackwise_value_dims=[[0], [0, 0], [0, 8]],
        stackwise_kv_strides=[[0], [0, 0], [0, 2]],
        stackwise_use_cpe=[[False], [False, False], [False, False]],
        stem_size=16,
        num_features=32,
        use_msfa=True,
        msfa_indices=(-2, -1),
        msfa_output_resolution=4,
        norm_layer="batch_norm",
        image_shape=image_shape,
    )


# ---------------------------------------------------------------------------
# Backbones
# ---------------------------------------------------------------------------


@backbone("resnet_v1_basic", (32, 32, 3))
def _(seed):
    """ResNet18-style basic blocks, post-activation (v1)."""
    return keras_hub.models.ResNetBackbone(**_resnet_kwargs("basic_block"))


@backbone("resnet_v1_bottleneck", (32, 32, 3))
def _(seed):
    """ResNet50-style bottleneck blocks, post-activation (v1)."""
    return keras_hub.models.ResNetBackbone(
        **_resnet_kwargs("bottleneck_block")
    )


@backbone("resnet_v2_basic", (32, 32, 3))
def _(seed):
    """Pre-activation (v2) basic blocks: BN before the conv, not after."""
    return keras_hub.models.ResNetBackbone(
        **_resnet_kwargs("basic_block", pre_activation=True)
    )


@backbone("resnet_v2_bottleneck", (32, 32, 3))
def _(seed):
    """Pre-activation (v2) bottleneck blocks."""
    return keras_hub.models.ResNetBackbone(
        **_resnet_kwargs("bottleneck_block", pre_activation=True)
    )


@backbone("resnet_vd_basic", (32, 32, 3))
def _(seed):
    """ResNet-vd: 3-conv stem, average-pool shortcut, basic blocks."""
    return keras_hub.models.ResNetBackbone(**_resnet_kwargs("basic_block_vd"))


@backbone("resnet_vd_bottleneck", (32, 32, 3))
def _(seed):
    """ResNet-vd with bottleneck blocks."""
    return keras_hub.models.ResNetBackbone(
        **_resnet_kwargs("bottleneck_block_vd")
    )


@backbone("efficientnet_v1", (32, 32, 3))
def _(seed):
    """EfficientNet(V1) "v1" blocks (functional MBConv with SE)."""
    return keras_hub.models.EfficientNetBackbone(**_efficientnet_v1_kwargs())


@backbone("efficientnet_v2", (32, 32, 3))
def _(seed):
    """EfficientNetV2: FusedMBConvBlock then MBConvBlock (with SE)."""
    return keras_hub.models.EfficientNetBackbone(**_efficientnet_v2_kwargs())


@backbone("efficientnet_v2_cba", (32, 32, 3))
def _(seed):
    """EfficientNetV2 rw_t layout: CBABlock, FusedMBConvBlock, MBConvBlock."""
    return keras_hub.models.EfficientNetBackbone(
        **_efficientnet_v2_kwargs(("cba", "fused", "unfused", "unfused"))
    )


@backbone("efficientnet_edge", (32, 32, 3))
def _(seed):
    """EfficientNet-EdgeTPU layout: fused stem stack without residual,
    forced input filters, no SE, relu. (The nores flag is not serialized by
    get_config, but here, as in the EdgeTPU presets, the forced input
    filters already rule the residual out, so reloading is exact.)"""
    kwargs = _efficientnet_v2_kwargs()
    kwargs.update(
        stackwise_kernel_sizes=[3, 3, 5, 5],
        stackwise_expansion_ratios=[4, 8, 8, 8],
        stackwise_squeeze_and_excite_ratios=[0] * 4,
        stackwise_force_input_filters=[16, 0, 0, 0],
        stackwise_nores_option=[True, False, False, False],
        activation="relu",
    )
    return keras_hub.models.EfficientNetBackbone(**kwargs)


@backbone("hgnetv2", (64, 64, 3))
def _(seed):
    """HGNetV2 with plain conv blocks and no learnable affine blocks."""
    return keras_hub.models.HGNetV2Backbone(
        **_hgnetv2_kwargs(light=False, affine=False)
    )


@backbone("hgnetv2_light_lab", (64, 64, 3))
def _(seed):
    """HGNetV2 with lightweight blocks and learnable affine blocks."""
    return keras_hub.models.HGNetV2Backbone(
        **_hgnetv2_kwargs(light=True, affine=True)
    )


@backbone("hgnetv2_light", (64, 64, 3))
def _(seed):
    """HGNetV2 with lightweight blocks, no learnable affine blocks."""
    return keras_hub.models.HGNetV2Backbone(
        **_hgnetv2_kwargs(light=True, affine=False)
    )


@backbone("hgnetv2_lab", (64, 64, 3))
def _(seed):
    """HGNetV2 with learnable affine blocks (a scalar scale and bias after
    each conv-BN-activation; they initialise to identity), plain blocks."""
    return keras_hub.models.HGNetV2Backbone(
        **_hgnetv2_kwargs(light=False, affine=True)
    )


@backbone("densenet", (32, 32, 3))
def _(seed):
    """DenseNet (pre-activation BN-ReLU-Conv, concatenations)."""
    return keras_hub.models.DenseNetBackbone(
        stackwise_num_repeats=[2, 2, 2, 2],
        compression_ratio=0.5,
        growth_rate=4,
        image_shape=(32, 32, 3),
    )


def _cspnet(**kwargs):
    base = dict(
        stem_filters=16,
        stem_kernel_size=3,
        stem_strides=1,
        stackwise_strides=2,
        stackwise_depth=[1, 2, 1],
        stackwise_num_filters=[16, 24, 32],
        image_shape=(32, 32, 3),
        stem_padding="same",
    )
    base.update(kwargs)
    return keras_hub.models.CSPNetBackbone(**base)


def _cspdarknet():
    # cspdarknet53 layout (convert_cspnet.py), shrunk.
    return _cspnet(
        stage_type="csp",
        block_type="dark_block",
        down_growth=True,
        bottle_ratio=(0.5,) + (1.0,),
        block_ratio=(1.0,) + (0.5,),
        expand_ratio=(2.0,) + (1.0,),
    )


@backbone("cspnet_csp_dark", (32, 32, 3))
def _(seed):
    """CSPDarkNet53 layout: cross stages of dark blocks, leaky relu."""
    return _cspdarknet()


def _cspresnet(**extra):
    # cspresnet50 layout (convert_cspnet.py), shrunk.
    kwargs = dict(
        stem_kernel_size=7,
        stem_strides=4,
        stem_padding="valid",
        stem_pooling="max",
        stackwise_strides=[1, 2, 2],
        stackwise_num_filters=[32, 48, 64],
        stage_type="csp",
        block_type="bottleneck_block",
        bottle_ratio=[0.5],
        block_ratio=[1.0],
        expand_ratio=[2.0],
        cross_linear=True,
        image_shape=(64, 64, 3),
    )
    kwargs.update(extra)
    return _cspnet(**kwargs)


@backbone("cspnet_csp_resnet", (64, 64, 3))
def _(seed):
    """CSPResNet50 layout: 7x7 stride-4 stem with max pooling over -inf
    padding, cross stages of bottleneck blocks, linear cross expansion."""
    return _cspresnet()


@backbone("cspnet_csp_resnext_grouped", (64, 64, 3))
def _(seed):
    """CSPResNeXt50 layout: bottleneck blocks with grouped 3x3 convs."""
    return _cspnet(
        stem_kernel_size=7,
        stem_strides=4,
        stem_padding="valid",
        stem_pooling="max",
        stackwise_strides=[1, 2, 2],
        stackwise_num_filters=[32, 64, 64],
        stage_type="csp",
        block_type="bottleneck_block",
        bottle_ratio=[1.0],
        block_ratio=[0.5],
        expand_ratio=[1.0],
        groups=4,
        cross_linear=True,
        image_shape=(64, 64, 3),
    )


@backbone("cspnet_darknet", (32, 32, 3))
def _(seed):
    """DarkNet53 layout: plain dark stages of dark blocks."""
    return _cspnet(
        stage_type="dark",
        block_type="dark_block",
        bottle_ratio=[0.5],
        block_ratio=[1.0],
        expand_ratio=[1.0],
    )


@backbone("cspnet_cs3_edge", (32, 32, 3))
def _(seed):
    """CS3 stages (one transition conv) of edge blocks, two-conv stem."""
    return _cspnet(
        stem_filters=[8, 16],
        stem_strides=2,
        stage_type="cs3",
        block_type="edge_block",
        bottle_ratio=[0.5],
        block_ratio=[1.0],
        expand_ratio=[2.0],
        activation="silu",
    )


@backbone("cspnet_cs3_bottleneck_avgdown", (32, 32, 3))
def _(seed):
    """CS3 stages of bottleneck blocks with average-pool downsampling."""
    return _cspnet(
        stage_type="cs3",
        block_type="bottleneck_block",
        bottle_ratio=[0.5],
        block_ratio=[1.0],
        expand_ratio=[2.0],
        avg_down=True,
    )


@backbone("mobilenet_v3", (32, 32, 3))
def _(seed):
    """MobileNetV3-style: depthwise block, inverted residuals with SE and
    hard-swish, ConvBnAct head."""
    return keras_hub.models.MobileNetBackbone(**_mobilenet_kwargs())


@backbone("mobilenet_v2_style", (32, 32, 3))
def _(seed):
    """MobileNetBackbone without squeeze-and-excite, relu6 throughout."""
    kwargs = _mobilenet_kwargs()
    kwargs.update(
        stackwise_se_ratio=[[None, None], [None, None], [None]],
        stackwise_activation=[["relu6", "relu6"], ["relu6", "relu6"],
                              ["relu6"]],
        input_activation="relu6",
        output_activation="relu6",
        squeeze_and_excite=None,
    )
    return keras_hub.models.MobileNetBackbone(**kwargs)


@backbone("mobilenetv5_bn", (64, 64, 3))
def _(seed):
    """MobileNetV5 with norm_layer="batch_norm": EdgeResidual, Universal
    Inverted Residual, MobileAttention (multi-query, pre-norm BN and BNs
    after the strided key/value depthwise convs) and the multi-scale fusion
    adapter."""
    return keras_hub.models.MobileNetV5Backbone(**_mobilenetv5_kwargs())


@backbone("xception", (64, 64, 3))
def _(seed):
    """Xception: separable convolutions, BN, residual 1x1 shortcuts."""
    return keras_hub.models.XceptionBackbone(
        stackwise_conv_filters=[[8, 16], [24, 24], [32, 32]],
        stackwise_pooling=[False, True, False],
        image_shape=(64, 64, 3),
    )


@backbone("deeplabv3_plus", (64, 64, 3))
def _(seed):
    """DeepLabV3+ on a small ResNet: SpatialPyramidPooling (BNs inside a
    custom layer) plus the low-level projection BN."""
    return keras_hub.models.DeepLabV3Backbone(
        image_encoder=_small_resnet(),
        low_level_feature_key="P2",
        spatial_pyramid_pooling_key="P4",
        dilation_rates=[2, 4, 6],
        upsampling_size=4,
        projection_filters=8,
        image_shape=(64, 64, 3),
    )


@backbone("deeplabv3", (64, 64, 3))
def _(seed):
    """DeepLabV3 (no low-level decoder branch) on a small ResNet."""
    return keras_hub.models.DeepLabV3Backbone(
        image_encoder=_small_resnet(),
        spatial_pyramid_pooling_key="P4",
        dilation_rates=[2, 4],
        upsampling_size=16,
        image_shape=(64, 64, 3),
    )


@backbone("basnet", (32, 32, 3))
def _(seed):
    """BASNet on a ResNet18-style encoder (4 stages, as it requires)."""
    return keras_hub.models.BASNetBackbone(
        image_encoder=_small_resnet(stages=4),
        num_classes=1,
        # The projection feeds the encoder's first stack: 64 like it.
        projection_filters=64,
        image_shape=(32, 32, 3),
    )


def _retinanet_backbone():
    return keras_hub.models.RetinaNetBackbone(
        image_encoder=_small_resnet("bottleneck_block", stages=4),
        min_level=3,
        max_level=5,
        use_p5=False,
        use_fpn_batch_norm=True,
        image_shape=(64, 64, 3),
    )


@backbone("retinanet_fpn_bn", (64, 64, 3))
def _(seed):
    """RetinaNet backbone: ResNet encoder plus FeaturePyramid (a custom
    layer) with use_fpn_batch_norm=True."""
    return _retinanet_backbone()


@backbone("segformer", (32, 32, 3))
def _(seed):
    """SegFormer: MiT encoder (no BN) plus an all-MLP head whose fusion
    conv is followed by a BN (inside a nested Sequential)."""
    encoder = keras_hub.models.MiTBackbone(
        layerwise_depths=[1, 1],
        image_shape=(32, 32, 3),
        hidden_dims=[8, 16],
        num_layers=2,
        layerwise_num_heads=[1, 2],
        layerwise_sr_ratios=[4, 2],
        max_drop_path_rate=0.0,
        layerwise_patch_sizes=[7, 3],
        layerwise_strides=[4, 2],
    )
    return keras_hub.models.SegFormerBackbone(
        image_encoder=encoder, projection_filters=16
    )


def _dfine_hgnetv2():
    return keras_hub.models.HGNetV2Backbone(
        stem_channels=[3, 8, 8],
        stackwise_stage_filters=[
            [8, 8, 16, 1, 2, 3],
            [16, 8, 32, 1, 2, 3],
            [32, 16, 48, 1, 2, 5],
            [48, 16, 64, 1, 2, 5],
        ],
        apply_downsample=[False, True, True, True],
        use_lightweight_conv_block=[False, False, True, True],
        depths=[1, 1, 1, 1],
        hidden_sizes=[16, 32, 48, 64],
        embedding_size=8,
        use_learnable_affine_block=True,
        hidden_act="relu",
        image_shape=(None, None, 3),
        out_features=["stage3", "stage4"],
        data_format="channels_last",
    )


def _dfine_backbone(seed):
    return keras_hub.models.DFineBackbone(
        backbone=_dfine_hgnetv2(),
        decoder_in_channels=[16, 16],
        encoder_hidden_dim=16,
        num_denoising=0,
        num_labels=4,
        hidden_dim=16,
        learn_initial_query=False,
        num_queries=10,
        anchor_image_size=(64, 64),
        feat_strides=[16, 32],
        num_feature_levels=2,
        encoder_in_channels=[48, 64],
        encode_proj_layers=[1],
        num_attention_heads=2,
        encoder_ffn_dim=32,
        num_encoder_layers=1,
        hidden_expansion=0.5,
        depth_multiplier=0.5,
        eval_idx=-1,
        num_decoder_layers=2,
        decoder_attention_heads=2,
        decoder_ffn_dim=32,
        decoder_n_points=[2, 2],
        lqe_hidden_dim=8,
        num_lqe_layers=2,
        out_features=["stage3", "stage4"],
        image_shape=(64, 64, 3),
        data_format="channels_last",
        seed=seed,
    )


@backbone("dfine", (64, 64, 3))
def _(seed):
    """D-FINE detector backbone: HGNetV2 encoder, hybrid encoder
    (CSPRepLayer / RepVGG blocks with BN), deformable decoder."""
    return _dfine_backbone(seed)


# ---------------------------------------------------------------------------
# Tasks (with preprocessor + image converter; no downloads)
# ---------------------------------------------------------------------------


def _classifier(prefix, backbone_model, image_size, num_classes=5, **extra):
    converter_cls = getattr(keras_hub.layers, f"{prefix}ImageConverter")
    preprocessor_cls = getattr(
        keras_hub.models, f"{prefix}ImageClassifierPreprocessor"
    )
    classifier_cls = getattr(keras_hub.models, f"{prefix}ImageClassifier")
    converter = converter_cls(image_size=image_size, scale=1.0 / 255.0)
    preprocessor = preprocessor_cls(image_converter=converter)
    return classifier_cls(
        backbone=backbone_model,
        num_classes=num_classes,
        preprocessor=preprocessor,
        **extra,
    )


@task("resnet_classifier", (32, 32, 3))
def _(seed):
    """ResNetImageClassifier on a v2 bottleneck ResNet."""
    return _classifier(
        "ResNet",
        keras_hub.models.ResNetBackbone(
            **_resnet_kwargs("bottleneck_block", pre_activation=True)
        ),
        (32, 32),
    )


@task("efficientnet_classifier", (32, 32, 3))
def _(seed):
    """EfficientNetImageClassifier on an EfficientNetV2 layout."""
    return _classifier(
        "EfficientNet",
        keras_hub.models.EfficientNetBackbone(**_efficientnet_v2_kwargs()),
        (32, 32),
    )


@task("hgnetv2_classifier", (64, 64, 3))
def _(seed):
    """HGNetV2ImageClassifier: its head adds one more BN, inside a 1x1
    HGNetV2ConvLayer ("head_last") before pooling and the Dense."""
    return _classifier(
        "HGNetV2",
        keras_hub.models.HGNetV2Backbone(
            **_hgnetv2_kwargs(light=True, affine=True)
        ),
        (64, 64),
    )


@task("densenet_classifier", (32, 32, 3))
def _(seed):
    """DenseNetImageClassifier."""
    return _classifier(
        "DenseNet",
        keras_hub.models.DenseNetBackbone(
            stackwise_num_repeats=[2, 2, 2, 2],
            growth_rate=4,
            image_shape=(32, 32, 3),
        ),
        (32, 32),
    )


@task("mobilenet_classifier", (32, 32, 3))
def _(seed):
    """MobileNetImageClassifier (MobileNetV3-style backbone)."""
    return _classifier(
        "MobileNet",
        keras_hub.models.MobileNetBackbone(**_mobilenet_kwargs()),
        (32, 32),
    )


@task("cspnet_classifier", (32, 32, 3))
def _(seed):
    """CSPNetImageClassifier on CSPDarkNet."""
    return _classifier("CSPNet", _cspdarknet(), (32, 32))


@task("xception_classifier", (64, 64, 3))
def _(seed):
    """XceptionImageClassifier."""
    return _classifier(
        "Xception",
        keras_hub.models.XceptionBackbone(
            stackwise_conv_filters=[[8, 16], [24, 24], [32, 32]],
            stackwise_pooling=[False, True, False],
            image_shape=(64, 64, 3),
        ),
        (64, 64),
    )


@task("mobilenetv5_classifier", (64, 64, 3))
def _(seed):
    """MobileNetV5ImageClassifier on a batch_norm MobileNetV5."""
    return _classifier(
        "MobileNetV5",
        keras_hub.models.MobileNetV5Backbone(**_mobilenetv5_kwargs()),
        (64, 64),
    )


@task("deeplabv3_segmenter", (64, 64, 3))
def _(seed):
    """DeepLabV3ImageSegmenter with its preprocessor."""
    bb = keras_hub.models.DeepLabV3Backbone(
        image_encoder=_small_resnet(),
        low_level_feature_key="P2",
        spatial_pyramid_pooling_key="P4",
        dilation_rates=[2, 4, 6],
        upsampling_size=4,
        projection_filters=8,
        image_shape=(64, 64, 3),
    )
    converter = keras_hub.layers.DeepLabV3ImageConverter(
        image_size=(64, 64), scale=1.0 / 255.0
    )
    preprocessor = keras_hub.models.DeepLabV3ImageSegmenterPreprocessor(
        image_converter=converter
    )
    return keras_hub.models.DeepLabV3ImageSegmenter(
        backbone=bb, num_classes=3, preprocessor=preprocessor
    )


@task("retinanet_detector", (64, 64, 3))
def _(seed):
    """RetinaNetObjectDetector (FPN with BN; heads use GroupNormalization)."""
    converter = keras_hub.layers.RetinaNetImageConverter(
        image_size=(64, 64), scale=1.0 / 255.0
    )
    preprocessor = keras_hub.models.RetinaNetObjectDetectorPreprocessor(
        image_converter=converter
    )
    return keras_hub.models.RetinaNetObjectDetector(
        backbone=_retinanet_backbone(),
        num_classes=3,
        pre_logits_num_conv_layers=1,
        preprocessor=preprocessor,
    )


@task("dfine_detector", (64, 64, 3))
def _(seed):
    """DFineObjectDetector on the small D-FINE backbone."""
    converter = keras_hub.layers.DFineImageConverter(
        image_size=(64, 64), scale=1.0 / 255.0
    )
    preprocessor = keras_hub.models.DFineObjectDetectorPreprocessor(
        image_converter=converter
    )
    return keras_hub.models.DFineObjectDetector(
        backbone=_dfine_backbone(seed),
        num_classes=4,
        preprocessor=preprocessor,
    )


# ---------------------------------------------------------------------------
# channels_first variants (BN axis=1) of the backbones that take a
# `data_format` argument and survive save + load_model in a process whose
# global image_data_format is the default channels_last (see SKIPPED for the
# ones that do not). Their IMAGE_SHAPES are (channels, height, width). With
# the same weights they match their channels_last twins exactly on the TF
# CPU backend (checked: max abs diff 0.0).
# ---------------------------------------------------------------------------


@channels_first("hgnetv2_light_lab_cf", (3, 64, 64))
def _(seed):
    """hgnetv2_light_lab with data_format="channels_first"."""
    return keras_hub.models.HGNetV2Backbone(
        data_format="channels_first",
        **_hgnetv2_kwargs(light=True, affine=True, image_shape=(3, 64, 64)),
    )


@channels_first("cspnet_csp_resnet_cf", (3, 64, 64))
def _(seed):
    """cspnet_csp_resnet with data_format="channels_first"."""
    return _cspresnet(data_format="channels_first", image_shape=(3, 64, 64))


@channels_first("mobilenetv5_bn_cf", (3, 64, 64))
def _(seed):
    """mobilenetv5_bn with data_format="channels_first"."""
    return keras_hub.models.MobileNetV5Backbone(
        data_format="channels_first",
        **_mobilenetv5_kwargs(image_shape=(3, 64, 64)),
    )


# ---------------------------------------------------------------------------
# Not built
# ---------------------------------------------------------------------------

SKIPPED = collections.OrderedDict(
    [
        (
            "gemma3n",
            "Gemma3nBackbone is a multimodal LM (text decoder + audio "
            "encoder + vision tower), not an image backbone; its vision "
            "tower is MobileNetV5Backbone (covered by mobilenetv5_bn) and "
            "uses rms_norm, so holds no BN unless configured otherwise",
        ),
        (
            "mobilenetv5_ir_se",
            "MobileNetV5Backbone 'ir' blocks fail to build in keras-hub 0.32 "
            "(MobileNet InvertedResidualBlock gets name=None: ValueError), "
            "as does se_ratio > 0 on 'uir' (the builder's SE lambda rejects "
            "filters=: TypeError); the BN-holding CondConvResidual needs "
            "num_experts, which the backbone arguments cannot set",
        ),
        (
            "efficientnet_nores_num_features",
            "EfficientNetBackbone.get_config omits stackwise_nores_option, "
            "num_features and data_format: num_features != 1280 fails "
            "load_model (top_conv shape mismatch) and a nores=True stack "
            "whose blocks would add a residual silently reloads with the "
            "add (max abs diff 6.4 after randomize_bn)",
        ),
        (
            "efficientnet_channels_first",
            "EfficientNetBackbone(data_format='channels_first') fails to "
            "build (incompatible shapes in block1a_): the stem padding and "
            "stem/top BNs ignore data_format, top_conv is hard-wired "
            "channels_last, and the MBConv/FusedMBConv/CBA modules hard-code "
            "BN_AXIS = 3",
        ),
        (
            "resnet_channels_first",
            "ResNetBackbone(data_format='channels_first') builds and runs, "
            "but get_config omits data_format: load_model in a "
            "channels_last process fails (conv1_conv kernel shape "
            "mismatch); it loads only with a channels_first global setting",
        ),
        (
            "xception_channels_first",
            "XceptionBackbone(data_format='channels_first') runs, but "
            "get_config omits data_format: load_model in a channels_last "
            "process fails (negative output size), and building it with a "
            "channels_first global setting fails too",
        ),
        (
            "densenet_channels_first",
            "DenseNetBackbone takes no data_format argument (it follows "
            "the global keras.config.image_data_format())",
        ),
    ]
)

NO_BATCHNORM = (
    # Vision (or vision-bearing) backbones exported by keras-hub 0.32 whose
    # source (and that of the layers they use) holds no BatchNormalization:
    # out of scope for a BN fold. VGG here means VGGBackbone has no BN
    # variant at all.
    "VGGBackbone",
    "ViTBackbone",
    "DeiTBackbone",
    "DINOV2Backbone",
    "DINOV3Backbone",
    "MiTBackbone",
    "SwinTransformerBackbone",
    "ViTDetBackbone",
    "SAMBackbone",
    "SAM3PromptableConceptBackbone",
    "DepthAnythingBackbone",
    "CLIPBackbone",
    "SigLIPBackbone",
    "MetaCLIP2Backbone",
    "PARSeqBackbone",
    "VideoPrismBackbone",
    "PaliGemmaBackbone",
    "BLIP2Backbone",
)


# ---------------------------------------------------------------------------
# BatchNormalization helpers
# ---------------------------------------------------------------------------


def _batchnorms(model):
    """Every BatchNormalization under ``model`` once, in traversal order."""
    seen = set()
    found = []
    for layer in model._flatten_layers(include_self=False, recursive=True):
        if isinstance(layer, keras.layers.BatchNormalization):
            if id(layer) not in seen:
                seen.add(id(layer))
                found.append(layer)
    return found


def randomize_bn(model, seed=0, positive=False):
    """Set every BatchNormalization of ``model`` far from identity.

    gamma ~ U(0.5, 1.5), negated on ~20% of channels unless ``positive``;
    beta and moving_mean ~ N(0, 0.5); moving_variance ~ U(0.2, 2).
    Variables a layer lacks (``scale=False`` / ``center=False``) are skipped.
    Seeded: the same model built the same way gets the same statistics.
    Returns the number of BatchNormalization layers set.
    """
    rng = np.random.default_rng(seed)
    layers = _batchnorms(model)
    for layer in layers:
        if not layer.built:
            raise ValueError(
                f"BatchNormalization {layer.name!r} is not built; call the "
                "model once before randomize_bn"
            )
        shape = tuple(layer.moving_mean.shape)
        if layer.gamma is not None:
            gamma = rng.uniform(0.5, 1.5, size=shape)
            if not positive:
                gamma = np.where(rng.random(size=shape) < 0.2, -gamma, gamma)
            layer.gamma.assign(gamma.astype(layer.gamma.dtype))
        if layer.beta is not None:
            layer.beta.assign(
                rng.normal(0.0, 0.5, size=shape).astype(layer.beta.dtype)
            )
        layer.moving_mean.assign(
            rng.normal(0.0, 0.5, size=shape).astype(layer.moving_mean.dtype)
        )
        layer.moving_variance.assign(
            rng.uniform(0.2, 2.0, size=shape).astype(
                layer.moving_variance.dtype
            )
        )
    return len(layers)


def _is_keras_class(cls):
    module = getattr(cls, "__module__", "") or ""
    return module == "keras" or module.startswith("keras.")


def _has_own_call(layer):
    """True when ``layer``'s class is not Keras's own and its ``call`` comes
    from a non-Keras class (a Functional/Sequential subclass such as a
    KerasHub Backbone keeps Keras's ``call`` and is not counted)."""
    cls = type(layer)
    if _is_keras_class(cls):
        return False
    for klass in cls.__mro__:
        if "call" in vars(klass):
            return not _is_keras_class(klass)
    return False


def inventory(model):
    """Describe where the BatchNormalization layers of ``model`` live.

    Returns a dict:
      ``bn_count``: number of distinct BatchNormalization layers;
      ``custom_classes``: ``{class name: number of instances}`` of layers
        that have their own ``call`` (not Keras's classes) and hold at least
        one BatchNormalization at any depth;
      ``bn_in_custom``: how many BatchNormalization layers sit inside such a
        layer (invisible to a walk of the Functional graph alone);
      ``nested_models``: ``{class name: count}`` of nested keras.Model
        instances holding BatchNormalization.
    """
    bns = _batchnorms(model)
    bn_ids = {id(b) for b in bns}
    custom = collections.Counter()  # by class object
    nested = collections.Counter()
    hidden = set()
    seen = set()
    for layer in model._flatten_layers(include_self=False, recursive=True):
        if id(layer) in seen or id(layer) in bn_ids:
            continue
        seen.add(id(layer))
        inner = [
            b
            for b in layer._flatten_layers(include_self=False, recursive=True)
            if id(b) in bn_ids
        ]
        if not inner:
            continue
        if _has_own_call(layer):
            custom[type(layer)] += 1
            hidden.update(id(b) for b in inner)
        if isinstance(layer, keras.Model):
            nested[type(layer).__name__] += 1
    return {
        "bn_count": len(bns),
        "custom_classes": _by_class_name(custom),
        "bn_in_custom": len(hidden),
        "nested_models": dict(sorted(nested.items())),
    }


def _by_class_name(counts):
    """``{class: n}`` as ``{name: n}``, module-qualified where two distinct
    classes share a name."""
    names = collections.Counter(cls.__name__ for cls in counts)
    out = {}
    for cls, n in counts.items():
        key = cls.__name__
        if names[key] > 1:
            key = f"{cls.__module__}.{cls.__qualname__}"
        out[key] = n
    return dict(sorted(out.items()))


def random_batch(name, batch_size=2, seed=0):
    """A float32 batch in [0, 1) of shape ``(batch_size,) +
    IMAGE_SHAPES[name]`` (channels_last except for CHANNELS_FIRST)."""
    shape = IMAGE_SHAPES[name]
    rng = np.random.default_rng(seed)
    return rng.random((batch_size,) + shape, dtype=np.float32)


# ---------------------------------------------------------------------------
# Self-check
# ---------------------------------------------------------------------------


def _flat_outputs(outputs):
    """Outputs as a sorted list of (key, array)."""
    if isinstance(outputs, dict):
        return [
            (k, keras.ops.convert_to_numpy(v))
            for k, v in sorted(outputs.items())
        ]
    if isinstance(outputs, (list, tuple)):
        return [
            (str(i), keras.ops.convert_to_numpy(v))
            for i, v in enumerate(outputs)
        ]
    return [("", keras.ops.convert_to_numpy(outputs))]


def _max_abs_diff(a, b):
    fa, fb = _flat_outputs(a), _flat_outputs(b)
    if [k for k, _ in fa] != [k for k, _ in fb]:
        return float("inf")
    diffs = []
    for (_, x), (_, y) in zip(fa, fb):
        if x.shape != y.shape:
            return float("inf")
        if x.size:
            diffs.append(float(np.max(np.abs(x.astype(np.float64) - y))))
    return max(diffs, default=0.0)


def _describe_outputs(outputs):
    flat = _flat_outputs(outputs)
    if isinstance(outputs, dict):
        return f"dict[{len(flat)}]"
    if len(flat) > 1:
        return f"list[{len(flat)}]"
    return "x".join(str(d) for d in flat[0][1].shape[1:])


def check(name, build, workdir):
    t0 = time.perf_counter()
    model = build(0)
    t_build = time.perf_counter() - t0
    x = random_batch(name)
    t0 = time.perf_counter()
    out = model(x, training=False)
    t_run = time.perf_counter() - t0
    randomize_bn(model, seed=1)
    out = model(x, training=False)
    inv = inventory(model)
    path = os.path.join(workdir, f"{name}.keras")
    model.save(path)
    loaded = keras.saving.load_model(path)
    diff = _max_abs_diff(out, loaded(x, training=False))
    reloaded_bn = inventory(loaded)["bn_count"]
    os.remove(path)  # BASNet alone writes ~200 MB
    if reloaded_bn != inv["bn_count"]:
        raise RuntimeError(
            f"{inv['bn_count']} BatchNormalization layers before save, "
            f"{reloaded_bn} after load_model"
        )
    custom = ",".join(f"{k}:{v}" for k, v in inv["custom_classes"].items())
    return {
        "name": name,
        "class": type(model).__name__,
        "bn": inv["bn_count"],
        "custom": custom or "-",
        "hidden": inv["bn_in_custom"],
        "build_s": t_build,
        "run_s": t_run,
        "params": model.count_params(),
        "out": _describe_outputs(out),
        "reload_diff": diff,
    }


def main(argv):
    registry = {**BACKBONES, **TASKS, **CHANNELS_FIRST}
    names = argv or list(registry)
    unknown = [n for n in names if n not in registry]
    if unknown:
        print(f"unknown entries: {', '.join(unknown)}", file=sys.stderr)
        return 2
    # KerasHub tasks compile themselves in __init__; load_model then warns
    # that a custom compile() was not restored. Known and harmless here.
    warnings.filterwarnings(
        "ignore", message=r"`compile\(\)` was not called as part of model"
    )
    width = max(len(n) for n in list(names) + list(SKIPPED)) + 1
    print(
        f"{'name':<{width}} {'class':<28} {'BN':>3} {'hidden':>6} "
        f"{'build_s':>7} {'run_s':>6} {'params':>9} {'reload':>7}  "
        "output  custom classes holding BN (instances)"
    )
    failures = 0
    with tempfile.TemporaryDirectory(prefix="kerashub_zoo_") as workdir:
        for name in names:
            try:
                r = check(name, registry[name], workdir)
            except Exception as exc:  # report and continue
                failures += 1
                first = (str(exc).strip().splitlines() or [""])[0][:200]
                print(f"{name:<{width}} FAILED: {type(exc).__name__}: {first}")
                continue
            # save + load_model must reproduce the outputs exactly.
            if r["reload_diff"] != 0.0:
                failures += 1
            print(
                f"{r['name']:<{width}} {r['class']:<28} {r['bn']:>3} "
                f"{r['hidden']:>6} {r['build_s']:>7.2f} {r['run_s']:>6.2f} "
                f"{r['params']:>9} {r['reload_diff']:>7.1e}  "
                f"{r['out']}  {r['custom']}",
                flush=True,
            )
    for name, reason in SKIPPED.items():
        print(f"{name:<{width}} SKIPPED: {reason}")
    print(f"{len(names) - failures}/{len(names)} entries passed")
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
