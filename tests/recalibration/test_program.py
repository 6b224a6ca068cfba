"""Flattening a model into steps and BN levels."""

import pytest

from bnfreeze.errors import InputError
from bnfreeze.recalibration.program import flatten
from helpers import nested_model, residual_model


def test_levels_and_steps_of_a_residual_model():
    program = flatten(residual_model())
    levels = {program.bn_names[i]: lv for i, lv in program.levels.items()}
    assert levels == {"bn1": 0, "bn2": 1, "bn_skip": 1, "bn3": 2, "bn_pool": 3, "bn_dense": 4}
    assert program.max_level == 4
    bn_steps = [s for s in program.steps if s.is_bn]
    assert all(s.stage == program.levels[id(s.op)] + 1 for s in bn_steps)


def test_nested_models_are_inlined_with_paths():
    program = flatten(nested_model(shared_twice=True))
    names = sorted(program.bn_names.values())
    assert names == ["block/inner_bn", "head_bn", "outer_bn"]
    inner = [s for s in program.steps if s.is_bn and s.op.name == "inner_bn"]
    assert len(inner) == 2 and inner[0].outputs != inner[1].outputs  # two calls, two sets of tensors


def test_bn_reading_its_own_output_is_refused_for_exact_only():
    import keras
    from keras import layers

    block = keras.Sequential([keras.Input((4,)), layers.Dense(4), layers.BatchNormalization(name="loop_bn")],
                             name="block")
    x_in = keras.Input((4,))
    model = keras.Model(x_in, block(block(x_in)))
    with pytest.raises(InputError, match="reads its own output.*precise"):
        flatten(model)
    program = flatten(model, ordered=False)
    assert len([s for s in program.steps if s.is_bn]) == 2


def test_subclassed_model_is_refused():
    import keras

    class Net(keras.Model):
        def __init__(self):
            super().__init__()
            self.bn = keras.layers.BatchNormalization()

        def call(self, x):
            return self.bn(x)

    net = Net()
    net(keras.ops.zeros((1, 3)))
    with pytest.raises(InputError, match="subclassed"):
        flatten(net)


def test_a_kept_time_distributed_bn_inside_a_nested_model_is_named_with_its_path():
    import keras
    from keras import layers

    inner_in = keras.Input((3, 4))
    inner = keras.Model(inner_in, layers.TimeDistributed(layers.BatchNormalization(name="bn"), name="td")(inner_in),
                        name="block")
    x_in = keras.Input((3, 4))
    program = flatten(keras.Model(x_in, inner(x_in)), ordered=False)
    [(name, reason)] = program.kept.values()
    assert name == "block/td/bn" and reason.startswith("block/td/bn: TimeDistributed runs its BN once per time step")


def test_a_functional_subclass_is_refused_at_the_top_and_one_layer_when_nested():
    import keras
    from keras import layers

    class Shifted(keras.Model):  # built functionally: a Functional subclass whose call differs from its graph
        def call(self, inputs, training=None):
            return super().call(inputs, training=training) + 1.0

    inner_in = keras.Input((4,))
    inner = Shifted(inner_in, layers.Dense(4)(inner_in), name="shifted")
    with pytest.raises(InputError, match="subclassed Shifted"):
        flatten(inner)
    x_in = keras.Input((4,))
    program = flatten(keras.Model(x_in, layers.BatchNormalization(name="bn")(inner(x_in))))
    assert [s.op.name for s in program.steps] == ["shifted", "bn"]  # run by its own call, not inlined


def test_a_bn_kept_in_one_of_its_calls_is_measured_in_none():
    import keras
    from keras import layers

    first, second = keras.Input((5, 4)), keras.Input((5, 4))
    td = layers.TimeDistributed(layers.BatchNormalization(name="bn"), name="td")
    masked = td(layers.Masking(0.0)(second))  # this call receives a mask: kept
    model = keras.Model([first, second], layers.Concatenate()([td(first), layers.LSTM(4, return_sequences=True)(masked)]))
    program = flatten(model)
    assert program.bn_layers == {} and not any(s.is_bn for s in program.steps)
    assert [name for name, _ in program.kept.values()] == ["td/bn"]


def test_a_mask_reaching_a_bn_off_the_last_axis_is_refused_before_any_pass():
    import keras
    from keras import layers

    inputs = keras.Input((5, 3))
    x = layers.Dense(4)(layers.Masking(0.0)(inputs))
    model = keras.Model(inputs, layers.BatchNormalization(axis=1, name="bn")(x))
    with pytest.raises(InputError, match=r"bn receives a mask but normalizes axis 1 of a rank-3 tensor, not the last"):
        flatten(model)
