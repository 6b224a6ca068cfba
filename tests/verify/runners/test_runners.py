"""Runner recognition by content, and the GPU rows (run where a GPU is present)."""

import shutil

import pytest
import tensorflow as tf

import bnfreeze
from bnfreeze.errors import InputError
from bnfreeze.verify.runners import KerasRunner, OnnxRunner, SavedModelRunner, TFLiteRunner, Unavailable, runner_class

HAS_GPU = bool(tf.config.list_physical_devices("GPU"))


@pytest.fixture(scope="module")
def artifacts(tmp_path_factory, example_model_path):
    import keras

    from bnfreeze.export import export

    folder = tmp_path_factory.mktemp("artifacts")
    model = bnfreeze.fold(keras.models.load_model(example_model_path)).model
    export(model, onnx=folder / "m.onnx", savedmodel=folder / "sm", tflite=folder / "m.tflite")
    return folder


def test_recognised_by_content_not_name(artifacts, tmp_path, example_model_path):
    for source, cls in [("m.onnx", OnnxRunner), ("m.tflite", TFLiteRunner)]:
        disguised = tmp_path / f"{source}.bin"
        shutil.copy(artifacts / source, disguised)
        assert runner_class(disguised) is cls
    assert runner_class(artifacts / "sm") is SavedModelRunner
    assert runner_class(example_model_path) is KerasRunner
    (tmp_path / "noise.onnx").write_bytes(b"\x00\x01garbage")
    with pytest.raises(InputError, match="not a Keras model, SavedModel folder, ONNX or TFLite"):
        runner_class(tmp_path / "noise.onnx")


def test_every_runner_reports_keras_names(artifacts):
    for path, cls in [(artifacts / "m.onnx", OnnxRunner), (artifacts / "sm", SavedModelRunner), (artifacts / "m.tflite", TFLiteRunner)]:
        with cls(path) as runner:
            assert [s.name for s in runner.input_specs()] == ["digits"]
            assert runner.provider


@pytest.mark.gpu
@pytest.mark.skipif(not HAS_GPU, reason="no GPU visible to TensorFlow on this machine: GPU rows are skipped")
def test_gpu_runners_really_run_on_the_gpu(artifacts, example_model_path):
    with OnnxRunner(artifacts / "m.onnx", "gpu") as runner:
        assert runner.provider == "CUDAExecutionProvider"
    with KerasRunner(example_model_path, "gpu") as runner:
        assert "GPU" in runner.provider


@pytest.mark.skipif(HAS_GPU, reason="this machine has a GPU")
def test_without_gpu_the_gpu_rows_are_unavailable(artifacts):
    with pytest.raises(Unavailable):
        OnnxRunner(artifacts / "m.onnx", "gpu").load()
    with pytest.raises(Unavailable):
        SavedModelRunner(artifacts / "sm", "gpu").load()
    with pytest.raises(Unavailable):
        TFLiteRunner(artifacts / "m.tflite", "gpu")


def test_every_runner_lists_its_outputs(artifacts):
    for path, cls, name in [(artifacts / "m.onnx", OnnxRunner, "probs"), (artifacts / "sm", SavedModelRunner, "probs"),
                            (artifacts / "m.tflite", TFLiteRunner, "probs")]:
        with cls(path) as runner:
            (spec,) = runner.output_specs()
            assert spec.name == name and spec.shape[-1] == 10 and spec.quantization is None
            assert runner.quantization is None and runner.compute_dtype() == "float32"


def test_quantization_round_trip():
    import numpy as np

    from bnfreeze.verify.runners import Quantization

    q = Quantization.of([0.5], [-3])
    real = np.array([[-70.0, -1.2, 0.0, 0.26, 100.0]])
    stored = q.quantize(real, "int8")
    assert stored.dtype == np.int8 and stored.tolist() == [[-128, -5, -3, -2, 127]]  # clipped at the type's range
    assert q.dequantize(stored).tolist() == [[-62.5, -1.0, 0.0, 0.5, 65.0]]
    per_channel = Quantization.of([0.1, 1.0], [0], axis=1)
    assert per_channel.quantize(np.array([[0.5, 0.5]]), "uint8").tolist() == [[5, 0]]
    assert Quantization.of([0.0], [0]) is None  # TFLite's "not quantized"
