"""bnfreeze.recalibrate: exactness, idempotence, what changes and what does not."""

from __future__ import annotations

import numpy as np
import pytest

from bnfreeze.io.arrays import ArrayData
from bnfreeze.errors import InputError
from bnfreeze.recalibration import parse_bytes, recalibrate
from bnfreeze.io.signature import input_specs
from helpers import bn_input_moments, calibration, nested_model, residual_model

RTOL = 2e-5  # float32 activations, float64 statistics


def data_of(model, x, labels=None):
    specs = input_specs(model)
    from pathlib import Path

    return ArrayData(Path("<test>"), {specs[0].name: x}, specs, labels)


def bn_statistics(model) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    import keras

    return {l.name: (l.moving_mean.numpy().astype(np.float64), l.moving_variance.numpy().astype(np.float64))
            for l in model._flatten_layers(include_self=False) if isinstance(l, keras.layers.BatchNormalization)}


def assert_close(a, b, rtol=RTOL, atol=1e-6):
    np.testing.assert_allclose(a, b, rtol=rtol, atol=atol)


@pytest.fixture(scope="module")
def model():
    return residual_model(seed=1)


@pytest.fixture(scope="module")
def x(model):
    return calibration(model, samples=70)


@pytest.fixture(scope="module")
def exact(model, x):
    return recalibrate(model, data_of(model, x), batch_size=16)


def test_exact_normalises_every_bn_input_on_the_calibration_set(exact, x):
    """After exact recalibration, each BN's inference-time input has exactly the stored mean and variance."""
    observed = bn_input_moments(exact.model, x)
    stored = bn_statistics(exact.model)
    assert set(observed) == set(stored) == {"bn1", "bn2", "bn3", "bn_skip", "bn_pool", "bn_dense"}
    for name, (mean, var) in observed.items():
        assert_close(stored[name][0], mean)
        assert_close(stored[name][1], var)


def test_statistics_moved_far_from_the_old_ones(model, exact):
    old, new = bn_statistics(model), bn_statistics(exact.model)
    for name in old:
        assert np.max(np.abs(old[name][0] - new[name][0])) > 0.1, name
    assert all(c.mean_shift_max > 0.05 for c in exact.changes)


def test_exact_is_idempotent(exact, x):
    again = recalibrate(exact.model, data_of(exact.model, x), batch_size=16)
    first, second = bn_statistics(exact.model), bn_statistics(again.model)
    for name in first:
        np.testing.assert_array_equal(first[name][0], second[name][0])
        np.testing.assert_array_equal(first[name][1], second[name][1])


@pytest.mark.parametrize("batch_size", [1, 7, 70])
def test_exact_does_not_depend_on_batch_size(model, x, exact, batch_size):
    other = recalibrate(model, data_of(model, x), batch_size=batch_size)
    a, b = bn_statistics(exact.model), bn_statistics(other.model)
    for name in a:
        assert_close(a[name][0], b[name][0])
        assert_close(a[name][1], b[name][1])


def test_exact_without_frontier_cache_gives_the_same_statistics(model, x, exact):
    uncached = recalibrate(model, data_of(model, x), batch_size=16, memory_budget=0)
    assert uncached.details["cached_passes"] == 0 and exact.details["cached_passes"] > 0
    assert uncached.passes == exact.passes == exact.details["levels"]
    a, b = bn_statistics(exact.model), bn_statistics(uncached.model)
    for name in a:
        assert_close(a[name][0], b[name][0], rtol=1e-6)
        assert_close(a[name][1], b[name][1], rtol=1e-6)


def test_levels_group_independent_bns_into_one_pass(exact):
    levels = {c.name: c.level for c in exact.changes}
    assert levels["bn1"] == 0
    assert levels["bn2"] == levels["bn_skip"] == 1  # both read bn1's output only
    assert levels["bn3"] == 2 and levels["bn_pool"] == 3 and levels["bn_dense"] == 4
    assert exact.passes == 5


@pytest.mark.parametrize("mode", ["exact", "precise", "ema", "fixed-batch"])
def test_only_moving_statistics_change(model, x, mode):
    import keras

    result = recalibrate(model, data_of(model, x), mode=mode, batch_size=16)
    changed = set()
    for old_layer, new_layer in zip(model.layers, result.model.layers):
        assert old_layer.name == new_layer.name
        for old, new in zip(old_layer.weights, new_layer.weights):
            if isinstance(old_layer, keras.layers.BatchNormalization) and old.name.startswith("moving_"):
                if not np.array_equal(old.numpy(), new.numpy()):
                    changed.add((old_layer.name, old.name))
                continue
            np.testing.assert_array_equal(old.numpy(), new.numpy(), err_msg=f"{old_layer.name}/{old.name}")
    assert len(changed) == 12  # six BNs, mean and variance each
    # the input model is untouched
    assert bn_statistics(model)["bn1"][0][0] == pytest.approx(residual_model(seed=1).get_layer("bn1").moving_mean[0])


