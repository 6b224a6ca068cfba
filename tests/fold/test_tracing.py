"""Layers with their own call(): traced into Functional graphs where the trace provably holds, kept with a reason
naming the class and the cause where it does not (bnfreeze/fold/tracing.py)."""

import keras
import numpy as np
import pytest
from keras import layers
from support import bnfreeze as cli
from support import outputs_in_fresh_process, randomize_bn, randomize_weights

import bnfreeze
from bnfreeze.fold.tracing import TraceRefused, template_from_shape, trace_layer

PACKAGE = "bnfreeze_trace_tests"


def register(cls):
    return keras.saving.register_keras_serializable(PACKAGE)(cls)


class _Block(layers.Layer):
    """Base of the test blocks: a config that carries the name, so that they rebuild as they were."""

    def get_config(self):
        return {**super().get_config(), "name": self.name}


@register
class ConvBNReLU(_Block):
    """The tutorial block: conv, BN, relu (via keras.ops), with a training argument passed on."""

    def __init__(self, filters=6, strides=1, **kwargs):
        super().__init__(**kwargs)
        self.filters, self.strides = filters, strides
        self.conv = layers.Conv2D(filters, 3, strides=strides, padding="same", use_bias=False, name="conv")
        self.bn = layers.BatchNormalization(name="bn")

    def call(self, x, training=None):
        return keras.ops.relu(self.bn(self.conv(x), training=training))

    def get_config(self):
        return {**super().get_config(), "filters": self.filters, "strides": self.strides}


@register
class TwoInputs(_Block):
    """Nested blocks in a list, two inputs, a dict output."""

    def __init__(self, **kwargs):
        super().__init__(**kwargs)
        self.blocks = [ConvBNReLU(6, name="left"), ConvBNReLU(6, name="right")]
        self.project = layers.Conv2D(6, 1, name="project")
        self.bn = layers.BatchNormalization(name="bn")

    def call(self, a, b):
        left = self.blocks[0](a)
        merged = self.bn(self.project(self.blocks[1](b))) + left
        return {"merged": merged, "left": left}


@register
class Branchy(_Block):
    def __init__(self, **kwargs):
        super().__init__(**kwargs)
        self.bn = layers.BatchNormalization(name="bn")

    def build(self, shape):
        self.bn.build(shape)

    def call(self, x):
        if keras.ops.mean(x) > 0:  # Python control flow on a tensor's value
            return self.bn(x)
        return x

    def compute_output_shape(self, shape):
        return shape


@register
class ScaledBN(_Block):
    def __init__(self, **kwargs):
        super().__init__(**kwargs)
        self.bn = layers.BatchNormalization(name="bn")

    def build(self, shape):
        self.bn.build(shape)
        self.scale = self.add_weight(shape=(shape[-1],), initializer="ones", name="scale")

    def call(self, x):
        return self.bn(x) * self.scale  # a weight read outside a layer


@register
class NoisyBN(_Block):
    def __init__(self, **kwargs):
        super().__init__(**kwargs)
        self.bn = layers.BatchNormalization(name="bn")
        self.seed = keras.random.SeedGenerator(3)

    def build(self, shape):
        self.bn.build(shape)

    def call(self, x):
        return self.bn(x) + keras.random.normal((1, 1, 1, x.shape[-1]), seed=self.seed)


@register
class TrainingBN(_Block):
    def __init__(self, **kwargs):
        super().__init__(**kwargs)
        self.bn = layers.BatchNormalization(name="bn")

    def build(self, shape):
        self.bn.build(shape)

    def call(self, x):
        return self.bn(x, training=True)  # batch statistics at inference too


@register
class Counter(_Block):
    def __init__(self, **kwargs):
        super().__init__(**kwargs)
        self.bn = layers.BatchNormalization(name="bn")

    def build(self, shape):
        self.bn.build(shape)
        self.calls = self.add_weight(shape=(), initializer="zeros", trainable=False, name="calls")

    def call(self, x):
        self.calls.assign_add(1.0)  # state
        return self.bn(x)


