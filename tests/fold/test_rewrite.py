"""The rewritten model: layers the fold leaves alone keep their whole state, not only their variables."""

import keras
import numpy as np
from keras import layers
from support import assert_parity, randomize_bn

from bnfreeze.fold.rewrite import copy_model


def _adapted_normalization_model():
    """Normalization adapted to data far from (0, 1): its mean and variance come from its variables
    through ``finalize_state``, which only Keras's loading runs."""
    norm = layers.Normalization()
    norm.adapt(np.random.default_rng(0).normal(3.0, 2.0, size=(64, 3)).astype("float32"))
    a = keras.Input((3,))
    x = layers.Dense(4)(norm(a))
    model = keras.Model(a, layers.BatchNormalization()(x))
    randomize_bn(model)
    return model


def _adapted_lookup_model():
    """StringLookup adapted to a vocabulary: the table is no variable (Keras saves it as an asset)."""
    lookup = layers.StringLookup()
    lookup.adapt(np.array(["the", "model", "folds", "alpha"]))
    a = keras.Input((3,), dtype="string")
    x = layers.Embedding(lookup.vocabulary_size(), 4)(lookup(a))
    model = keras.Model(a, layers.BatchNormalization()(layers.Dense(4)(x)))
    randomize_bn(model)
    return model


def test_an_adapted_normalization_keeps_its_mean_and_variance():
    model = _adapted_normalization_model()
    copy = copy_model(model)
    x = np.random.default_rng(1).normal(3.0, 2.0, size=(5, 3)).astype("float32")
    np.testing.assert_array_equal(np.asarray(copy(x, training=False)), np.asarray(model(x, training=False)))


def test_an_adapted_lookup_keeps_its_vocabulary():
    model = _adapted_lookup_model()
    copy = copy_model(model)
    x = np.array([["the", "zebra", "folds"], ["alpha", "model", "the"]])
    np.testing.assert_array_equal(np.asarray(copy(x, training=False)), np.asarray(model(x, training=False)))


def test_fold_of_a_model_with_adapted_preprocessing_is_exact():
    import bnfreeze

    model = _adapted_normalization_model()
    result = bnfreeze.fold(model)
    assert len(result.report["folded"]) == 1
    assert_parity(model, result.model)