def test_precise_pools_batch_statistics(model, x):
    """PreciseBN: the first BN sees raw data, so its statistics are exact whatever the batch size."""
    result = recalibrate(model, data_of(model, x), mode="precise", batch_size=16)
    first = bn_input_moments(model, x)["bn1"]
    stats = bn_statistics(result.model)["bn1"]
    assert_close(stats[0], first[0])
    assert_close(stats[1], first[1])
    # deeper BNs see batch-normalised inputs upstream, so they differ from the exact statistics
    exact = bn_statistics(recalibrate(model, data_of(model, x), batch_size=16).model)
    precise = bn_statistics(result.model)
    assert np.max(np.abs(precise["bn_dense"][0] - exact["bn_dense"][0])) > 1e-3


def test_fixed_batch_equals_training_mode_on_that_batch(model, x):
    """With the statistics of one batch, inference reproduces training-mode BN on that batch."""
    import keras

    result = recalibrate(model, data_of(model, x), mode="fixed-batch", batch_size=20, seed=5)
    indices = np.sort(np.random.default_rng(5).choice(70, 20, replace=False))
    batch = x[indices]
    no_dropout = keras.models.clone_model(model)
    no_dropout.set_weights(model.get_weights())
    for layer in no_dropout.layers:
        if isinstance(layer, keras.layers.Dropout):
            layer.rate = 0.0
    training = np.asarray(no_dropout(batch, training=True))
    inference = np.asarray(result.model(batch, training=False))
    np.testing.assert_allclose(inference, training, rtol=1e-4, atol=1e-4)


def test_ema_follows_keras_momentum_update(model, x):
    """One batch: moving = old * momentum + batch * (1 - momentum), as Keras training does."""
    result = recalibrate(model, data_of(model, x[:16]), mode="ema", batch_size=16)
    old, new = bn_statistics(model)["bn1"], bn_statistics(result.model)["bn1"]
    mean, var = bn_input_moments(model, x[:16])["bn1"]
    assert_close(new[0], old[0] * 0.99 + mean * 0.01, rtol=1e-5)
    assert_close(new[1], old[1] * 0.99 + var * 0.01, rtol=1e-5)


def test_trainable_false_and_renorm_are_recalibrated():
    model = residual_model(seed=2, renorm=True, frozen="bn2")
    x = calibration(model, samples=40)
    result = recalibrate(model, data_of(model, x), batch_size=16)
    observed = bn_input_moments(result.model, x)
    for layer in result.model.layers:
        if layer.name in observed:
            mean, var = observed[layer.name]
            assert_close(layer.moving_mean.numpy(), mean)
            assert_close(layer.moving_variance.numpy(), var)
            assert_close(layer.moving_stddev.numpy(), np.sqrt(var + layer.epsilon))
            assert_close(layer.renorm_stddev.numpy(), np.sqrt(var + layer.epsilon))
    assert result.model.get_layer("bn2").trainable is False


def test_nested_model_bns_are_reached():
    import keras

    model = nested_model(seed=4)
    x = calibration(model, samples=50)
    result = recalibrate(model, data_of(model, x), batch_size=8)
    names = {c.name for c in result.changes}
    assert names == {"outer_bn", "block/inner_bn", "head_bn"}
    block = result.model.get_layer("block")
    block_input = keras.Model(result.model.inputs, result.model.get_layer("outer_bn").output)([x])
    pre_bn = keras.Model(block.inputs, block.get_layer("inner_dense").output)(block_input)
    inner = block.get_layer("inner_bn")
    assert_close(inner.moving_mean.numpy(), np.asarray(pre_bn, np.float64).mean(axis=0))
    assert_close(inner.moving_variance.numpy(), np.asarray(pre_bn, np.float64).var(axis=0))
    top = bn_input_moments(result.model, x)
    assert_close(result.model.get_layer("head_bn").moving_mean.numpy(), top["head_bn"][0])


