"""KerasHub backbones and tasks (built from architecture arguments, random weights): Functional subclasses read as
their graph, KerasHub's blocks traced, every BN folded or kept with a reason, the output plain Keras."""

import json
import zipfile

import numpy as np
import pytest

keras_hub = pytest.importorskip("keras_hub", reason="keras-hub (a test extra) is not installed")

import keras  # noqa: E402
import kerashub_zoo as zoo  # noqa: E402
from support import bnfreeze as cli  # noqa: E402
from support import outputs_in_fresh_process  # noqa: E402

import bnfreeze  # noqa: E402
from bnfreeze.io.signature import input_specs, output_names  # noqa: E402

#: models every BN of which folds (the zoo script, scripts/bench_kerashub.py, runs them all)
COMPLETE = (
    "efficientnet_classifier",  # a task: the backbone inside, the preprocessor beside
    "efficientnet_v2",  # FusedMBConvBlock and MBConvBlock (their own call)
    "hgnetv2",  # the whole backbone is KerasHub layers nested four deep
    "mobilenet_v3",  # blocks with squeeze-and-excite sublayers of their own
    "deeplabv3_segmenter",  # a pyramid pooling layer holding Resizing and nested Sequentials
)


def _build(name):
    registry = {**zoo.BACKBONES, **zoo.TASKS}
    model = registry[name](0)
    zoo.randomize_bn(model, seed=7)
    return model


def _bn_names(model) -> int:
    return zoo.inventory(model)["bn_count"]


@pytest.mark.parametrize("name", COMPLETE)
def test_kerashub_model_folds_completely_and_loads_without_keras_hub(name, tmp_path):
    model = _build(name)
    result = bnfreeze.fold(model)
    report = result.report
    assert len(report["folded"]) + len(report["kept"]) + len(report["dropped"]) == _bn_names(model)
    assert report["kept"] == [], report["kept"]
    assert result.parity.passed
    actions = {n["action"] for n in report["structure"]}
    assert "read as Functional" in actions
    assert type(result.model).__name__ == "Functional"
    classes = {type(layer).__module__.split(".")[0] for layer in result.model._flatten_layers(include_self=True)}
    assert classes == {"keras"}, classes
    assert [s.name for s in input_specs(result.model)] == [s.name for s in input_specs(model)]
    assert output_names(result.model) == output_names(model)
    path = tmp_path / "folded.keras"
    result.model.save(path)
    x = zoo.random_batch(name, batch_size=2, seed=3) * 4.0
    inference, default = outputs_in_fresh_process(path, [x], tmp_path)
    expected = [np.asarray(t) for t in keras.tree.flatten(model(x, training=False))]
    for want, got, again in zip(expected, inference, default):
        scale = max(float(np.max(np.abs(want))), 1.0)
        assert float(np.max(np.abs(got - want))) <= 1e-4 * scale
        assert float(np.max(np.abs(again - want))) <= 1e-4 * scale


def test_the_task_note_names_the_preprocessor():
    model = _build("resnet_classifier")
    result = bnfreeze.fold(model)
    note = next(n for n in result.report["structure"] if n["layer"] == model.name)
    assert note["class"] == "keras_hub>ResNetImageClassifier" and note["action"] == "read as Functional"
    assert "preprocessor" in note["detail"] and "the graph unchanged" in note["detail"]
    assert "run the original's `.preprocessor` on raw inputs first" in note["detail"]
    backbone = next(n for n in result.report["structure"] if n["layer"] == model.backbone.name)
    assert backbone["class"] == "keras_hub>ResNetBackbone" and "constructor arguments" in backbone["detail"]


