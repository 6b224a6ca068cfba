"""``bnfreeze fold`` options for CI: --strict/--max-kept, --data, and output that reads in a log."""

import json

import keras
import pytest
from keras import layers
from support import bnfreeze, loads_without_bnfreeze, randomize_bn


@pytest.fixture(scope="module")
def relu_bn_model(tmp_path_factory):
    """One BN after a relu that feeds an Add: it can fold neither way."""
    path = tmp_path_factory.mktemp("models") / "stuck_with_a_rather_long_name_for_eighty_columns.keras"
    inputs = keras.Input((6,))
    x = layers.Dense(6, activation="relu", name="dense_with_a_long_name_that_does_not_fit_in_a_column")(inputs)
    y = layers.BatchNormalization(name="batch_normalization_with_an_even_longer_name_to_test_tables")(x)
    model = keras.Model(inputs, layers.Add()([x, y]))
    randomize_bn(model)
    model.save(path)
    return path


def test_strict_fails_when_a_bn_stays_and_writes_nothing(relu_bn_model, tmp_path):
    out = tmp_path / "out.keras"
    proc = bnfreeze("fold", relu_bn_model, "-o", out, "--strict", "--report", tmp_path / "r.json")
    assert proc.returncode == 1, proc.stderr
    assert "1 of 1 BatchNormalization layer stays, more than the 0 allowed" in proc.stderr
    assert "batch_normalization_with_an_even_longer_name_to_test_tables" in proc.stderr  # the table, on stderr
    assert "Traceback" not in proc.stderr
    assert not out.exists() and not (tmp_path / "r.json").exists()
    assert bnfreeze("fold", relu_bn_model, "-o", out, "--max-kept", "1").returncode == 0
    assert out.exists()


def test_a_fold_that_folds_nothing_says_so(relu_bn_model, tmp_path):
    proc = bnfreeze("fold", relu_bn_model, "-o", tmp_path / "o.keras")
    assert proc.returncode == 0, proc.stderr
    assert "no BatchNormalization layer could be folded: it stays (reason above)" in proc.stdout


def test_strict_and_another_max_kept_is_bad_input(relu_bn_model, tmp_path):
    proc = bnfreeze("fold", relu_bn_model, "-o", tmp_path / "o.keras", "--strict", "--max-kept", "2")
    assert proc.returncode == 2 and "--strict means --max-kept 0" in proc.stderr


def test_fold_checks_parity_on_real_data(example_model_path, repo, tmp_path):
    out, report = tmp_path / "f.keras", tmp_path / "r.json"
    proc = bnfreeze("fold", example_model_path, "-o", out, "--report", report,
                    "--data", repo / "models" / "digits_test.npz")
    assert proc.returncode == 0, proc.stderr
    runs = json.loads(report.read_text())["parity"]["runs"]
    assert sum("digits_test.npz" in r["inputs"] for r in runs) == 5  # 4 batches of 8 + the default call
    loads_without_bnfreeze(out, (8, 8, 1))


def test_fold_data_errors_come_before_existing_outputs(example_model_path, tmp_path):
    out = tmp_path / "f.keras"
    out.write_text("precious")
    proc = bnfreeze("fold", example_model_path, "-o", out, "--data", tmp_path / "missing.npy")
    assert proc.returncode == 2 and "missing.npy: no such file" in proc.stderr
    assert out.read_text() == "precious"


@pytest.mark.parametrize("columns", [None, "80", "50"])
def test_piped_lines_are_whole_and_never_cut(relu_bn_model, tmp_path, columns):
    """Piped output (every CI log) is not a terminal: nothing is cut, and no row or verdict wraps onto a second
    line (``grep`` finds a BN with its action, and the parity verdict with its figures), whatever COLUMNS says."""
    import os
    import subprocess
    import sys

    env = {k: v for k, v in os.environ.items() if k not in ("COLUMNS", "LINES")}
    if columns:
        env["COLUMNS"] = columns
    bn = "batch_normalization_with_an_even_longer_name_to_test_tables"
    for args in (("inspect", relu_bn_model), ("fold", relu_bn_model, "-o", tmp_path / "x.keras", "--force")):
        proc = subprocess.run([sys.executable, "-m", "bnfreeze.cli", *map(str, args)], capture_output=True,
                              text=True, env=env, timeout=300)
        assert proc.returncode == 0, proc.stderr
        text = proc.stdout
        assert "…" not in text and "..." not in text
        lines = text.splitlines()
        assert any(line.startswith(("normalization layers of ", "bnfreeze fold: ")) and str(relu_bn_model) in line
                   for line in lines), text
        row = next(line for line in lines if bn in line)
        assert "keep" in row or "kept" in row, text  # the BN and what happens to it, on one line
        assert "dense_with_a_long_name_that_does_not_fit_in_a_column" in row, text  # and why
        if args[0] == "fold":
            verdict = next(line for line in lines if line.startswith("parity on"))
            assert "max_abs" in verdict and verdict.endswith("passed"), text