def test_shared_nested_model_pools_both_calls():
    import keras

    model = nested_model(seed=5, shared_twice=True)
    x = calibration(model, samples=30)
    result = recalibrate(model, data_of(model, x), batch_size=8)
    outer = keras.Model(result.model.inputs,
                        [result.model.get_layer("outer_bn").output, result.model.get_layer("other").output])
    a, b = outer([x])
    block = result.model.get_layer("block")
    dense = keras.Model(block.inputs, block.get_layer("inner_dense").output)
    pooled = np.concatenate([np.asarray(dense(a)), np.asarray(dense(b))]).astype(np.float64)
    inner = block.get_layer("inner_bn")
    assert_close(inner.moving_mean.numpy(), pooled.mean(axis=0))
    assert_close(inner.moving_variance.numpy(), pooled.var(axis=0))


def test_labels_give_accuracy_before_and_after(model, x):
    labels = np.random.default_rng(0).integers(0, 4, len(x))
    result = recalibrate(model, data_of(model, x, labels), mode="precise")
    assert 0 <= result.accuracy_before <= 1 and 0 <= result.accuracy_after <= 1
    assert result.report["accuracy"]["before"] == result.accuracy_before


def test_bad_arguments_are_input_errors(model, x):
    with pytest.raises(InputError, match="unknown mode"):
        recalibrate(model, data_of(model, x), mode="fast")
    with pytest.raises(InputError, match="batch size"):
        recalibrate(model, data_of(model, x), batch_size=0)
    with pytest.raises(InputError, match="memory budget"):
        parse_bytes("lots")
    assert parse_bytes("2GiB") == 2 << 30 and parse_bytes("512MB") == 512_000_000 and parse_bytes("0") == 0


def test_model_without_bn_is_refused():
    import keras

    model = keras.Sequential([keras.Input((3,)), keras.layers.Dense(2)])
    with pytest.raises(InputError, match="no BatchNormalization"):
        recalibrate(model, data_of(model, np.zeros((4, 3), np.float32)))


def test_samples_count_samples_not_values(model, x, exact):
    assert exact.samples == 70 and exact.report["samples"] == 70
    change = {c.name: c for c in exact.changes}
    assert change["bn1"].samples == 70 and change["bn1"].values == 70 * 10 * 10
    assert change["bn_dense"].values == 70


def test_a_dataset_gives_the_statistics_of_the_same_arrays(model, x, exact):
    import tensorflow as tf

    for dataset in (tf.data.Dataset.from_tensor_slices(x), tf.data.Dataset.from_tensor_slices((x, x[:, 0, 0, 0])).batch(9)):
        result = recalibrate(model, dataset, batch_size=16)
        assert result.samples == 70
        a, b = bn_statistics(exact.model), bn_statistics(result.model)
        for name in a:
            assert_close(a[name][0], b[name][0], rtol=1e-6)
            assert_close(a[name][1], b[name][1], rtol=1e-6)
    fixed = recalibrate(model, tf.data.Dataset.from_tensor_slices(x), mode="fixed-batch", batch_size=20, seed=5)
    reference = recalibrate(model, data_of(model, x), mode="fixed-batch", batch_size=20, seed=5)
    assert_close(bn_statistics(fixed.model)["bn1"][1], bn_statistics(reference.model)["bn1"][1], rtol=1e-6)


@pytest.mark.parametrize("budget_samples", [0, 25, 70, 10_000])
def test_the_frontier_cache_stays_within_the_memory_budget(model, x, exact, budget_samples):
    """Known size (arrays) and unknown size (a dataset, decided while reading): same statistics, within budget."""
    import tensorflow as tf

    first_frontier = 10 * 10 * 6 * 4  # bytes per sample: bn1's output, all that pass 2 needs
    budget = budget_samples * first_frontier
    cached = []
    for data in (data_of(model, x), tf.data.Dataset.from_tensor_slices(x).filter(lambda s: True)):
        result = recalibrate(model, data, batch_size=16, memory_budget=budget)
        assert result.details["peak_cache_bytes"] <= budget
        cached.append(result.details["cached_passes"])
        levels = result.details["levels"]
        expected = {0: 0, 25: None, 70: None, 10_000: levels - 1}[budget_samples]
        assert expected is None or result.details["cached_passes"] == expected
        if budget_samples < 70:  # the first frontier does not fit: pass 2 reads the data again
            assert result.details["cached_passes"] < levels - 1
        a, b = bn_statistics(exact.model), bn_statistics(result.model)
        for name in a:
            assert_close(a[name][0], b[name][0], rtol=1e-6)
            assert_close(a[name][1], b[name][1], rtol=1e-6)
    assert cached[0] == cached[1]  # the size known in advance or found while reading: the same decisions


