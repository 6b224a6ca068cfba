"""The shipped example model and data are what the README says: scikit-learn's digits, held out as stated."""

import numpy as np
from sklearn.datasets import load_digits
from sklearn.model_selection import train_test_split

import bnfreeze
from bnfreeze.parity import run_keras


def _split():
    digits = load_digits()
    x = (digits.images / 16.0).astype("float32")[..., np.newaxis]
    return train_test_split(x, digits.target, test_size=0.2, random_state=0, stratify=digits.target)


def test_shipped_data_is_the_held_out_digits_split(repo):
    x_train, x_test, _y_train, y_test = _split()
    shipped = np.load(repo / "models" / "digits_test.npz")
    np.testing.assert_array_equal(shipped["x"], x_test)
    np.testing.assert_array_equal(shipped["y"], y_test)
    calib = np.load(repo / "models" / "digits_calib.npy")
    train_rows = {row.tobytes() for row in x_train}
    assert calib.shape == (256, 8, 8, 1) and all(row.tobytes() in train_rows for row in calib)


def test_example_model_accuracy_on_the_held_out_digits(repo):
    _x_train, x_test, _y_train, y_test = _split()
    model = bnfreeze.load_model(repo / "models" / "digits_cnn.keras")
    accuracy = float(np.mean(run_keras(model, [x_test])[0].argmax(-1) == y_test))
    assert accuracy >= 0.98, accuracy  # README: 0.992
