import numpy as np
import pytest

from bnfreeze.compare import Tolerance, compare_output
from bnfreeze.errors import InputError


def test_passes_within_atol():
    ref = np.zeros((2, 3))
    assert compare_output("y", ref, ref + 5e-6).passed
    assert not compare_output("y", ref, ref + 2e-5).passed


def test_rtol_is_relative_to_the_largest_reference_magnitude():
    ref = np.array([[100.0, 0.001]])
    cand = ref + np.array([[0.005, 0.005]])
    result = compare_output("y", ref, cand)
    assert result.max_abs == pytest.approx(0.005)
    assert result.max_rel == pytest.approx(5e-5)
    assert result.passed
    # the elementwise rule fails the small element
    assert not compare_output("y", ref, cand, Tolerance(check="elementwise")).passed


def test_nan_fails_and_shape_mismatch_fails():
    ref = np.ones((2, 2))
    bad = ref.copy()
    bad[0, 0] = np.nan
    result = compare_output("y", ref, bad)
    assert not result.passed and not result.finite
    mismatch = compare_output("y", ref, np.ones((2, 3)))
    assert not mismatch.passed and "shape" in mismatch.reason


def test_top1_agreement_for_classifier_outputs():
    ref = np.array([[0.1, 0.9], [0.8, 0.2]])
    cand = np.array([[0.9, 0.1], [0.8, 0.2]])
    assert compare_output("p", ref, cand).top1_agreement == 0.5
    assert compare_output("p", ref[:, :1], cand[:, :1]).top1_agreement is None


def test_bad_tolerances_are_input_errors():
    with pytest.raises(InputError):
        Tolerance(atol=-1)
    with pytest.raises(InputError):
        Tolerance(check="loose")