def test_doubtful_statistics_warn_and_strict_refuses(model, x):
    from bnfreeze.errors import ParityError

    one = recalibrate(model, data_of(model, x[:1]), batch_size=16)
    kinds = {w["kind"] for w in one.warnings}
    assert "few_samples" in kinds and "extreme_change" in kinds  # bn_dense: variance of one sample is 0
    assert "only 1 calibration sample" in one.report["warnings"][0]["message"]
    extreme = [w for w in one.warnings if w["bn"] == "bn_dense"]
    assert extreme and "variance ratio (new+eps)/(old+eps) down to" in extreme[0]["message"]
    small = recalibrate(model, data_of(model, x[:10]), mode="fixed-batch", batch_size=16)
    assert small.warnings[0]["kind"] == "small_fixed_batch" and "10 samples" in small.warnings[0]["message"]
    with pytest.raises(ParityError, match="--strict.*only 1 calibration sample"):
        recalibrate(model, data_of(model, x[:1]), batch_size=16, strict=True)


def test_no_warning_on_plenty_of_ordinary_data():
    model = residual_model(seed=1)
    # data like what the BNs already expect: the model's own moving statistics are then close
    x = calibration(model, samples=200, shift=0.0, scale=1.0)
    once = recalibrate(model, data_of(model, x), batch_size=50)
    again = recalibrate(once.model, data_of(model, calibration(model, samples=200, seed=9, shift=0.0, scale=1.0)))
    assert again.warnings == []


def test_data_that_turns_out_empty_is_an_input_error(model, x):
    import tensorflow as tf

    empty = tf.data.Dataset.from_tensor_slices(x).filter(lambda s: False)  # size unknown until read
    for mode in ("exact", "precise"):
        with pytest.raises(InputError, match="holds no samples"):
            recalibrate(model, empty, mode=mode)


def _masked_sequences():
    import keras
    from keras import layers

    x_in = keras.Input((6, 4), name="steps")
    x = layers.Masking(0.0)(x_in)
    x = layers.Dense(3, name="dense")(x)
    x = layers.BatchNormalization(name="bn")(x)
    model = keras.Model(x_in, layers.GlobalAveragePooling1D()(x))
    rng = np.random.default_rng(3)
    x = (rng.standard_normal((40, 6, 4)) * 2 + 1).astype("float32")
    x[:, 4:] = 0.0  # padding: masked steps
    x[::3, 1] = 0.0
    return model, x


@pytest.mark.parametrize("mode", ["exact", "precise", "fixed-batch"])
def test_a_masked_bn_measures_the_unmasked_steps_as_keras_training_does(mode):
    """Keras's training-mode BN takes its moments over the steps its mask keeps (``BatchNormalization._moments``);
    the padded steps (here the Dense bias) must not pull the statistics."""
    import keras

    model, x = _masked_sequences()
    result = recalibrate(model, data_of(model, x), mode=mode, batch_size=40 if mode == "fixed-batch" else 7)
    twin = keras.models.clone_model(model)
    twin.set_weights(model.get_weights())
    bn = twin.get_layer("bn")
    bn.momentum = 0.0
    twin(x, training=True)  # moving statistics := Keras's masked batch statistics of all 40 samples
    mean, var = bn_statistics(result.model)["bn"]
    assert_close(mean, bn.moving_mean.numpy(), rtol=1e-4)
    assert_close(var, bn.moving_variance.numpy(), rtol=1e-4)


@pytest.mark.parametrize("mode", ["exact", "precise", "ema", "fixed-batch"])
def test_a_bn_whose_mask_removes_every_position_is_bad_input(mode):
    model, x = _masked_sequences()
    with pytest.raises(InputError, match="bn: no value of the calibration data reaches it"):
        recalibrate(model, data_of(model, np.zeros_like(x)), mode=mode, batch_size=8)


@pytest.mark.parametrize("mode", ["exact", "precise"])
def test_a_statistic_that_overflows_a_float16_variable_is_refused(mode):
    # before: moving_variance = inf was written (exit 0) and the channel's output became 0
    import keras
    from keras import layers

    keras.utils.set_random_seed(0)  # Dense's initial kernel decides the variance: seeded, so it always overflows
    inputs = keras.Input((4,))
    x = layers.BatchNormalization(dtype="float16", name="bn")(layers.Dense(3, dtype="float16", name="d")(inputs))
    model = keras.Model(inputs, x)
    x = (np.random.default_rng(0).standard_normal((64, 4)) * 1000).astype("float32")
    with pytest.raises(InputError, match=r"^<test>: bn: the moving variance of channel \d .* does not fit its float16 "
                                         "variable"):
        recalibrate(model, data_of(model, x), mode=mode)


