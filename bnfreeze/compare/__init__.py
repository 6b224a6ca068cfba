"""The comparators shared by ``fold``, ``export`` and ``verify``.

Every comparison reports the same statistics of ``candidate - reference`` over
all samples: ``max_abs``, ``max_rel`` (each sample's largest error relative to
the largest magnitude of its reference output; the worst sample), ``mean_abs``, ``p99_abs``, ``top1_agreement`` (share of
samples whose arg-max class agrees, for ``(batch, classes)`` outputs),
``snr_db`` (``10*log10(sum ref^2 / sum (ref - cand)^2)``, ``inf`` when
identical) and ``cosine`` (of the flattened outputs). What makes an output
*pass* is the check (several may be combined; all must hold):

``max`` (the default)
    finite, the reference's shape, and for every sample the largest absolute
    error within ``atol`` *or* within ``rtol`` times the largest magnitude of
    the sample's reference output. The second clause makes the tolerance
    scale with the output (logits of size 50 and probabilities of size 1 are
    judged alike) without dividing by reference values near zero. Judged per
    sample, the verdict and every figure are the same at any batch size.
``elementwise``
    Polygraphy's stricter rule: every element within ``atol`` or within
    ``rtol`` times its own reference magnitude.
``top1``
    top-1 agreement >= ``min_top1`` (default 0.99), for lossy artifacts
    (quantized models) whose classes must agree although their values cannot.
``snr``
    ``snr_db >= min_snr`` (default 30 dB), Polygraphy-style error statistics
    for lossy artifacts whose outputs are not classes.
"""


from bnfreeze.compare.outputs import Accumulator, OutputComparison, compare_output, snr_db, summarize
from bnfreeze.compare.tolerance import (
    CHECKS, DEFAULT_ATOL, DEFAULT_MIN_SNR, DEFAULT_MIN_TOP1, DEFAULT_RTOL, DTYPE_TOLERANCES, TOLERANCE_CHECKS,
    Tolerance, compute_dtype, criteria, lowest_precision, output_precisions,
)

__all__ = [
    "Accumulator", "CHECKS", "DEFAULT_ATOL", "DEFAULT_MIN_SNR", "DEFAULT_MIN_TOP1", "DEFAULT_RTOL", "DTYPE_TOLERANCES",
    "OutputComparison", "TOLERANCE_CHECKS", "Tolerance", "compare_output", "compute_dtype", "criteria",
    "lowest_precision", "output_precisions", "snr_db", "summarize",
]
