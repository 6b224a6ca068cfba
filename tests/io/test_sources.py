"""bnfreeze.io.sources.as_data: what the Python API accepts as data, and one clear refusal for the rest."""

import numpy as np
import pytest

from bnfreeze.errors import InputError
from bnfreeze.io.signature import input_specs
from bnfreeze.io.sources import as_data


@pytest.fixture(scope="module")
def two_inputs():
    import keras

    a, b = keras.Input((4,), name="a"), keras.Input((3,), name="b")
    return keras.Model([a, b], keras.layers.Concatenate()([a, b]))


def _rows(data) -> dict:
    batches = list(data.batches(4))
    return {name: np.concatenate([batch[name] for batch in batches]) for name in batches[0]}


def test_a_list_in_input_order_and_a_dict_by_name_give_the_same_samples(two_inputs):
    specs = input_specs(two_inputs)
    rng = np.random.default_rng(0)
    x1, x2 = rng.normal(size=(10, 4)).astype("float32"), rng.normal(size=(10, 3)).astype("float32")
    by_list, by_dict = _rows(as_data([x1, x2], specs)), _rows(as_data({"b": x2, "a": x1}, specs))
    for rows in (by_list, by_dict):
        np.testing.assert_array_equal(rows["a"], x1)
        np.testing.assert_array_equal(rows["b"], x2)


@pytest.mark.parametrize("data,message", [
    (np.zeros((5, 4), "float32"), "the model has 2 inputs \\(a, b\\)"),
    ([np.zeros((5, 4), "float32")], "1 arrays for a model with 2 inputs"),
    ({"a": np.zeros((5, 4), "float32")}, "no array for the model input b"),
    ("calib.npy", "got str; give bnfreeze.open_data"),
])
def test_other_data_is_refused_saying_what_is_accepted(two_inputs, data, message):
    with pytest.raises(InputError, match=message):
        as_data(data, input_specs(two_inputs))
