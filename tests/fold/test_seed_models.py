"""The two example models of the seed article (../shared/seed/) as acceptance tests."""

import keras
from keras import layers
from support import assert_parity, bn_count, randomize_bn, randomize_weights

import bnfreeze


def seed_mlp():
    return keras.Sequential(
        [
            keras.Input((32,)),
            layers.Dense(64),
            layers.BatchNormalization(),
            layers.Activation("relu"),
            layers.Dense(10),
            layers.Activation("softmax"),
        ]
    )


def seed_cnn():
    return keras.Sequential(
        [
            keras.Input((32, 32, 3)),
            layers.Conv2D(32, (3, 3), activation="relu"),
            layers.BatchNormalization(),
            layers.MaxPooling2D((2, 2)),
            layers.Conv2D(64, (3, 3), activation="relu"),
            layers.BatchNormalization(),
            layers.MaxPooling2D((2, 2)),
            layers.Flatten(),
            layers.Dense(64, activation="relu"),
            layers.BatchNormalization(),
            layers.Dense(10, activation="softmax"),
        ]
    )


def _fold(model, negative):
    randomize_weights(model)
    randomize_bn(model, seed=7, negative=negative)
    result = bnfreeze.fold(model)
    assert_parity(model, result.model)
    return result


def test_mlp_folds_completely():
    model = seed_mlp()
    result = _fold(model, negative=True)
    assert bn_count(result.model) == 0
    assert result.report["folded"][0]["direction"] == "backward"


def test_cnn_with_positive_gammas_folds_completely():
    model = seed_cnn()
    result = _fold(model, negative=False)
    assert bn_count(result.model) == 0
    assert [f["direction"] for f in result.report["folded"]] == ["forward"] * 3
    assert [len(f["through"]) for f in result.report["folded"]] == [1, 2, 0]


def test_cnn_with_negative_gammas_keeps_the_bns_before_max_pooling():
    model = seed_cnn()
    result = _fold(model, negative=True)
    assert bn_count(result.model) == 2
    kept = result.report["kept"]
    assert len(kept) == 2
    for entry in kept:
        assert "applies relu before the BN" in entry["reason"]
        assert "does not commute with max pooling" in entry["reason"]
    assert len(result.report["folded"]) == 1
    assert result.report["folded"][0]["into"] == model.layers[-1].name
