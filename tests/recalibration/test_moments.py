"""Chan et al.'s parallel update against numpy on the concatenated data."""

import numpy as np
from hypothesis import given, settings
from hypothesis import strategies as st

from bnfreeze.recalibration.moments import Moments, batch_moments


@settings(max_examples=60, deadline=None)
@given(sizes=st.lists(st.integers(1, 40), min_size=1, max_size=8), offset=st.floats(-1e4, 1e4),
       seed=st.integers(0, 2**16))
def test_merged_batches_equal_the_whole(sizes, offset, seed):
    rng = np.random.default_rng(seed)
    batches = [rng.normal(offset, rng.uniform(0.01, 10), (n, 3)) for n in sizes]
    m = Moments()
    for b in batches:
        m.update(len(b), b.mean(axis=0), ((b - b.mean(axis=0)) ** 2).sum(axis=0))
    whole = np.concatenate(batches)
    np.testing.assert_allclose(m.mean, whole.mean(axis=0), rtol=1e-12, atol=1e-9)
    np.testing.assert_allclose(m.variance, whole.var(axis=0), rtol=1e-9, atol=1e-12)
    assert m.count == len(whole)


def test_large_offset_keeps_small_variance():
    """E[x^2] - E[x]^2 would lose every digit here; the centred update (float64 for (batch, channel) inputs) does not."""
    rng = np.random.default_rng(0)
    x = (1e4 + rng.normal(0, 1e-2, (4000, 2))).astype(np.float32)
    m = Moments()
    for chunk in np.array_split(x, 7):
        n, mean, m2 = (np.asarray(v) for v in batch_moments(chunk, [0]))
        m.update(n, mean, m2)
    np.testing.assert_allclose(m.variance, x.astype(np.float64).var(axis=0), rtol=1e-9)


def test_batch_moments_reduce_all_but_the_channel_axis():
    x = np.random.default_rng(1).normal(size=(4, 5, 6, 3)).astype(np.float32)
    n, mean, m2 = (np.asarray(v) for v in batch_moments(x, [0, 1, 2]))
    assert n == 120
    # float32 within a sample (documented ~1e-7), float64 across samples
    np.testing.assert_allclose(mean, x.astype(np.float64).mean(axis=(0, 1, 2)), rtol=1e-6, atol=1e-7)
    np.testing.assert_allclose(m2 / n, x.astype(np.float64).var(axis=(0, 1, 2)), rtol=1e-6)


def test_empty_batch_changes_nothing():
    m = Moments()
    m.update(4, np.ones(2), np.ones(2))
    m.update(0, np.full(2, np.nan), np.full(2, np.nan))
    assert m.count == 4 and np.all(m.mean == 1)