@register
class FreshDense(_Block):
    def __init__(self, **kwargs):
        super().__init__(**kwargs)
        self.bn = layers.BatchNormalization(name="bn")

    def build(self, shape):
        self.bn.build(shape)

    def call(self, x):
        return layers.Dense(x.shape[-1], kernel_initializer="ones")(self.bn(x))  # a new layer, new weights each call


@register
class OwnMask(_Block):
    def __init__(self, **kwargs):
        super().__init__(**kwargs)
        self.bn = layers.BatchNormalization(name="bn")

    def build(self, shape):
        self.bn.build(shape)

    def call(self, x):
        return self.bn(x)

    def compute_mask(self, x, mask=None):
        return keras.ops.not_equal(x[..., 0], 0)


@register
class MaskedBN(_Block):
    def __init__(self, **kwargs):
        super().__init__(**kwargs)
        self.dense = layers.Dense(4, use_bias=False, name="dense")
        self.bn = layers.BatchNormalization(name="bn")

    def call(self, x, mask=None):
        y = self.bn(self.dense(x))
        if mask is not None:
            y = y * keras.ops.cast(mask, y.dtype)[..., None]
        return y


@register
class DenseBN(_Block):
    def __init__(self, **kwargs):
        super().__init__(**kwargs)
        self.dense = layers.Dense(4, use_bias=False, name="dense")
        self.bn = layers.BatchNormalization(name="bn")

    def call(self, x):
        return self.bn(self.dense(x))


@register
class MasksInside(_Block):
    def __init__(self, **kwargs):
        super().__init__(**kwargs)
        self.embed = layers.Embedding(20, 4, mask_zero=True, name="embed")
        self.dense = layers.Dense(4, use_bias=False, name="dense")
        self.bn = layers.BatchNormalization(name="bn")

    def call(self, tokens):
        return self.bn(self.dense(self.embed(tokens)))


@register
class Unused(_Block):
    def __init__(self, **kwargs):
        super().__init__(**kwargs)
        self.conv = layers.Conv2D(6, 1, use_bias=False, name="conv")
        self.bn = layers.BatchNormalization(name="bn")
        self.spare = layers.BatchNormalization(name="spare")  # made, never called

    def call(self, x):
        return self.bn(self.conv(x))


def _image_model():
    keras.utils.set_random_seed(0)
    a = keras.Input((9, 9, 3), name="a")
    b = keras.Input((9, 9, 3), name="b")
    shared = ConvBNReLU(3, name="shared")
    outs = TwoInputs(name="two")(a, shared(b))
    x = shared(outs["merged"][..., :3])  # the shared block at a second place
    x = ConvBNReLU(5, strides=2, name="strided")(x)
    x = layers.GlobalAveragePooling2D(name="pool")(x)
    model = keras.Model([a, b], {"left": outs["left"], "head": layers.Dense(4, name="head")(x)}, name="blocks")
    randomize_bn(model, seed=11)
    randomize_weights(model, seed=11)
    return model


def test_blocks_are_traced_and_their_bns_fold(tmp_path):
    model = _image_model()
    result = bnfreeze.fold(model)
    traced = {n["layer"]: n["class"] for n in result.report["structure"] if n["action"] == "traced"}
    assert set(traced) == {"two", "two/left", "two/right", "shared", "strided"}
    assert traced["two"] == f"{PACKAGE}>TwoInputs"
    assert sorted(e["bn"] for e in result.report["folded"]) == sorted(
        ["two/left/bn", "two/right/bn", "two/bn", "shared/bn", "strided/bn"])
    assert result.report["kept"] == [] and result.parity.passed
    path = tmp_path / "folded.keras"
    result.model.save(path)
    rng = np.random.default_rng(5)
    arrays = [rng.standard_normal((2, 9, 9, 3)).astype("float32") * 3 for _ in range(2)]
    inference, default = outputs_in_fresh_process(path, arrays, tmp_path)
    expected = [np.asarray(t) for t in keras.tree.flatten(model(arrays, training=False))]
    for want, got, again in zip(expected, inference, default):
        np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-5)
        np.testing.assert_allclose(again, want, rtol=1e-4, atol=1e-5)
    assert [t.name for t in result.model.inputs] == ["a", "b"]
    assert sorted(result.model.output_names) == sorted(model.output_names)


