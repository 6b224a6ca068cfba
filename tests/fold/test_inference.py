"""Preprocessing layers at inference (bnfreeze/fold/inference.py): random augmentation is the identity at
training=False (dropped), other layers whose call defaults to training=True are pinned to training=False."""

import keras
import numpy as np
import pytest
from keras import layers
from support import outputs_in_fresh_process, randomize_bn

import bnfreeze
from bnfreeze.fold.inference import RANDOM_AUGMENTATIONS, drops_at_inference, trains_by_default

#: constructor arguments that every augmentation needs (the rest take their defaults)
ARGUMENTS = {
    "RandomRotation": (0.2,), "RandomZoom": (0.2,), "RandomTranslation": (0.1, 0.1), "RandomContrast": (0.3,),
    "RandomBrightness": (0.3,), "RandomCrop": (6, 6), "RandomHue": (0.2, (0, 255)), "RandomSaturation": (0.3,),
    "RandomSharpness": (0.3,), "RandomShear": (0.2,), "RandomPosterization": (4, (0, 255)),
    "RandomColorDegeneration": (0.3,), "RandomColorJitter": ((0, 255),), "RandomGaussianBlur": (0.5,),
    "RandomErasing": (0.5,), "RandomElasticTransform": (0.5,), "RandomPerspective": (0.5,), "RandomInvert": (0.5,),
    "Solarization": (0.5,), "RandomGrayscale": (0.5,), "RandomFlip": ("horizontal_and_vertical",),
}


@pytest.mark.parametrize("name", RANDOM_AUGMENTATIONS)
def test_every_random_augmentation_is_the_identity_at_inference(name):
    """The premise of dropping them, checked on this Keras: at training=False the output is the input
    (cast to the layer's compute dtype at most), for several dtypes, sizes and batches."""
    rng = np.random.default_rng(0)
    for dtype in ("float32", "uint8", "float16"):
        for shape in ((1, 9, 9, 3), (4, 16, 12, 3)):
            layer = getattr(keras.layers, name)(*ARGUMENTS.get(name, ()))
            x = (rng.random(shape) * 255).astype(dtype)
            y = np.asarray(layer(x, training=False))
            assert y.shape == x.shape, (name, dtype, shape)
            np.testing.assert_array_equal(y.astype(np.float64), x.astype(np.float64).astype(y.dtype).astype(np.float64))
            assert trains_by_default(layer)
            assert drops_at_inference(layer, [str(layer.compute_dtype)])


def _tutorial_model(dtype="float32", extra=None):
    """The Keras tutorial layout: augmentation, rescaling, then conv/BN blocks."""
    keras.utils.set_random_seed(0)
    inputs = keras.Input((16, 16, 3), dtype=dtype, name="image")
    x = layers.RandomFlip("horizontal", name="flip")(inputs)
    x = layers.RandomRotation(0.1, name="rotate")(x)
    x = layers.RandomZoom(0.1, name="zoom")(x)
    if extra is not None:
        x = extra(x)
    x = layers.Rescaling(1 / 255.0, name="rescale")(x)
    x = layers.Conv2D(8, 3, padding="same", use_bias=False, name="conv1")(x)
    x = layers.BatchNormalization(name="bn1")(x)
    x = layers.ReLU(name="relu")(x)
    x = layers.Dropout(0.3, name="drop")(x)
    x = layers.Conv2D(8, 3, use_bias=False, name="conv2")(x)
    x = layers.BatchNormalization(name="bn2")(x)
    x = layers.GlobalAveragePooling2D(name="pool")(x)
    outputs = layers.Dense(3, name="logits")(x)
    model = keras.Model(inputs, outputs, name="tutorial")
    randomize_bn(model, seed=1)
    return model


def test_augmentation_is_dropped_and_every_bn_folds(tmp_path):
    model = _tutorial_model()
    result = bnfreeze.fold(model)
    assert sorted(e["bn"] for e in result.report["folded"]) == ["bn1", "bn2"]
    assert result.report["kept"] == []
    notes = {n["layer"]: n["action"] for n in result.report["structure"]}
    assert notes == {"flip": "dropped", "rotate": "dropped", "zoom": "dropped"}
    assert "training=True" in result.report["default_call"] and "flip" in result.report["default_call"]
    assert not {"flip", "rotate", "zoom"} & {layer.name for layer in result.model.layers}
    default_runs = [r for r in result.parity.runs if r.call == "default call"]
    assert default_runs and all(r.passed and "inference call" in (r.note or "") for r in default_runs)
    # the folded model computes the inference call under model(x) and predict alike, loaded without bnfreeze
    path = tmp_path / "folded.keras"
    result.model.save(path)
    x = (np.random.default_rng(3).random((4, 16, 16, 3)) * 255).astype("float32")
    inference, default = outputs_in_fresh_process(path, [x], tmp_path)
    expected = np.asarray(model(x, training=False))
    np.testing.assert_allclose(inference[0], expected, rtol=1e-4, atol=1e-5)
    np.testing.assert_allclose(default[0], expected, rtol=1e-4, atol=1e-5)
    np.testing.assert_allclose(result.model.predict(x, verbose=0), expected, rtol=1e-4, atol=1e-5)


