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


def test_snr_and_cosine():
    ref = np.array([[3.0, 4.0], [0.0, 5.0]])
    same = compare_output("y", ref, ref)
    assert same.snr_db == float("inf") and same.cosine == pytest.approx(1.0) and same.worst_sample is None
    noisy = compare_output("y", ref, ref + np.array([[0.5, 0.0], [0.0, 0.0]]))
    # 10*log10(sum ref^2 / sum err^2) = 10*log10(50 / 0.25)
    assert noisy.snr_db == pytest.approx(10 * np.log10(200.0))
    cand = ref + np.array([[0.5, 0.0], [0.0, 0.0]])
    expected_cos = float(np.sum(ref * cand) / np.linalg.norm(ref) / np.linalg.norm(cand))
    assert noisy.cosine == pytest.approx(expected_cos)
    assert noisy.worst_sample == 0 and noisy.samples == 2


def test_top1_check_judges_classes_not_values():
    ref = np.array([[0.1, 0.9], [0.8, 0.2], [0.3, 0.7], [0.6, 0.4]])
    cand = ref + 0.05  # every value off, every class the same
    assert not compare_output("p", ref, cand).passed
    assert compare_output("p", ref, cand, Tolerance(check="top1", min_top1=1.0)).passed
    swapped = cand.copy()
    swapped[2] = [0.9, 0.1]
    result = compare_output("p", ref, swapped, Tolerance(check="top1", min_top1=0.8))
    assert result.top1_agreement == 0.75 and not result.passed and "0.75" in result.reason
    assert result.worst_sample == 2  # the sample whose class changed
    assert compare_output("p", ref, swapped, Tolerance(check="top1", min_top1=0.75)).passed


def test_top1_check_on_an_output_without_classes_fails_with_the_reason():
    ref = np.ones((3, 4, 4))
    result = compare_output("map", ref, ref, Tolerance(check="top1"))
    assert not result.passed and "(batch, classes)" in result.reason


def test_snr_check_and_combined_checks():
    rng = np.random.default_rng(0)
    ref = rng.standard_normal((50, 10))
    cand = ref * 1.01  # 40 dB
    assert compare_output("y", ref, cand, Tolerance(check="snr", min_snr=39)).passed
    assert not compare_output("y", ref, cand, Tolerance(check="snr", min_snr=41)).passed
    both = Tolerance(check="top1+snr", min_top1=1.0, min_snr=41)
    result = compare_output("y", ref, cand, both)
    assert not result.passed and "snr" in result.reason and "top-1" not in result.reason
    assert Tolerance(check=["top1", "snr"]).checks == ("top1", "snr")


def test_batches_accumulate_to_the_one_shot_result():
    from bnfreeze.compare import Accumulator

    rng = np.random.default_rng(1)
    ref = rng.standard_normal((12, 5))
    cand = ref + rng.normal(0, 1e-3, ref.shape)
    cand[7, 2] += 0.5
    whole = compare_output("y", ref, cand, Tolerance(check="snr"))
    accumulator = Accumulator("y", Tolerance(check="snr"))
    for start in range(0, 12, 5):
        accumulator.add(ref[start:start + 5], cand[start:start + 5], start)
    streamed = accumulator.result()
    for key in ("max_abs", "mean_abs", "snr_db", "cosine", "top1_agreement", "samples", "worst_sample", "p99_abs"):
        assert getattr(streamed, key) == pytest.approx(getattr(whole, key)), key
    assert streamed.worst_sample == 7


def test_option_combinations_are_checked():
    from bnfreeze.compare import criteria

    assert criteria(check=("top1",)).top1_limit == 0.99
    assert criteria(check=("snr",)).snr_limit == 30
    with pytest.raises(InputError, match="--min-top1 applies to --check top1"):
        criteria(min_top1=0.9)
    with pytest.raises(InputError, match="--min-snr applies to --check snr"):
        criteria(check=("top1",), min_snr=20)
    with pytest.raises(InputError, match="--atol applies to --check max or elementwise"):
        criteria(atol=1e-3, check=("top1",))
    with pytest.raises(InputError, match="choose one"):
        criteria(check=("max", "elementwise"))
    with pytest.raises(InputError, match="between 0 and 1"):
        criteria(check=("top1",), min_top1=99)
    combined = criteria(atol=1e-3, check=("max", "top1"), min_top1=0.9)
    assert combined.checks == ("max", "top1") and combined.abs_limit == 1e-3


def test_the_failure_line_and_the_worst_sample_name_the_same_sample():
    """Sample 1 fails with the largest error; sample 0 fails by more relative to its small magnitude.
    The row's worst sample and the failure line must both be sample 1, with sample 1's numbers."""
    from bnfreeze.compare import Accumulator

    accumulator = Accumulator("y", Tolerance(atol=1e-5, rtol=1e-4))
    reference = [np.array([[0.01, 0.0]]), np.array([[100.0, 0.0]]), np.array([[1.0, 0.0]])]
    candidate = [np.array([[0.02, 0.0]]), np.array([[100.5, 0.0]]), np.array([[1.0, 0.0]])]
    for index, (ref, cand) in enumerate(zip(reference, candidate)):
        accumulator.add(ref, cand, start=index)
    result = accumulator.result()
    assert not result.passed and result.worst_sample == 1
    assert result.reason.startswith("sample 1: max_abs 0.5 > atol 1e-05 and max_rel 0.005 > rtol 0.0001")
    assert result.max_abs == pytest.approx(0.5)