def test_an_ema_statistic_that_overflows_float32_is_refused():
    # before: EMA's float32 update gave moving_variance = inf, written with exit 0 (the channel's output became 0)
    import keras
    from keras import layers

    inputs = keras.Input((4,))
    model = keras.Model(inputs, layers.BatchNormalization(name="bn")(layers.Dense(3, name="d")(inputs)))
    x = (np.random.default_rng(0).standard_normal((64, 4)) * 1e25).astype("float32")
    with pytest.raises(InputError, match=r"^<test>: bn: the moving variance of channel \d .* is inf in float32 "
                                         "arithmetic"):
        recalibrate(model, data_of(model, x), mode="ema")


def _doubling_bn_class():
    import keras

    @keras.saving.register_keras_serializable(package="test_recalibrate")
    class DoublingBN(keras.layers.BatchNormalization):
        """Normalises twice its input: statistics of the input itself would be wrong for it."""

        def call(self, inputs, training=None, mask=None):
            return super().call(inputs * 2.0, training=training, mask=mask)

    return DoublingBN


@pytest.mark.parametrize("mode", ["exact", "precise", "ema", "fixed-batch"])
def test_a_bn_subclass_keeps_its_statistics_and_runs_its_own_call(mode):
    """A subclass may normalise something else than its input: it is not measured, and says why.

    The Keras BN after it is measured on what the subclass really computes.
    """
    import keras

    rng = np.random.default_rng(4)
    inputs = keras.Input((6, 6, 3))
    h = keras.layers.Conv2D(4, 3, name="conv")(inputs)
    h = _doubling_bn_class()(name="doubling")(h)
    h = keras.layers.BatchNormalization(name="bn")(h)
    model = keras.Model(inputs, keras.layers.Dense(2)(keras.layers.Flatten()(h)))
    for layer in (model.get_layer("doubling"), model.get_layer("bn")):
        layer.moving_mean.assign(rng.normal(0, 0.5, 4).astype(np.float32))
        layer.moving_variance.assign(rng.uniform(0.2, 2, 4).astype(np.float32))
    x = rng.normal(0.7, 1.8, (40, 6, 6, 3)).astype(np.float32)
    before = bn_statistics(model)["doubling"]
    result = recalibrate(model, data_of(model, x), mode=mode, batch_size=40)
    after = bn_statistics(result.model)
    np.testing.assert_array_equal(after["doubling"][0], before[0])
    np.testing.assert_array_equal(after["doubling"][1], before[1])
    assert [c.name for c in result.changes] == ["bn"]
    [kept] = result.report["kept"]
    assert kept["name"] == "doubling"
    assert kept["reason"].startswith("doubling is a subclass of BatchNormalization (")
    assert kept["reason"].endswith("DoublingBN); its call may differ")
    if mode == "exact":
        probe = keras.Model(model.inputs, model.get_layer("bn").input)
        observed = np.asarray(probe(x, training=False), np.float64)
        assert_close(after["bn"][0], observed.mean(axis=(0, 1, 2)))
        assert_close(after["bn"][1], observed.var(axis=(0, 1, 2)))


def test_a_model_whose_only_bn_is_a_subclass_is_refused_with_the_reason():
    import keras

    model = keras.Sequential([keras.Input((3,)), keras.layers.Dense(4), _doubling_bn_class()(name="doubling")])
    with pytest.raises(InputError, match="no BatchNormalization layer bnfreeze can reach; doubling is a subclass"):
        recalibrate(model, data_of(model, np.ones((4, 3), np.float32)))


def test_a_model_without_an_order_is_refused_naming_its_file(tmp_path):
    import keras
    from keras import layers

    from bnfreeze.io.models import load_model

    block = keras.Sequential([keras.Input((4,)), layers.Dense(4), layers.BatchNormalization(name="loop_bn")],
                             name="block")
    x_in = keras.Input((4,))
    path = tmp_path / "loop.keras"
    keras.Model(x_in, block(block(x_in))).save(path)
    model = load_model(path)
    with pytest.raises(InputError, match=r"^\S*loop\.keras: a BatchNormalization layer reads its own output"):
        recalibrate(model, data_of(model, np.ones((4, 4), np.float32)))