@pytest.mark.parametrize("cls, words", [
    (Branchy, "control flow on tensor values"),
    (ScaledBN, "reads its weight .*scale outside a layer"),
    (NoisyBN, "does not come from its inputs .*random draw"),
    (TrainingBN, "training=True"),
    (Counter, "state"),
    (FreshDense, "creates .* with weights inside its call"),
    (OwnMask, "computes its own Keras mask"),
])
def test_a_block_whose_trace_does_not_hold_is_kept_with_the_reason(cls, words):
    keras.utils.set_random_seed(1)
    a = keras.Input((6, 6, 4))
    x = layers.Conv2D(4, 1, name="before")(a)
    x = cls(name="block")(x)
    x = layers.Conv2D(4, 1, use_bias=False, name="after")(x)
    x = layers.BatchNormalization(name="bn_after")(x)
    model = keras.Model(a, x)
    randomize_bn(model, seed=2)
    result = bnfreeze.fold(model)
    kept = {e["bn"]: e["reason"] for e in result.report["kept"]}
    if cls is TrainingBN:  # its BN's training=True reaches the layers after it under model(x) (Keras's call context)
        assert "training=True under the model's default call" in kept.pop("bn_after")
    assert list(kept) == ["block/bn"]
    assert kept["block/bn"].startswith("it is inside block, which bnfreeze keeps as it is: block (")
    assert cls.__name__ in kept["block/bn"]
    import re
    assert re.search(words, kept["block/bn"]), kept["block/bn"]
    assert [e["bn"] for e in result.report["folded"]] == ([] if cls is TrainingBN else ["bn_after"])
    note = next(n for n in result.report["structure"] if n["layer"] == "block")
    assert note["action"] == "opaque" and re.search(words, note["detail"])
    assert result.parity.passed


def test_a_bn_the_call_never_reaches_is_reported_as_dropped():
    a = keras.Input((5, 5, 3))
    model = keras.Model(a, Unused(name="unused")(a))
    randomize_bn(model, seed=3)
    result = bnfreeze.fold(model)
    assert [e["bn"] for e in result.report["folded"]] == ["unused/bn"]
    assert [e["bn"] for e in result.report["dropped"]] == ["unused/spare"]
    assert "never called by unused.call" in result.report["dropped"][0]["reason"]
    assert result.plan.bn_count == 2


@pytest.mark.parametrize("cls", [MaskedBN, DenseBN])
def test_a_mask_reaching_a_block_is_kept(cls):
    # MaskedBN takes the mask in call; DenseBN does not, but Keras carries the mask on the tensor to it anyway
    tokens = keras.Input((7,), dtype="int32")
    x = layers.Embedding(20, 4, mask_zero=True, name="embed")(tokens)
    x = cls(name="block")(x)
    model = keras.Model(tokens, x)
    randomize_bn(model, seed=4)
    result = bnfreeze.fold(model)
    kept = {e["bn"]: e["reason"] for e in result.report["kept"]}
    assert "block/bn" in kept and "mask" in kept["block/bn"], kept
    assert result.parity.passed


def test_a_block_making_a_mask_inside_is_kept():
    tokens = keras.Input((7,), dtype="int32")
    model = keras.Model(tokens, MasksInside(name="block")(tokens))
    randomize_bn(model, seed=4)
    result = bnfreeze.fold(model)
    kept = {e["bn"]: e["reason"] for e in result.report["kept"]}
    assert "makes a Keras mask inside its call" in kept["block/bn"]
    assert result.parity.passed


