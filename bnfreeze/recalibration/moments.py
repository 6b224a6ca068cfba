"""Per-channel moments of BN inputs, accumulated exactly in float64.

Each batch is reduced on the device to ``(count, mean, M2)`` per channel, with
``M2 = sum((x - mean)^2)`` taken around the batch's own mean (two passes over
the batch), so no precision is lost to ``E[x^2] - E[x]^2`` cancellation. Sums
run in the activations' float32 only within one sample (at most H*W elements
per channel, relative error ~1e-7) and in float64 across the samples, which
costs less than half of a float64 pass over the whole activation. Batches are then merged with the parallel update of Chan, Golub
and LeVeque ("Updating formulae and a pairwise algorithm for computing sample
variances", 1979)::

    delta = mean_b - mean_a
    n     = n_a + n_b
    mean  = mean_a + delta * n_b / n
    M2    = M2_a + M2_b + delta^2 * n_a * n_b / n

which is exact in exact arithmetic and stable in floating point. The same
merge joins the replicas of a ``tf.distribute`` strategy inside the step
(:func:`batch_moments` all-reduces counts, count-weighted means and the
centred sums), so a run on several devices gives the statistics of one device.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np


@dataclass
class Moments:
    """Running count, mean and M2 of one BN's input channels (float64)."""

    count: float = 0.0
    mean: np.ndarray | None = None
    m2: np.ndarray | None = None
    batches: int = field(default=0)

    def update(self, count, mean, m2) -> None:
        """Merge the moments of one more batch (Chan et al.'s parallel update)."""
        count = float(count)
        if count == 0:
            return
        mean = np.asarray(mean, dtype=np.float64)
        m2 = np.asarray(m2, dtype=np.float64)
        self.batches += 1
        if self.mean is None:
            self.count, self.mean, self.m2 = count, mean.copy(), m2.copy()
            return
        total = self.count + count
        delta = mean - self.mean
        self.mean = self.mean + delta * (count / total)
        self.m2 = self.m2 + m2 + delta * delta * (self.count * count / total)
        self.count = total

    @property
    def variance(self) -> np.ndarray:
        """The biased (1/N) variance, which is what Keras keeps as ``moving_variance``."""
        return self.m2 / self.count


def reduction_axes(layer, rank: int) -> list[int]:
    axis = layer.axis % rank
    return [i for i in range(rank) if i != axis]


def batch_moments(x, axes):
    """``(count, mean, M2)`` of ``x`` over ``axes`` in float64, merged across replicas.

    Runs inside a replica context (eagerly under the default strategy); with
    more than one replica the per-replica moments are combined with two
    all-reduces (counts and count-weighted means, then centred sums), the
    parallel form of the update in :class:`Moments`.
    """
    import tensorflow as tf

    x = tf.convert_to_tensor(x)
    rank = x.shape.rank
    # per-sample sums in float32 only when there is something to sum within a sample (conv maps);
    # (batch, channels) inputs are small: all float64
    x = tf.cast(x, tf.float32 if any(a != 0 for a in axes) and x.dtype != tf.float64 else tf.float64)
    shape = tf.shape(x, out_type=tf.int64)
    count = tf.cast(tf.reduce_prod(tf.gather(shape, axes)), tf.float64)
    mean = tf.math.divide_no_nan(_sum(x, axes), count)
    centred = x - tf.cast(_expand(mean, axes, rank), x.dtype)
    m2 = _sum(tf.square(centred), axes)
    context = tf.distribute.get_replica_context()
    if context is None or context.num_replicas_in_sync == 1:
        return count, mean, m2
    total = context.all_reduce(tf.distribute.ReduceOp.SUM, count)
    global_mean = tf.math.divide_no_nan(context.all_reduce(tf.distribute.ReduceOp.SUM, count * mean), total)
    delta = mean - global_mean
    m2 = context.all_reduce(tf.distribute.ReduceOp.SUM, m2 + count * delta * delta)
    return total, global_mean, m2


def _sum(x, axes):
    """Sum over ``axes`` in float64: within each sample in ``x``'s dtype, across samples in float64."""
    import tensorflow as tf

    inner = [a for a in axes if a != 0]
    if 0 not in axes or not inner:
        return tf.reduce_sum(tf.cast(x, tf.float64), axis=axes)
    per_sample = tf.reduce_sum(x, axis=inner)  # (batch, channels)
    return tf.reduce_sum(tf.cast(per_sample, tf.float64), axis=0)


def _expand(channel_values, axes, rank):
    """Reshape a per-channel vector to broadcast against a tensor reduced over ``axes``."""
    import tensorflow as tf

    shape = [1 if i in axes else -1 for i in range(rank)]
    return tf.reshape(channel_values, shape)