@pytest.mark.parametrize("mode", ["exact", "precise"])
def test_a_nested_functional_subclass_with_its_own_call_is_measured_through_that_call(mode):
    # once its graph was inlined and its call ignored (bn measured on what the graph, not the model, computes);
    # then it was kept whole; now its call is traced (as fold reads it) and both BNs are measured through it
    import keras
    from keras import layers

    @keras.saving.register_keras_serializable(package="test_recalibrate")
    class Doubled(keras.Model):  # built functionally, so Keras makes it a Functional subclass
        def call(self, inputs, training=None):
            return 2.0 * super().call(inputs, training=training) + 3.0

    keras.utils.set_random_seed(0)
    inner_in = keras.Input((4,))
    inner = Doubled(inner_in, layers.BatchNormalization(name="inner_bn")(layers.Dense(4, name="d")(inner_in)),
                    name="doubled")
    inputs = keras.Input((4,))
    model = keras.Model(inputs, layers.BatchNormalization(name="bn")(inner(inputs)))
    x = np.random.default_rng(0).standard_normal((64, 4)).astype("float32")
    result = recalibrate(model, data_of(model, x), mode=mode)
    assert sorted(c.name for c in result.changes) == ["bn", "doubled/inner_bn"]
    assert result.kept == []
    doubled = result.model.get_layer("doubled")
    assert type(doubled) is Doubled
    if mode == "exact":
        dense = np.asarray(doubled.get_layer("d")(x), np.float64)
        assert_close(doubled.get_layer("inner_bn").moving_mean.numpy(), dense.mean(axis=0))
        assert_close(doubled.get_layer("inner_bn").moving_variance.numpy(), dense.var(axis=0))
        observed = np.asarray(doubled(x, training=False), np.float64)  # with its new statistics, through its call
        assert_close(bn_statistics(result.model)["bn"][0], observed.mean(axis=0))
        assert_close(bn_statistics(result.model)["bn"][1], observed.var(axis=0))


def _time_distributed_model(axis: int, seed: int = 0):
    import keras
    from keras import layers

    rng = np.random.default_rng(seed)
    inputs = keras.Input((5, 6, 6, 3))
    h = layers.TimeDistributed(layers.Conv2D(4, 3))(inputs)
    h = layers.TimeDistributed(layers.BatchNormalization(axis=axis, name="tdbn"), name="td")(h)
    h = layers.TimeDistributed(layers.Conv2D(4, 1))(layers.ReLU()(h))
    model = keras.Model(inputs, layers.BatchNormalization(name="bn")(h))
    for layer in (model.get_layer("td").layer, model.get_layer("bn")):
        layer.moving_mean.assign(rng.normal(0, 0.5, 4).astype(np.float32))
        layer.moving_variance.assign(rng.uniform(0.2, 2, 4).astype(np.float32))
    return model, rng.normal(0.7, 1.8, (40, 5, 6, 6, 3)).astype(np.float32)


@pytest.mark.parametrize("axis", [-1, 3, 1])
def test_a_time_distributed_bn_is_measured_over_batch_time_and_positions_in_exact_mode(axis):
    """At inference TimeDistributed applies one BN, with one set of statistics, to every time step."""
    import keras

    model, x = _time_distributed_model(axis)
    result = recalibrate(model, data_of(model, x), batch_size=16)
    assert sorted(c.name for c in result.changes) == ["bn", "td/tdbn"] and result.report["kept"] == []
    probe = keras.Model(result.model.inputs, [result.model.get_layer("td").input, result.model.get_layer("bn").input])
    inner, outer = (np.asarray(t, np.float64) for t in probe(x, training=False))
    for layer, value, channel_axis in ((result.model.get_layer("td").layer, inner, axis % 4 + 1),
                                       (result.model.get_layer("bn"), outer, 4)):
        axes = tuple(i for i in range(5) if i != channel_axis)
        assert_close(layer.moving_mean.numpy(), value.mean(axis=axes))
        assert_close(layer.moving_variance.numpy(), value.var(axis=axes))


@pytest.mark.parametrize("mode", ["precise", "ema", "fixed-batch"])
def test_one_pass_modes_keep_a_time_distributed_bn_with_the_reason(mode):
    model, x = _time_distributed_model(-1)
    before = model.get_layer("td").layer.moving_mean.numpy().copy()
    result = recalibrate(model, data_of(model, x), mode=mode, batch_size=16)
    assert [c.name for c in result.changes] == ["bn"]
    [kept] = result.report["kept"]
    assert kept["name"] == "td/tdbn" and "once per time step" in kept["reason"] and "exact recalibration measures it" in kept["reason"]
    np.testing.assert_array_equal(result.model.get_layer("td").layer.moving_mean.numpy(), before)


