"""bnfreeze: take Keras models with BatchNormalization to deployment.

Python API::

    import bnfreeze
    result = bnfreeze.fold(model)          # result.model, result.report
    rows = bnfreeze.inspect(model)         # fold plan of every normalization layer
"""

from bnfreeze.errors import BnfreezeError, InputError, ParityError
from bnfreeze.folding import FoldResult, fold
from bnfreeze.inspection import inspect
from bnfreeze.modelio import load_model, save_model

__version__ = "0.1.0"

__all__ = [
    "BnfreezeError",
    "FoldResult",
    "InputError",
    "ParityError",
    "fold",
    "inspect",
    "load_model",
    "save_model",
]
