"""What preprocessing layers do at inference, and how the plain model stands in for them.

Keras 3's image preprocessing layers (``RandomFlip``, ``RandomRotation``,
``Resizing``, ...) declare ``call(..., training=True)``. Under the default
call ``model(x)`` that default reaches Keras's call context, and every layer
called after one of them receives ``training=True`` too (checked on Keras
3.15): BNs there run on batch statistics and Dropout is active. ``predict``,
``model(x, training=False)``, serving and every exporter pass
``training=False`` instead, which Keras hands to every layer: that is the call
bnfreeze folds for.

At ``training=False`` every random augmentation layer below returns its input
unchanged, at most cast to its compute dtype (read in Keras 3.15's
``transform_images`` of each; ``tests/fold/test_inference.py`` checks every one
on several dtypes and sizes). So the plain model

* **drops** a random layer whose call receives its compute dtype already (it is
  the identity: the output behaves the same under ``model(x)`` and ``predict``);
* **pins** ``training=False`` on the call of any other layer whose ``call``
  defaults to ``training=True`` (a random layer that casts ``uint8`` images to
  float, ``Resizing``, ``CenterCrop``...): it computes what it computes under
  ``predict``, and passes ``training=False`` on to the layers after it.

Dropout and the noise layers stay: nothing passes them ``training=True``
any more, so they are identities under both calls, and rules cross them.
"""

from __future__ import annotations

import inspect

#: Random augmentation layers whose inference call is the identity (at most a cast to their compute dtype).
RANDOM_AUGMENTATIONS = (
    "AugMix",
    "CutMix",
    "MixUp",
    "RandAugment",
    "RandomBrightness",
    "RandomColorDegeneration",
    "RandomColorJitter",
    "RandomContrast",
    "RandomCrop",
    "RandomElasticTransform",
    "RandomErasing",
    "RandomFlip",
    "RandomGaussianBlur",
    "RandomGrayscale",
    "RandomHue",
    "RandomInvert",
    "RandomPerspective",
    "RandomPosterization",
    "RandomRotation",
    "RandomSaturation",
    "RandomSharpness",
    "RandomShear",
    "RandomTranslation",
    "RandomZoom",
    "Solarization",
)


def is_random_augmentation(layer) -> bool:
    from bnfreeze.fold.classes import is_exactly

    return is_exactly(layer, *RANDOM_AUGMENTATIONS)


def trains_by_default(layer) -> bool:
    """Does ``layer.call`` default to ``training=True`` (which Keras passes on under ``model(x)``)?"""
    try:
        parameter = inspect.signature(type(layer).call).parameters.get("training")
    except (TypeError, ValueError):
        return False
    return parameter is not None and parameter.default is not inspect.Parameter.empty and bool(parameter.default)


def drops_at_inference(layer, input_dtypes: list[str]) -> bool:
    """Is ``layer`` the identity at inference on inputs of ``input_dtypes`` (so the plain model can drop it)?"""
    if not is_random_augmentation(layer) or len(input_dtypes) != 1:
        return False
    return input_dtypes[0] == str(layer.compute_dtype)