def test_a_time_distributed_bn_on_the_merged_axis_is_kept_and_alone_is_refused():
    import keras
    from keras import layers

    inputs = keras.Input(batch_shape=(8, 5, 3))  # the merged axis needs a known size
    h = layers.TimeDistributed(layers.BatchNormalization(axis=0, name="tdbn"), name="td")(layers.Dense(3)(inputs))
    model = keras.Model(inputs, h)
    with pytest.raises(InputError, match="td/tdbn: normalizes the batch axis of each time step, not a channel axis"):
        recalibrate(model, data_of(model, np.ones((8, 5, 3), np.float32)))


def _two_bn_block(name: str, weight_outside: bool):
    """A user's block with its own ``call``: Dense -> BN -> relu -> BN. With ``weight_outside`` it also
    multiplies by a weight of its own (a variable used outside any layer: bnfreeze cannot trace it)."""
    import keras

    class Block(keras.layers.Layer):
        def __init__(self, **kwargs):
            super().__init__(**kwargs)
            self.dense = keras.layers.Dense(3)
            self.first = keras.layers.BatchNormalization(name="first")
            self.second = keras.layers.BatchNormalization(name="second")

        def build(self, input_shape):
            self.dense.build(input_shape)
            self.first.build((None, 3))
            self.second.build((None, 3))
            if weight_outside:
                self.scale = self.add_weight(shape=(3,), initializer="ones", name="scale")

        def call(self, x, training=None):
            h = keras.ops.relu(self.first(self.dense(x), training=training))
            if weight_outside:
                h = h * self.scale
            return self.second(h, training=training)

    Block.__name__ = Block.__qualname__ = name
    return keras.saving.register_keras_serializable(package="test_recalibrate")(Block)


def _normalized(h, layer):
    gamma, beta = layer.gamma.numpy().astype(np.float64), layer.beta.numpy().astype(np.float64)
    mean, var = layer.moving_mean.numpy().astype(np.float64), layer.moving_variance.numpy().astype(np.float64)
    return gamma * (h - mean) / np.sqrt(var + layer.epsilon) + beta


def test_bns_inside_a_users_own_block_are_recalibrated_exactly_and_the_block_stays_the_users():
    """The block is traced (as fold reads it), so its BNs are measured; the statistics go into the user's own
    Block. Checked against NumPy: each BN's stored moments equal those of its inference-time input, in order."""
    import keras

    block_cls = _two_bn_block("TracedBlock", weight_outside=False)
    inputs = keras.Input((4,))
    model = keras.Model(inputs, keras.layers.BatchNormalization(name="bn")(block_cls(name="block")(inputs)))
    x = np.random.default_rng(0).normal(1, 2, (37, 4)).astype(np.float32)  # a ragged last batch of 16
    result = recalibrate(model, data_of(model, x), batch_size=16)
    assert [c.name for c in result.changes] == ["block/first", "block/second", "bn"]
    assert result.report["kept"] == [] and result.report["skipped"] == []
    assert [(n["layer"], n["action"]) for n in result.report["structure"]] == [("block", "traced")]
    block = result.model.get_layer("block")
    assert type(block) is block_cls  # the user's class, not bnfreeze's reading of it
    d = x.astype(np.float64) @ block.dense.kernel.numpy() + block.dense.bias.numpy()
    h = np.maximum(_normalized(d, block.first), 0.0)
    out = _normalized(h, block.second)
    for layer, seen in ((block.first, d), (block.second, h), (result.model.get_layer("bn"), out)):
        assert_close(layer.moving_mean.numpy(), seen.mean(axis=0))
        assert_close(layer.moving_variance.numpy(), seen.var(axis=0))
    # the input model is untouched
    assert np.allclose(model.get_layer("block").first.moving_mean.numpy(), 0.0)


def test_each_bn_inside_a_layer_bnfreeze_cannot_look_into_is_listed_with_the_reason():
    import keras

    block_cls = _two_bn_block("OpaqueBlock", weight_outside=True)
    inputs = keras.Input((4,))
    model = keras.Model(inputs, keras.layers.BatchNormalization(name="bn")(block_cls(name="block")(inputs)))
    result = recalibrate(model, data_of(model, np.random.default_rng(0).normal(1, 2, (32, 4)).astype(np.float32)))
    assert [c.name for c in result.changes] == ["bn"]
    assert result.report["skipped"] == ["block"]
    assert [k["name"] for k in result.report["kept"]] == ["block/first", "block/second"]
    for kept in result.report["kept"]:  # the reason names the class and what stopped the trace
        assert "inside block" in kept["reason"] and "OpaqueBlock" in kept["reason"]
        assert "outside a layer" in kept["reason"], kept["reason"]
    assert [(n["layer"], n["action"]) for n in result.report["structure"]] == [("block", "opaque")]
    block = result.model.get_layer("block")
    assert np.allclose(block.first.moving_mean.numpy(), 0.0) and np.allclose(block.first.moving_variance, 1.0)


