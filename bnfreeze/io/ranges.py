"""Which values a model's input accepts, and the check that data holds only those.

Feeding data means casting it to the input's dtype, and NumPy's and
TensorFlow's casts never refuse: 300 becomes 44 in a ``uint8`` input, -1
becomes 255, 1e6 becomes ``inf`` in a ``float16`` one. A token id at or beyond
an ``Embedding``'s vocabulary is worse: TensorFlow's CPU kernel raises
somewhere inside a run, its GPU kernel returns zeros. So every loader checks
the values against the input before any work:

* an integer input takes the values of its dtype, and, where an
  ``Embedding`` (or ``CategoryEncoding``) reads it, ``0 .. vocabulary - 1``
  (:func:`bnfreeze.io.signature.vocabulary_ranges` follows the input into nested models);
* a floating-point input takes the finite values its dtype can hold.

A value outside gives one line naming the data, the input, the value, where
it is and the range (:func:`check_values`).
"""

from __future__ import annotations

import numpy as np

from bnfreeze.errors import InputError
from bnfreeze.io.signature import TensorSpec, ValueRange


def _numpy_dtype(name: str):
    if name == "bfloat16":
        return np.dtype(np.float32)
    if name == "string":
        return None
    try:
        return np.dtype(name)
    except TypeError:
        return None


def dtype_range(name: str) -> ValueRange | None:
    """The integers an integer dtype holds (None for any other dtype)."""
    dtype = _numpy_dtype(name)
    if dtype is None or not np.issubdtype(dtype, np.integer):
        return None
    info = np.iinfo(dtype)
    return ValueRange(int(info.min), int(info.max), str(dtype))


def allowed_range(spec: TensorSpec) -> ValueRange | None:
    """The integers ``spec``'s input accepts: its dtype's, narrowed by a vocabulary (None for float inputs)."""
    own = dtype_range(spec.dtype)
    if own is None:
        return None
    if spec.values is None:
        return own
    low, high = max(own.low, spec.values.low), min(own.high, spec.values.high)
    return ValueRange(low, high, spec.values.why if (low, high) == (spec.values.low, spec.values.high) else own.why)


def float_limit(spec: TensorSpec) -> float | None:
    """The largest magnitude a floating-point input holds (None for other inputs)."""
    dtype = _numpy_dtype(spec.dtype)
    if dtype is None or not np.issubdtype(dtype, np.floating):
        return None
    return float(np.finfo(dtype).max)


def _stored_bounds(dtype) -> tuple[float, float] | None:
    dtype = np.dtype(dtype)
    if np.issubdtype(dtype, np.integer):
        info = np.iinfo(dtype)
        return float(info.min), float(info.max)
    if np.issubdtype(dtype, np.floating):
        info = np.finfo(dtype)
        return float(-info.max), float(info.max)
    if dtype == np.bool_:
        return 0.0, 1.0
    return None


def needs_check(spec: TensorSpec, stored) -> bool:
    """Whether values of dtype ``stored`` can fall outside what ``spec``'s input takes (else no scan is needed)."""
    bounds = _stored_bounds(stored)
    if bounds is None:
        return False
    allowed = allowed_range(spec)
    if allowed is not None:
        return bounds[0] < allowed.low or bounds[1] > allowed.high
    limit = float_limit(spec)
    return limit is not None and max(-bounds[0], bounds[1]) > limit


def problem(values: np.ndarray, spec: TensorSpec) -> tuple[int, object, str] | None:
    """``(sample, value, what is allowed)`` for the first sample of ``values`` (samples first) holding a value
    ``spec``'s input cannot take, or None."""
    values = np.asarray(values)
    if values.size == 0 or not needs_check(spec, values.dtype):
        return None
    allowed = allowed_range(spec)
    if allowed is not None:
        if np.issubdtype(values.dtype, np.floating):
            return None  # floats for an integer input are refused as such where the data is opened
        bad = (values < allowed.low) | (values > allowed.high)
        what = f"it takes {allowed.text()}"
    else:
        limit = float_limit(spec)
        with np.errstate(invalid="ignore"):
            bad = np.isfinite(values) & (np.abs(values.astype(np.float64)) > limit)
        what = f"it takes values of magnitude up to {limit:.6g} ({spec.dtype})"
    if not bad.any():
        return None
    index = np.argwhere(bad)[0]
    sample = int(index[0]) if values.ndim else 0
    value = values[tuple(index)] if values.ndim else values[()]
    return sample, value.item() if hasattr(value, "item") else value, what


def check_values(values: np.ndarray, spec: TensorSpec, source, first: int = 0, where: str = "sample") -> None:
    """Raise :class:`InputError` when ``values`` (samples ``first``, ``first + 1``, ... of ``source``) hold a
    value ``spec``'s input cannot take."""
    found = problem(values, spec)
    if found is not None:
        sample, value, what = found
        raise InputError(f"{source}: input {spec.name} holds {value} at {where} {first + sample}; {what}")


def check_constant_range(low: float, high: float, spec: TensorSpec, source, what: str) -> None:
    """Data whose values are known to lie in ``low..high`` without reading it (decoded pixels times
    ``--rescale``): refuse it when the input cannot take every such value exactly."""
    allowed = allowed_range(spec)
    if allowed is not None:
        if high > allowed.high or low < allowed.low:
            raise InputError(f"{source}: {what} reach {high:g}, but input {spec.name} takes {allowed.text()}")
        return
    limit = float_limit(spec)
    if limit is not None and max(abs(low), abs(high)) > limit:
        raise InputError(f"{source}: {what} reach {high:g}, beyond what input {spec.name} ({spec.dtype}) holds "
                         f"({limit:.6g})")


def check_pixels(spec: TensorSpec, rescale: float, source) -> None:
    """Decoded images (pixels 0..255) times ``rescale`` fed to ``spec``'s input: refused where the input
    cannot take every such value exactly (an integer input and a fractional scale, a range beyond it)."""
    what = f"pixels 0..255 times --rescale {rescale:g}"
    if allowed_range(spec) is not None and float(rescale) != int(rescale):
        raise InputError(f"{source}: {what} are not whole numbers, but input {spec.name} is {spec.dtype}")
    check_constant_range(min(0.0, 255.0 * rescale), max(0.0, 255.0 * rescale), spec, source, what)