def test_a_shared_block_at_different_sizes_folds_for_both():
    keras.utils.set_random_seed(2)
    block = ConvBNReLU(3, name="block")
    a = keras.Input((None, None, 3))
    b = keras.Input((8, 8, 3))
    model = keras.Model([a, b], [block(a), block(b)])
    randomize_bn(model, seed=5)
    result = bnfreeze.fold(model)
    assert [e["bn"] for e in result.report["folded"]] == ["block/bn"]
    assert result.parity.passed
    rng = np.random.default_rng(0)
    arrays = [rng.standard_normal((1, 13, 11, 3)).astype("float32"), rng.standard_normal((2, 8, 8, 3)).astype("float32")]
    for want, got in zip(model(arrays, training=False), result.model(arrays)):
        np.testing.assert_allclose(np.asarray(got), np.asarray(want), rtol=1e-4, atol=1e-5)


def test_trace_layer_refuses_a_call_it_cannot_run_and_leaves_the_layer_as_it_was():
    block = Counter(name="counter")
    block.build((None, 3))
    before = [v.numpy().copy() for v in block.variables]
    nodes = len(block.bn._inbound_nodes)
    with pytest.raises(TraceRefused, match="state"):
        trace_layer(block, template_from_shape([None, 3]))
    assert all(np.array_equal(a, v.numpy()) for a, v in zip(before, block.variables))
    assert len(block.bn._inbound_nodes) == nodes


def test_a_functional_subclass_that_overrides_call_is_traced(tmp_path):
    @register
    class Doubled(keras.Model):
        def call(self, x, training=None):
            return super().call(x, training=training) * 2.0

    inputs = keras.Input((4,), name="x")
    outputs = layers.BatchNormalization(name="bn")(layers.Dense(3, name="dense")(inputs))
    model = Doubled(inputs, outputs, name="doubled")
    randomize_bn(model, seed=6)
    result = bnfreeze.fold(model)
    assert [n["action"] for n in result.report["structure"]] == ["traced"]
    assert [e["into"] for e in result.report["folded"]] == ["dense"]
    x = np.random.default_rng(1).standard_normal((3, 4)).astype("float32")
    np.testing.assert_allclose(np.asarray(result.model(x)), np.asarray(model(x, training=False)), rtol=1e-5, atol=1e-6)


def test_command_line_lists_traced_and_opaque_blocks(tmp_path):
    a = keras.Input((6, 6, 3))
    x = ConvBNReLU(4, name="good")(a)
    x = Branchy(name="branchy")(x)
    model = keras.Model(a, x)
    randomize_bn(model, seed=7)
    path = tmp_path / "blocks.keras"
    model.save(path)
    here = __import__("pathlib").Path(__file__).resolve().parent
    module = tmp_path / "blocks_module.py"
    module.write_text(f"import sys\nsys.path[:0] = [{str(here)!r}, {str(here.parent)!r}]\n"
                      "from test_tracing import ConvBNReLU, Branchy  # noqa: F401 (registers them)\n")
    proc = cli("fold", path, "--unsafe", "--custom-objects", module, "-o", tmp_path / "out.keras")
    inspected = cli("inspect", path, "--unsafe", "--custom-objects", module)
    assert proc.returncode == 0, proc.stderr
    assert "good (bnfreeze_trace_tests>ConvBNReLU): traced" in proc.stdout
    assert "branchy (bnfreeze_trace_tests>Branchy): opaque" in proc.stdout
    assert "branchy/bn: kept:" in proc.stdout and "control flow on tensor values" in proc.stdout
    assert inspected.returncode == 0, inspected.stderr
    assert "good: traced (bnfreeze_trace_tests>ConvBNReLU)" in inspected.stdout
    assert "branchy: opaque" in inspected.stdout


@register
class TrainsByDefault(_Block):
    """A block whose call defaults to training=True and adds 100 in training mode: model(x) of a model
    holding it runs that branch, predict and every export do not."""

    def __init__(self, **kwargs):
        super().__init__(**kwargs)
        self.conv = layers.Conv2D(4, 3, padding="same", name="conv")
        self.bn = layers.BatchNormalization(name="bn")

    def call(self, x, training=True):
        y = self.bn(self.conv(x), training=training)
        return y + 100.0 if training else y


