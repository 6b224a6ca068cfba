"""Running one step function per batch: on one device, on local replicas, or on several workers.

Every step runs as a ``tf.function`` (without AutoGraph: the steps are plain
Python over the layer calls), batch by batch.

* One device: the signature is fixed at the first call with a free batch
  dimension, so the last, smaller batch does not trace again.
* Several local replicas (``MirroredStrategy``): the step runs through
  ``strategy.run``; each global batch is split across the replicas and the
  moments are all-reduced inside the step
  (:func:`~bnfreeze.recalibration.moments.batch_moments`), so the host reads
  the same totals from any replica. Tensors a step returns for later stages
  stay on their replicas.
* Several workers (``MultiWorkerMirroredStrategy`` with a cluster in
  ``TF_CONFIG``): each worker runs the steps on its own device over its own
  shard of the data, as many batches as it has, and the moments of each pass
  are merged across the workers once, at the end of the pass
  (:meth:`Executor.merge`: count-weighted, float64, Chan's update as three
  all-reduces). No collective runs inside a step, so workers with different
  numbers of batches never wait for each other mid-pass, and a worker that
  dies is noticed at the next merge (TensorFlow's coordination service stops
  the collectives within seconds) or when ``timeout`` runs out.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Callable

import numpy as np

from bnfreeze.errors import InputError
from bnfreeze.recalibration.moments import Moments, merge_replicas


class ClusterError(InputError):
    """A worker of a multi-worker run stopped, or could not be reached in time."""


@dataclass(frozen=True)
class Cluster:
    """Where this process sits in a multi-worker cluster (one worker: index 0 of 1)."""

    workers: int = 1
    index: int = 0
    task: str = "local"

    @property
    def is_chief(self) -> bool:
        return self.index == 0


def cluster_of(strategy) -> Cluster:
    """The chief and worker tasks of ``strategy``'s cluster (from ``TF_CONFIG``), chief first."""
    resolver = getattr(strategy, "cluster_resolver", None) if strategy is not None else None
    if resolver is None:
        return Cluster()
    spec = resolver.cluster_spec().as_dict()
    if not spec:
        return Cluster()
    members = [("chief", i) for i in range(len(spec.get("chief", [])))]
    members += [("worker", i) for i in range(len(spec.get("worker", [])))]
    task = (resolver.task_type, int(resolver.task_id or 0))
    if task not in members:
        raise InputError(f"TF_CONFIG: this task is {task[0]}:{task[1]}; recalibration runs on chief and worker tasks")
    return Cluster(len(members), members.index(task), f"/job:{task[0]}/task:{task[1]}")


class Executor:
    def __init__(self, strategy=None):
        import tensorflow as tf

        self.strategy = strategy if strategy is not None else tf.distribute.get_strategy()
        self.cluster = cluster_of(strategy)
        self.replicas = self.strategy.num_replicas_in_sync
        if self.cluster.workers > 1:
            local = len(self.strategy.extended.worker_devices)
            if local != 1:
                raise InputError(f"multi-worker recalibration runs one device per worker process; this worker has "
                                 f"{local}: start one worker per device (e.g. with CUDA_VISIBLE_DEVICES)")
        # collectives inside each step: local replicas only (workers merge once per pass)
        self.distributed = self.cluster.workers == 1 and self.replicas > 1
        self._merge_fn = None

    def compile(self, fn: Callable) -> Callable:
        """``fn(*tensors) -> (reduced, kept)`` as a ``tf.function``."""
        import tensorflow as tf

        if self.distributed:
            return tf.function(fn, reduce_retracing=True, autograph=False)
        compiled = None

        def call(*args):
            nonlocal compiled
            if compiled is None:
                signature = [tf.TensorSpec((None, *a.shape[1:]), a.dtype) for a in args]
                compiled = tf.function(fn, input_signature=signature, autograph=False)
            return compiled(*args)

        return call

    def feed(self, arrays: list) -> tuple:
        """One global batch as (per-replica) tensors."""
        import tensorflow as tf

        if not self.distributed:
            return tuple(tf.convert_to_tensor(a) for a in arrays)
        arrays = [np.asarray(a) for a in arrays]
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

    # -- across workers ------------------------------------------------------------
    def merge(self, moments: dict, samples: int, channels: dict, what: str) -> tuple[dict, int]:
        """Merge each worker's ``{key: Moments}`` and sample count into the cluster's totals.

        ``channels[key]`` is the length of each key's vectors (a worker whose
        shard is empty has none of its own). Every worker gets the same result.
        ``what`` names the pass in errors. On one worker this returns its
        arguments.
        """
        if self.cluster.workers == 1:
            return moments, samples
        keys = list(moments)
        sizes = [int(channels[k]) for k in keys]
        counts = np.concatenate([np.full(n, m.count) for n, m in zip(sizes, moments.values())]
                                + [[float(samples)], [float(m.batches) for m in moments.values()]])
        means = np.concatenate([m.mean if m.mean is not None else np.zeros(n) for n, m in zip(sizes, moments.values())]
                               + [np.zeros(1 + len(keys))])
        m2s = np.concatenate([m.m2 if m.m2 is not None else np.zeros(n) for n, m in zip(sizes, moments.values())]
                             + [np.zeros(1 + len(keys))])
        total, mean, m2 = self._all_reduce_moments(counts, means, m2s, what)
        merged, start = {}, 0
        for key, n in zip(keys, sizes):
            part = Moments()
            part.update(total[start], mean[start:start + n], m2[start:start + n])
            merged[key] = part
            start += n
        samples_total = int(round(total[start]))
        for i, key in enumerate(keys):
            merged[key].batches = int(round(total[start + 1 + i]))
        return merged, samples_total

    def barrier(self, what: str) -> None:
        """Wait until every worker gets here."""
        if self.cluster.workers > 1:
            self._all_reduce_moments(np.ones(1), np.zeros(1), np.zeros(1), what)

    def _all_reduce_moments(self, counts, means, m2s, what: str):
        import tensorflow as tf

        if self._merge_fn is None:
            def merge(count, mean, m2):
                context = tf.distribute.get_replica_context()
                # identity: values made inside the replica function carry this worker's device
                return merge_replicas(context, tf.identity(count), tf.identity(mean), tf.identity(m2))

            self._merge_fn = tf.function(merge, autograph=False)
        args = tuple(tf.constant(np.asarray(v, np.float64)) for v in (counts, means, m2s))
        try:
            with self.strategy.scope():
                result = self.strategy.run(self._merge_fn, args=args)
            return tuple(np.asarray(self.strategy.experimental_local_results(v)[0]) for v in result)
        except (tf.errors.UnavailableError, tf.errors.DeadlineExceededError, tf.errors.AbortedError,
                tf.errors.CancelledError, tf.errors.InternalError, tf.errors.UnknownError,
                tf.errors.FailedPreconditionError) as exc:
            raise ClusterError(describe_cluster_failure(exc, self.cluster, what)) from exc


