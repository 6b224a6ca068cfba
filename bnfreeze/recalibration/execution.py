"""Running one step function per batch, on one device or on every replica of a strategy.

Every step runs as a ``tf.function``, batch by batch. Under a
``tf.distribute`` strategy with several replicas it runs through
``strategy.run``: each global batch is split across the replicas, and
the moments in the step are all-reduced inside it
(:func:`~bnfreeze.recalibration.moments.batch_moments`), so the host reads the
same totals from any replica. Tensors a step returns for later stages stay on
their replicas.
"""

from __future__ import annotations

from typing import Callable

import numpy as np


class Executor:
    def __init__(self, strategy=None):
        import tensorflow as tf

        self.strategy = strategy if strategy is not None else tf.distribute.get_strategy()
        self.replicas = self.strategy.num_replicas_in_sync
        self.distributed = self.replicas > 1

    def compile(self, fn: Callable) -> Callable:
        """``fn(*tensors) -> (reduced, kept)`` as a ``tf.function``.

        On one device the signature is fixed at the first call with a free
        batch dimension, so the last, smaller batch does not trace again.
        """
        import tensorflow as tf

        if self.distributed:
            return tf.function(fn, reduce_retracing=True)
        compiled = None

        def call(*args):
            nonlocal compiled
            if compiled is None:
                signature = [tf.TensorSpec((None, *a.shape[1:]), a.dtype) for a in args]
                compiled = tf.function(fn, input_signature=signature)
            return compiled(*args)

        return call

    def feed(self, arrays: list[np.ndarray]):
        """One global batch as (per-replica) tensors."""
        import tensorflow as tf

        if not self.distributed:
            return tuple(tf.convert_to_tensor(a) for a in arrays)
        bounds = np.linspace(0, len(arrays[0]), self.replicas + 1).astype(int)

        def value_fn(ctx):
            i = ctx.replica_id_in_sync_group
            return tuple(tf.convert_to_tensor(a[bounds[i]:bounds[i + 1]]) for a in arrays)

        return self.strategy.experimental_distribute_values_from_function(value_fn)

    def run(self, fn: Callable, args: tuple):
        """Run ``fn`` on ``args``; return (host copies of the reduced outputs, the kept outputs)."""
        import tensorflow as tf

        if not self.distributed:
            reduced, kept = fn(*args)
            return tf.nest.map_structure(np.asarray, reduced), kept
        with self.strategy.scope():
            reduced, kept = self.strategy.run(fn, args=args)
        # the moments were all-reduced inside the step: every replica holds the same totals
        return tf.nest.map_structure(lambda v: np.asarray(self.strategy.experimental_local_results(v)[0]), reduced), kept
