"""``--custom-objects module.py``: user code that defines custom layers, imported on request only.

Importing a Python file runs it, so bnfreeze does it only together with
``--unsafe`` (the user has said they trust what they feed it). The module
registers its classes itself (``@keras.saving.register_keras_serializable``)
or lists them in a ``CUSTOM_OBJECTS`` dict, which is registered for it.
"""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

from bnfreeze.errors import InputError


def import_custom_objects(path, *, unsafe: bool) -> list[str]:
    """Import ``path``; register its ``CUSTOM_OBJECTS``; return the names registered."""
    path = Path(path)
    if not unsafe:
        raise InputError(f"{path}: --custom-objects runs the code in this file; pass --unsafe as well if you trust it")
    if not path.is_file() or path.suffix != ".py":
        raise InputError(f"{path}: --custom-objects needs a Python file (.py)")
    name = f"bnfreeze_custom_objects_{abs(hash(str(path.resolve())))}"
    spec = importlib.util.spec_from_file_location(name, path)
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    if path not in _IMPORTED:
        _IMPORTED.append(path)
    try:
        spec.loader.exec_module(module)
    except Exception as exc:  # any failure of user code is reported as bad input
        del sys.modules[name]
        raise InputError(f"{path}: importing it failed ({type(exc).__name__}: {str(exc).splitlines()[0][:160] if str(exc) else ''})") from exc
    objects = getattr(module, "CUSTOM_OBJECTS", {})
    if not isinstance(objects, dict):
        raise InputError(f"{path}: CUSTOM_OBJECTS must be a dict of name -> class or function")
    import keras

    keras.saving.get_custom_objects().update(objects)
    return sorted(objects)


#: the files imported so far: inputs of the command, which no output may replace
_IMPORTED: list[Path] = []


def imported_files() -> list[Path]:
    """The ``--custom-objects`` files imported in this process (inputs like the model and the data)."""
    return list(_IMPORTED)