def test_exact_sees_what_an_adapted_normalization_computes():
    """The statistics are measured on the model's own preprocessing: an adapted Normalization layer
    (mean and variance derived from its variables when Keras loads it) in front of the BN."""
    import keras
    from keras import layers

    rng = np.random.default_rng(4)
    norm = layers.Normalization()
    norm.adapt(rng.normal(3.0, 2.0, size=(64, 3)).astype("float32"))
    a = keras.Input((3,))
    model = keras.Model(a, layers.BatchNormalization(name="bn")(layers.Dense(4)(norm(a))))
    x = rng.normal(3.0, 2.0, size=(96, 3)).astype("float32")
    result = recalibrate(model, data_of(model, x), batch_size=16)
    bn_input = np.asarray(keras.Model(model.inputs, model.get_layer("bn").input)(x), np.float64)
    stored = bn_statistics(result.model)["bn"]
    assert_close(stored[0], bn_input.mean(axis=0))
    assert_close(stored[1], bn_input.var(axis=0))


def test_a_numpy_array_gives_the_statistics_of_the_same_samples_as_a_loader(model, x, exact):
    by_array = recalibrate(model, x, batch_size=16)
    for name, (mean, var) in bn_statistics(exact.model).items():
        np.testing.assert_allclose(bn_statistics(by_array.model)[name][0], mean, rtol=1e-6, atol=1e-7)
        np.testing.assert_allclose(bn_statistics(by_array.model)[name][1], var, rtol=1e-6)


def test_a_subclassed_model_and_a_block_whose_config_has_no_name_are_recalibrated(tmp_path):
    """A ``keras.Model`` subclass with its own call records no inputs (its inputs come from its plain
    reading), and a block whose ``get_config`` leaves its name out is rebuilt under its own name (it was
    exit 3: 'no such layer blk_1'); both keep their classes and names, with exact statistics."""
    import keras
    from keras import layers

    @keras.saving.register_keras_serializable(package="test_recalibrate")
    class Net(keras.Model):
        def __init__(self, **kwargs):
            super().__init__(**kwargs)
            self.conv = layers.Conv2D(4, 3)
            self.norm = layers.BatchNormalization()

        def call(self, x, training=False):
            return self.norm(self.conv(x), training=training)

    @keras.saving.register_keras_serializable(package="test_recalibrate")
    class Nameless(layers.Layer):  # Keras's own get_config, which leaves a subclass's name out here
        def __init__(self, **kwargs):
            super().__init__(**kwargs)
            self.conv = layers.Conv2D(4, 3)
            self.norm = layers.BatchNormalization()

        def call(self, x, training=None):
            return self.norm(self.conv(x), training=training)

    x = np.random.default_rng(2).normal(0.5, 2.0, (24, 8, 8, 3)).astype(np.float32)
    net = Net(name="net")
    net(x[:1])
    inputs = keras.Input((8, 8, 3))
    functional = keras.Model(inputs, Nameless(name="blk")(inputs))
    for model, block in ((net, net), (functional, functional.get_layer("blk"))):
        result = recalibrate(model, x, batch_size=5)
        assert len(result.changes) == 1 and result.kept == []
        twin = result.model if block is model else result.model.get_layer("blk")
        assert type(twin) is type(block) and twin.name == block.name
        conv = np.asarray(twin.conv(x), np.float64).reshape(-1, 4)
        assert_close(twin.norm.moving_mean.numpy(), conv.mean(axis=0))
        assert_close(twin.norm.moving_variance.numpy(), conv.var(axis=0))


def test_a_label_beyond_the_models_classes_is_refused_naming_the_data(model, x, tmp_path):
    """A label 7 for three classes scored as wrong everywhere: an accuracy that means nothing."""
    from bnfreeze.recalibration.report import accuracy

    classes = int(model.outputs[0].shape[-1])
    path = tmp_path / "eval.npz"
    y = np.zeros(len(x), np.int64)
    y[3] = classes + 4
    np.savez(path, x=x, y=y)
    from bnfreeze.io.sources import open_data

    data = open_data(path, input_specs(model))
    with pytest.raises(InputError, match=rf"^{path}: a label is {classes + 4}, but the model's first output has "
                                         rf"{classes} classes"):
        accuracy(model, data, batch_size=8)