def test_an_opaque_kerashub_layer_is_named_with_the_package_the_output_needs():
    """HGNetV2's learnable affine block reads its weights outside a layer: it stays, and says the output needs
    keras_hub; the BNs around it still fold."""
    model = _build("hgnetv2_light_lab")
    result = bnfreeze.fold(model)
    assert result.report["kept"] == [] and result.parity.passed
    opaque = [n for n in result.report["structure"] if n["action"] == "opaque"]
    assert opaque and all(n["class"] == "keras_hub>HGNetV2LearnableAffineBlock" for n in opaque)
    assert all("the output needs keras_hub to load" in n["detail"] for n in opaque)
    assert all("its own weights outside a layer" in n["detail"] for n in opaque)


def test_a_kerashub_backbone_inside_a_users_model(tmp_path):
    backbone = _build("efficientnet_v2")
    inputs = keras.Input(zoo.IMAGE_SHAPES["efficientnet_v2"], name="pixels")
    x = keras.layers.RandomFlip(name="flip")(inputs)
    x = backbone(x)
    x = keras.layers.GlobalAveragePooling2D(name="pool")(x)
    x = keras.layers.Dense(16, use_bias=False, name="head")(x)
    x = keras.layers.BatchNormalization(name="head_bn")(x)
    model = keras.Model(inputs, keras.layers.Dense(3, name="logits")(x), name="mine")
    zoo.randomize_bn(model, seed=8)
    result = bnfreeze.fold(model)
    assert result.report["kept"] == [] and result.parity.passed
    folded = {e["bn"] for e in result.report["folded"]}
    assert "head_bn" in folded and any(name.startswith(f"{backbone.name}/") for name in folded)
    assert any(n["action"] == "traced" and n["layer"].startswith(f"{backbone.name}/") for n in
               result.report["structure"])


def test_command_line_on_a_saved_kerashub_file(tmp_path):
    model = _build("mobilenet_v3")
    source = tmp_path / "mobilenet.keras"
    model.save(source)
    before = source.read_bytes()
    folded = tmp_path / "mobilenet.folded.keras"
    proc = cli("fold", source, "-o", folded, "--report", tmp_path / "report.json")
    assert proc.returncode == 0, proc.stderr
    assert "read as Functional" in proc.stdout and "traced" in proc.stdout
    report = json.loads((tmp_path / "report.json").read_text())
    assert report["kept"] == [] and len(report["folded"]) == _bn_names(model)
    assert source.read_bytes() == before
    with zipfile.ZipFile(folded) as archive:
        assert "keras_hub" not in archive.read("config.json").decode()
    inspected = cli("inspect", source)
    assert inspected.returncode == 0, inspected.stderr
    assert "traced (keras_hub" in inspected.stdout or "traced (" in inspected.stdout


def test_a_file_needing_a_package_that_is_not_installed_is_one_line(tmp_path):
    model = _build("xception")
    good = tmp_path / "xception.keras"
    model.save(good)
    bad = tmp_path / "needs_missing.keras"
    with zipfile.ZipFile(good) as source, zipfile.ZipFile(bad, "w") as target:
        for member in source.namelist():
            data = source.read(member)
            if member == "config.json":
                data = data.decode().replace("keras_hub", "keras_hub_missing").encode()
            target.writestr(member, data)
    proc = cli("fold", bad, "-o", tmp_path / "out.keras")
    assert proc.returncode == 2
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and str(bad) in lines[0]
    assert "keras_hub_missing" in lines[0] and "not installed" in lines[0] and "pip install" in lines[0]
    assert not (tmp_path / "out.keras").exists()


def test_locate_reads_a_kerashub_reference_plainly():
    from bnfreeze.verify.locate import first_divergence

    model = _build("xception")
    folded = bnfreeze.fold(model).model
    name = next(layer.name for layer in folded.layers if isinstance(layer, keras.layers.SeparableConv2D))
    layer = folded.get_layer(name)
    layer.pointwise_kernel.assign(layer.pointwise_kernel.numpy() * 1.5)
    feed = {input_specs(model)[0].name: zoo.random_batch("xception", 2)}
    assert first_divergence(model, folded, feed) == name
