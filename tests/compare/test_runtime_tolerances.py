"""Default tolerances by runtime: each runtime's measured float noise, the loosest of the two compared."""

from pathlib import Path

import pytest

from bnfreeze.compare.tolerance import (DTYPE_TOLERANCES, RUNTIME_TOLERANCES, Tolerance, criteria,
                                        runtime_defaults)


def test_every_runtime_and_device_has_a_default():
    for backend in ("keras", "savedmodel", "onnxruntime", "tflite"):
        assert (backend, "cpu") in RUNTIME_TOLERANCES
    for backend in ("keras", "savedmodel", "onnxruntime"):  # tflite runs on the CPU only
        assert (backend, "gpu") in RUNTIME_TOLERANCES
        assert RUNTIME_TOLERANCES[(backend, "gpu")] >= RUNTIME_TOLERANCES[(backend, "cpu")]
    # the fold's own check (float32's defaults) is stricter than verify holds a Keras candidate to: a fold
    # that passed its check on 28 samples cannot fail verify on 300 by float noise
    atol, rtol = DTYPE_TOLERANCES["float32"]
    assert all(a >= atol and r >= rtol for a, r in RUNTIME_TOLERANCES.values())


def test_the_loosest_of_the_runtimes_compared_applies():
    loosest = max(RUNTIME_TOLERANCES.values())
    assert runtime_defaults(*RUNTIME_TOLERANCES) == (max(a for a, _ in RUNTIME_TOLERANCES.values()),
                                                     max(r for _, r in RUNTIME_TOLERANCES.values()))
    assert runtime_defaults(("keras", "cpu")) == RUNTIME_TOLERANCES[("keras", "cpu")]
    assert max(runtime_defaults(("tflite", "cpu"), ("onnxruntime", "gpu"))) <= max(loosest)
    tflite = Tolerance().resolved_for("float32").for_runtimes(("keras", "cpu"), ("tflite", "cpu"))
    assert (tflite.atol, tflite.rtol) == RUNTIME_TOLERANCES[("tflite", "cpu")]
    assert tflite.as_dict()["runtimes"] == ["tflite/cpu"] and "float32 tflite/cpu defaults" in tflite.explain()
    gpu = Tolerance().resolved_for("float32").for_runtimes(("tflite", "cpu"), ("onnxruntime", "gpu"))
    assert (gpu.atol, gpu.rtol) == runtime_defaults(("tflite", "cpu"), ("onnxruntime", "gpu"))


def test_given_bounds_are_kept_and_other_precisions_keep_their_own():
    given = criteria(atol=1e-7, rtol=None).resolved_for("float32").for_runtimes(("onnxruntime", "gpu"))
    assert given.atol == 1e-7 and given.rtol == RUNTIME_TOLERANCES[("onnxruntime", "gpu")][1]
    both = criteria(atol=1e-7, rtol=1e-6).resolved_for("float32").for_runtimes(("tflite", "cpu"))
    assert (both.atol, both.rtol) == (1e-7, 1e-6)
    half = Tolerance().resolved_for("float16").for_runtimes(("tflite", "cpu"))
    assert half.atol >= DTYPE_TOLERANCES["float16"][0] and half.rtol >= DTYPE_TOLERANCES["float16"][1]
    double = Tolerance().resolved_for("float64").for_runtimes(("savedmodel", "cpu"))
    assert (double.atol, double.rtol) == DTYPE_TOLERANCES["float64"]  # a float64 model's artifact: float64
    keras = Tolerance().resolved_for("float32").for_runtimes(("keras", "cpu"), ("keras", "cpu"))
    assert (keras.atol, keras.rtol) == RUNTIME_TOLERANCES[("keras", "cpu")] and keras.runtimes == (("keras", "cpu"),)
    fold = Tolerance().resolved_for("float32")  # the fold's own check: no runtime
    assert (fold.atol, fold.rtol) == DTYPE_TOLERANCES["float32"]


@pytest.mark.parametrize("dtype", ["float32", "float16"])
def test_per_output_precision_keeps_the_runtime(dtype):
    tolerance = Tolerance(output_dtypes=(("a", "float32"), ("b", dtype))).resolved_for("float16")
    tolerance = tolerance.for_runtimes(("tflite", "cpu"))
    a = tolerance.for_output("a")
    assert (a.atol, a.rtol) == RUNTIME_TOLERANCES[("tflite", "cpu")]  # a float32 output: tflite's noise


def test_the_help_states_the_defaults_the_code_uses():
    from click.testing import CliRunner

    from bnfreeze.cli import main

    text = " ".join(CliRunner().invoke(main, ["verify", "--help"], terminal_width=200).output.split())
    atol, rtol = RUNTIME_TOLERANCES[("tflite", "cpu")]
    assert f"{rtol:g} for TFLite" in text and f"{atol:g} for TFLite" in text
    assert f"{RUNTIME_TOLERANCES[('onnxruntime', 'gpu')][1]:g} for onnxruntime on a GPU" in text


def test_export_and_verify_hold_an_artifact_to_its_runtime(example_model_path, tmp_path):
    """What export checked a file against is what verify holds it to: a TFLite file is judged by TFLite's
    float noise in both, and each verify row says its bounds."""
    import json

    from support import bnfreeze

    proc = bnfreeze("export", example_model_path, "--tflite", tmp_path / "m.tflite", "--onnx", tmp_path / "m.onnx")
    assert proc.returncode == 0, proc.stderr
    atol, rtol = RUNTIME_TOLERANCES[("tflite", "cpu")]
    assert f"tflite {tmp_path / 'm.tflite'}: passed" in proc.stdout and f"atol {atol:g} or rtol {rtol:g}" in proc.stdout
    proc = bnfreeze("verify", example_model_path, tmp_path / "m.tflite", tmp_path / "m.onnx", "--samples", 300,
                    "--json", tmp_path / "v.json")
    assert proc.returncode == 0, proc.stdout + proc.stderr
    rows = {Path(r["candidate"]).name: r["criteria"] for r in json.loads((tmp_path / "v.json").read_text())["results"]}
    assert rows["m.tflite"]["runtimes"] == ["tflite/cpu"] and (rows["m.tflite"]["atol"], rows["m.tflite"]["rtol"]) \
        == (atol, rtol)
    assert rows["m.onnx"]["runtimes"] == ["onnxruntime/cpu"]
    tflite_line = next(line for line in proc.stdout.splitlines() if "m.tflite" in line)
    assert f"max_rel <= {rtol:g} (max, float32 tflite/cpu defaults)" in tflite_line
    assert any(line.startswith("criterion: each candidate within the bounds of its runtime, on its line (max): "
                               "passed") for line in proc.stdout.splitlines())
