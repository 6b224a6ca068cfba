"""bnfreeze: take Keras models with BatchNormalization to deployment.

Python API::

    import bnfreeze
    result = bnfreeze.fold(model)          # result.model, result.report
    rows = bnfreeze.inspect(model)         # fold plan of every normalization layer
    data = bnfreeze.open_data("calib.npy", bnfreeze.input_specs(model))
    result = bnfreeze.recalibrate(model, data, mode="exact")   # result.model, result.report
    result = bnfreeze.quantize(model, data, tflite="m.tflite", onnx="m.onnx")   # int8, checked, then written
"""

from bnfreeze.errors import BnfreezeError, CheckError, InputError, KeptError, ParityError
from bnfreeze import fold  # the fold wing, callable: bnfreeze.fold(model)
from bnfreeze.fold import FoldResult, inspect
from bnfreeze.io.sources import open_data
from bnfreeze.io.models import load_model, save_model
from bnfreeze.recalibration import RecalibrationResult, recalibrate
from bnfreeze import quantize  # the quantize wing, callable: bnfreeze.quantize(model, data, ...)
from bnfreeze.quantize import QuantizeResult
from bnfreeze.io.signature import input_specs

__version__ = "0.1.0"

__all__ = [
    "BnfreezeError",
    "CheckError",
    "KeptError",
    "FoldResult",
    "InputError",
    "ParityError",
    "fold",
    "RecalibrationResult",
    "input_specs",
    "inspect",
    "load_model",
    "open_data",
    "quantize",
    "QuantizeResult",
    "recalibrate",
    "save_model",
]