def test_a_block_whose_call_defaults_to_training_true_folds_for_inference_and_says_so():
    a = keras.Input((6, 6, 3))
    model = keras.Model(a, TrainsByDefault(name="block")(a))
    randomize_bn(model, seed=2)
    result = bnfreeze.fold(model)
    assert result.parity.passed and [e["bn"] for e in result.report["folded"]] == ["block/bn"]
    (note,) = result.report["structure"]
    assert note["action"] == "traced" and "defaults to training=True" in note["detail"]
    assert "block" in result.report["default_call"]
    x = np.random.default_rng(3).standard_normal((2, 6, 6, 3)).astype("float32")
    want = np.asarray(model(x, training=False))
    for got in (result.model(x), result.model(x, training=False), result.model.predict(x, verbose=0)):
        np.testing.assert_allclose(np.asarray(got), want, rtol=1e-5, atol=1e-5)


@register
class NamelessScaled(layers.Layer):
    """Keras's own get_config, which leaves the name of a subclass taking ``**kw`` out, and a weight used
    outside any layer (so it is kept as it is)."""

    def __init__(self, **kw):
        super().__init__(**kw)
        self.conv = layers.Conv2D(4, 3, padding="same")
        self.bn = layers.BatchNormalization()

    def build(self, input_shape):
        self.conv.build(input_shape)
        self.bn.build((*input_shape[:-1], 4))
        self.scale = self.add_weight(shape=(4,), initializer="ones", name="scale")

    def call(self, x, training=None):
        return self.bn(self.conv(x), training=training) * self.scale


def test_a_kept_layer_whose_config_leaves_out_its_name_is_written_under_its_name(tmp_path):
    a = keras.Input((6, 6, 3))
    x = NamelessScaled(name="scaled")(a)
    model = keras.Model(a, ConvBNReLU(4, name="after")(x))
    randomize_bn(model, seed=4)
    result = bnfreeze.fold(model)  # it was refused whole: 'rebuilds from its own config under another name'
    actions = {n["layer"]: n["action"] for n in result.report["structure"]}
    assert actions == {"scaled": "opaque", "after": "traced"}
    assert [e["bn"] for e in result.report["kept"]] == ["scaled/" + model.get_layer("scaled").bn.name]
    assert [e["bn"] for e in result.report["folded"]] == ["after/bn"] and result.parity.passed
    assert "scaled" in [layer.name for layer in result.model.layers]


@register
class RandomAtInference(_Block):
    """Monte-Carlo dropout: active whatever the call says."""

    def __init__(self, **kwargs):
        super().__init__(**kwargs)
        self.dense = layers.Dense(4, name="dense")
        self.bn = layers.BatchNormalization(name="bn")
        self.drop = layers.Dropout(0.5, name="drop")

    def call(self, x, training=None):
        return self.drop(self.bn(self.dense(x), training=training), training=True)


def test_a_model_random_at_inference_is_said_to_be_random_not_badly_folded():
    a = keras.Input((4,))
    model = keras.Model(a, RandomAtInference(name="mc")(a))
    randomize_bn(model, seed=1)
    with pytest.raises(bnfreeze.InputError, match="gives different outputs for the same inputs at inference"):
        bnfreeze.fold(model)


@register
class HalfOut(_Block):
    """Casts its float32 result to float16: the output carries float16 rounding."""

    def __init__(self, **kwargs):
        super().__init__(**kwargs)
        self.conv = layers.Conv2D(4, 3, padding="same", name="conv")
        self.bn = layers.BatchNormalization(name="bn")

    def call(self, x, training=None):
        return keras.ops.cast(self.bn(self.conv(x), training=training) * 30.0, "float16")


def test_an_output_cast_to_float16_is_held_to_float16_tolerances():
    a = keras.Input((6, 6, 3))
    model = keras.Model(a, HalfOut(name="half")(a))
    randomize_bn(model, seed=6)
    from bnfreeze.compare import Tolerance

    assert [dtype for _name, dtype in Tolerance().resolved(model).output_dtypes] == ["float16"]
    result = bnfreeze.fold(model)  # it failed at float32's 1e-5/1e-4: max_abs 0.0156, one float16 step
    assert result.parity.passed, result.report["parity"]