def test_a_casting_augmentation_and_resizing_are_pinned_not_dropped():
    """On uint8 images RandomFlip also casts to float32 at inference, and Resizing is no identity: both stay,
    called with training=False, so that nothing passes training=True on under model(x)."""
    model = _tutorial_model("uint8", extra=layers.Resizing(12, 12, name="resize"))
    result = bnfreeze.fold(model)
    notes = {n["layer"]: n["action"] for n in result.report["structure"]}
    assert notes == {"flip": "pinned", "rotate": "dropped", "zoom": "dropped", "resize": "pinned"}
    assert sorted(e["bn"] for e in result.report["folded"]) == ["bn1", "bn2"]
    flip = result.model.get_layer("flip")
    assert [node.arguments.kwargs.get("training") for node in flip._inbound_nodes] == [False]
    x = (np.random.default_rng(4).random((2, 16, 16, 3)) * 255).astype("uint8")
    np.testing.assert_allclose(np.asarray(result.model(x)), np.asarray(model(x, training=False)), rtol=1e-4,
                               atol=1e-5)


def test_a_sequential_with_augmentation():
    keras.utils.set_random_seed(0)
    model = keras.Sequential([
        keras.Input((10, 10, 3)),
        layers.RandomFlip(name="flip"),
        layers.Conv2D(4, 3, use_bias=False, name="conv"),
        layers.BatchNormalization(name="bn"),
        layers.Flatten(name="flat"),
        layers.Dense(2, name="out"),
    ], name="seq")
    randomize_bn(model, seed=2)
    result = bnfreeze.fold(model)
    assert [e["bn"] for e in result.report["folded"]] == ["bn"]
    assert type(result.model) is keras.Sequential
    assert [layer.name for layer in result.model.layers] == ["conv", "flat", "out"]


def test_a_sequential_needing_a_pinned_call_becomes_functional():
    keras.utils.set_random_seed(0)
    model = keras.Sequential([
        keras.Input((10, 10, 3)),
        layers.Resizing(8, 8, name="resize"),
        layers.Conv2D(4, 3, use_bias=False, name="conv"),
        layers.BatchNormalization(name="bn"),
        layers.GlobalAveragePooling2D(name="pool"),
    ], name="seq")
    randomize_bn(model, seed=2)
    result = bnfreeze.fold(model)
    assert [e["bn"] for e in result.report["folded"]] == ["bn"]
    assert type(result.model).__name__ == "Functional" and result.parity.passed
    x = np.random.default_rng(1).standard_normal((2, 10, 10, 3)).astype("float32")
    np.testing.assert_allclose(np.asarray(result.model(x)), np.asarray(model(x, training=False)), rtol=1e-4,
                               atol=1e-5)


def test_augmentation_inside_a_nested_model_and_a_pipeline():
    keras.utils.set_random_seed(0)
    augment = keras.Sequential([layers.RandomFlip(name="flip"), layers.RandomContrast(0.2, name="contrast")],
                               name="augment")
    pipeline = layers.Pipeline([layers.RandomRotation(0.1, name="rot"), layers.RandomZoom(0.1, name="zoom")],
                               name="pipe")
    inputs = keras.Input((12, 12, 3))
    x = pipeline(augment(inputs))
    x = layers.Conv2D(4, 3, use_bias=False, name="conv")(x)
    x = layers.BatchNormalization(name="bn")(x)
    model = keras.Model(inputs, x)
    randomize_bn(model, seed=3)
    result = bnfreeze.fold(model)
    assert [e["bn"] for e in result.report["folded"]] == ["bn"]
    actions = {n["layer"]: n["action"] for n in result.report["structure"]}
    assert actions["augment/flip"] == "dropped" and actions["augment/contrast"] == "dropped"
    assert actions["pipe"] == "traced" and actions["pipe/rot"] == "dropped"
    x = np.random.default_rng(1).standard_normal((2, 12, 12, 3)).astype("float32")
    np.testing.assert_allclose(np.asarray(result.model(x)), np.asarray(model(x, training=False)), rtol=1e-4,
                               atol=1e-5)


def test_an_explicit_training_true_is_still_kept():
    """Dropping augmentation does not change the rule for a BN the graph itself calls with training=True."""
    inputs = keras.Input((6, 6, 3))
    x = layers.RandomFlip(name="flip")(inputs)
    x = layers.Conv2D(4, 1, use_bias=False, name="conv")(x)
    x = layers.BatchNormalization(name="bn")(x, training=True)
    model = keras.Model(inputs, x)
    randomize_bn(model, seed=5)
    result = bnfreeze.fold(model)
    assert [e["bn"] for e in result.report["kept"]] == ["bn"]
    assert "training=True" in result.report["kept"][0]["reason"]


def test_exporting_a_model_with_augmentation_serves_its_inference_call(tmp_path):
    """Keras's preprocessing layers default to training=True: an export that called the model's default call
    would serve random augmentation. Every artifact of the original (and of the folded model) is its
    inference call, checked against it."""
    from bnfreeze.export import export

    model = _tutorial_model()
    artifacts = export(model, savedmodel=tmp_path / "sm", onnx=tmp_path / "m.onnx", tflite=tmp_path / "m.tflite")
    assert [a.passed for a in artifacts] == [True, True, True]
    import tensorflow as tf

    loaded = tf.saved_model.load(str(tmp_path / "sm"))
    x = (np.random.default_rng(6).random((2, 16, 16, 3)) * 255).astype("float32")
    expected = np.asarray(model(x, training=False))
    for _ in range(2):  # deterministic: no augmentation runs
        np.testing.assert_allclose(np.asarray(loaded.serve(x)), expected, rtol=1e-4, atol=1e-5)
        served = loaded.signatures["serving_default"](image=tf.constant(x))
        np.testing.assert_allclose(np.asarray(served["logits"]), expected, rtol=1e-4, atol=1e-5)