def describe_cluster_failure(exc, cluster: Cluster, what: str) -> str:
    """One line: which worker failed (when TensorFlow says), at which point, and that nothing was written."""
    import tensorflow as tf

    text = str(getattr(exc, "message", exc))
    peers = sorted(set(re.findall(r"/job:\w+/(?:replica:\d+/)?task:\d+", text)) - {cluster.task})
    who = ", ".join(p.replace("/replica:0", "") for p in peers) or "another worker"
    if isinstance(exc, tf.errors.DeadlineExceededError):
        reason = f"{who} did not reach {what} in time (--worker-timeout)"
    else:
        reason = f"{who} stopped or cannot be reached ({what})"
    return f"TF_CONFIG cluster: {reason}; this worker ({cluster.task}) stops; nothing was written"


_WATCHDOG = """
import os, select, signal, sys
parent, timeout, message = int(sys.argv[1]), float(sys.argv[2]), sys.argv[3]
ready, _, _ = select.select([sys.stdin], [], [], timeout)
if not ready:
    sys.stderr.write(message + "\\n")
    sys.stderr.flush()
    try:
        os.kill(parent, signal.SIGKILL)
    except ProcessLookupError:
        pass
"""


def multi_worker_strategy(timeout: float):
    """A ``MultiWorkerMirroredStrategy`` over the cluster in ``TF_CONFIG``, once every worker is up.

    Must run before TensorFlow executes anything in this process. Collectives
    time out after ``timeout`` seconds. So does waiting for the cluster to
    come up, which TensorFlow does inside one C++ call that holds the GIL
    (no Python thread or signal handler runs meanwhile, SIGTERM included): a
    small watchdog process prints one line and kills this process if the
    cluster is not up in time (exit status 137; nothing has been written at
    that point).
    """
    import json
    import os
    import subprocess
    import sys

    text = os.environ.get("TF_CONFIG")
    if not text:
        raise InputError("--distribute multi-worker needs TF_CONFIG (the cluster and this task, as TensorFlow "
                         "documents it) in the environment of every worker")
    try:
        config = json.loads(text)
        cluster = config["cluster"]
        task = config["task"]
        members = len(cluster.get("chief", [])) + len(cluster.get("worker", []))
        where = f"{task['type']}:{task['index']}"
    except (ValueError, KeyError, TypeError, AttributeError) as exc:
        raise InputError(f"TF_CONFIG: not a cluster and task as TensorFlow documents them ({exc})") from exc
    import tensorflow as tf

    message = (f"bnfreeze: error: TF_CONFIG cluster: the {members} workers did not all start within {timeout:g} s "
               f"(this task is {where}); nothing was written")
    watchdog = subprocess.Popen([sys.executable, "-c", _WATCHDOG, str(os.getpid()), str(timeout), message],
                                stdin=subprocess.PIPE)
    try:
        options = tf.distribute.experimental.CommunicationOptions(timeout_seconds=timeout)
        return tf.distribute.MultiWorkerMirroredStrategy(communication_options=options)
    except (ValueError, RuntimeError, tf.errors.OpError) as exc:
        raise InputError(f"TF_CONFIG cluster: {str(exc).splitlines()[0][:200]}") from exc
    finally:
        watchdog.stdin.close()  # end of input: the watchdog leaves quietly
        watchdog.wait()