@register
class SubNet(keras.Model):
    """A subclassed model with its own call: it records no inputs or outputs."""

    def __init__(self, **kwargs):
        super().__init__(**kwargs)
        self.conv = layers.Conv2D(4, 3, name="conv")
        self.bn = layers.BatchNormalization(name="bn")

    def call(self, x, training=False):
        return self.bn(self.conv(x), training=training)


def test_a_subclassed_model_is_exported_through_its_plain_reading(tmp_path):
    from bnfreeze.export import export

    model = SubNet(name="subnet")
    model(np.zeros((1, 8, 8, 3), np.float32))
    randomize_bn(model, seed=8)
    artifacts = export(model, onnx=tmp_path / "m.onnx", tflite=tmp_path / "m.tflite")  # it was exit 3
    assert [a.passed for a in artifacts] == [True, True]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["m.onnx", "m.tflite"]


@register
class LooksUp(_Block):
    """An Embedding inside a layer of its own: the data checks do not see its vocabulary."""

    def __init__(self, **kwargs):
        super().__init__(**kwargs)
        self.embed = layers.Embedding(20, 4, name="embed")
        self.bn = layers.BatchNormalization(name="bn")

    def call(self, ids, training=None):
        return self.bn(self.embed(ids), training=training)


def test_ids_beyond_a_table_inside_a_users_layer_are_one_line_naming_the_data(tmp_path):
    from bnfreeze.io.sources import open_data
    from bnfreeze.io.signature import input_specs

    a = keras.Input((5,), dtype="int32")
    model = keras.Model(a, LooksUp(name="lookup")(a))
    randomize_bn(model, seed=9)
    assert bnfreeze.fold(model).parity.passed  # random ids stay inside the table it holds
    path = tmp_path / "ids.npy"
    np.save(path, np.full((4, 5), 25, np.int32))
    with pytest.raises(bnfreeze.InputError) as caught:
        bnfreeze.fold(model, data=open_data(path, input_specs(model)))
    assert str(caught.value).startswith(f"{path}: holds an id the model cannot look up (indices")
    assert "\n" not in str(caught.value)


def test_a_crop_the_graph_records_but_inference_skips_is_named_when_the_graph_cannot_rebuild():
    a = keras.Input((16, 16, 3))
    augment = keras.Sequential([layers.RandomFlip(), layers.RandomCrop(12, 12, name="crop")], name="aug")
    model = keras.Model(a, ConvBNReLU(4, name="block")(augment(a)))
    with pytest.raises(bnfreeze.InputError, match=r"aug/crop \(RandomCrop\) is the identity at inference, but its "
                                                  r"recorded output shape \(None, 12, 12, 3\) differs"):
        bnfreeze.fold(model)


def test_a_kept_layer_from_a_custom_objects_file_names_the_file(tmp_path):
    from bnfreeze.io.custom_objects import import_custom_objects

    module = tmp_path / "my_layers.py"
    module.write_text(
        "import keras\n"
        "@keras.saving.register_keras_serializable('my_layers')\n"
        "class Gate(keras.layers.Layer):\n"
        "    def __init__(self, **kwargs):\n"
        "        super().__init__(**kwargs)\n"
        "        self.bn = keras.layers.BatchNormalization()\n"
        "    def build(self, shape):\n"
        "        self.bn.build(shape)\n"
        "        self.gain = self.add_weight(shape=shape[-1:], initializer='ones')\n"
        "    def call(self, x, training=None):\n"
        "        return self.bn(x, training=training) * self.gain\n")
    import_custom_objects(module, unsafe=True)
    gate = keras.saving.get_registered_object("my_layers>Gate")
    a = keras.Input((4,))
    result = bnfreeze.fold(keras.Model(a, gate(name="gate")(keras.layers.Dense(4)(a))))
    (note,) = result.report["structure"]
    assert note["action"] == "opaque" and f"the output needs the classes of {module} to load" in note["detail"]
