"""``bnfreeze quantize`` on a pre-activation network: which pre-activation BNs it folds, and int8 accuracy.

quantize folds with :data:`bnfreeze.fold.rules.INT8_RULES`: a pre-activation
BN folds where its shift moves into an earlier bias (nothing of it stays);
one whose shift would stay as an add is left to the converter (an int8
multiply and add), with the reason in the report — measured
(scripts/bench_preactivation_int8.py), folding those costs int8 SNR. The
int8 accuracy on held-out digits is no worse than the converter's alone.
"""

from pathlib import Path

import keras
import pytest

import bnfreeze
from bnfreeze.io.arrays import ArrayData
from bnfreeze.io.signature import input_specs


@pytest.fixture(scope="module")
def trained(repo):
    import sys

    sys.path.insert(0, str(repo / "scripts"))
    from bench_preactivation_int8 import preact_resnet
    from make_example_model import load_digits_split

    x_train, x_test, y_train, y_test = load_digits_split(0)
    keras.utils.set_random_seed(2)
    model = preact_resnet()
    model.compile(optimizer=keras.optimizers.Adam(3e-3), loss="sparse_categorical_crossentropy")
    model.fit(x_train, y_train, epochs=15, batch_size=32, verbose=0)  # 0.99 on the held-out digits
    specs = input_specs(model)
    calibration = ArrayData(Path("calib"), {specs[0].name: x_train[:256]}, specs)
    evaluation = ArrayData(Path("test"), {specs[0].name: x_test}, specs, y_test)
    return model, calibration, evaluation


def test_quantize_folds_the_pre_activation_bns_that_leave_nothing(trained, tmp_path):
    model, calibration, evaluation = trained
    results = {}
    for fold in (False, True):
        results[fold] = bnfreeze.quantize(model, calibration, tflite=tmp_path / f"{fold}.tflite", fold=fold,
                                          eval_data=evaluation, min_top1=0.0, force=True)
    report = results[True].report
    folded = {f["bn"]: f for f in report["fold"]["folded"]}
    assert folded["post_bn"]["direction"] == "pre-activation" and folded["post_bn"]["shift"] == "bias"
    kept = {k["bn"]: k["reason"] for k in report["fold"]["kept"]}
    assert set(kept) == {"b1_preact_bn", "b2_preact_bn", "b3_preact_bn"}
    assert all("for int8" in reason and "left to the converter" in reason for reason in kept.values())
    peer, ours = results[False].artifacts[0], results[True].artifacts[0]
    assert peer.agreement.accuracy > 0.95  # a trained model: the comparison means something
    assert ours.agreement.accuracy >= peer.agreement.accuracy
    assert len(ours.facts.bn_derived) < len(peer.facts.bn_derived)


def test_fold_itself_folds_them_all(trained):
    model, _, _ = trained
    result = bnfreeze.fold(model)
    assert result.report["kept"] == []
