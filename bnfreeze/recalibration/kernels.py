"""BatchNormalization as recalibration passes run it: one fused op where that is exact.

Keras runs an inference BN as ``tf.nn.batch_normalization``: separate
multiply and add passes over the activation (and a separate ReLU pass after
it). A pass of recalibration computes the same function with TensorFlow's
``FusedBatchNormV3`` in inference mode: one pass over the activation, which
Grappler also fuses with a following ReLU. Both compute ``(x - mean) *
rsqrt(variance + epsilon) * gamma + beta`` in float32 and differ by float
rounding only. Where the fused op does not apply (inputs other than float32,
a channel axis other than the last, a mixed-precision layer), the layer's own
computation runs instead.
"""

from __future__ import annotations


def _fusable(layer, x, axis: int) -> bool:
    import tensorflow as tf

    rank = x.shape.rank
    return (x.dtype == tf.float32 and str(layer.compute_dtype) == "float32" and rank is not None and 2 <= rank
            and axis % rank == rank - 1 and str(layer.moving_mean.dtype) == "float32")


def _fused(layer, x, mean, variance):
    import tensorflow as tf

    rank = x.shape.rank
    channels = layer.moving_mean.shape[0]
    if rank == 4:
        x4 = x
    else:
        shape = tf.shape(x)
        x4 = tf.reshape(x, tf.stack([shape[0], 1, -1, channels]))
    scale = tf.cast(layer.gamma, tf.float32) if layer.scale else tf.ones([channels], tf.float32)
    offset = tf.cast(layer.beta, tf.float32) if layer.center else tf.zeros([channels], tf.float32)
    y = tf.raw_ops.FusedBatchNormV3(
        x=x4, scale=scale, offset=offset, mean=tf.cast(mean, tf.float32), variance=tf.cast(variance, tf.float32),
        epsilon=float(layer.epsilon), exponential_avg_factor=1.0, data_format="NHWC", is_training=False,
    )[0]
    return y if rank == 4 else tf.reshape(y, tf.shape(x))


def inference(layer, x, axis: int | None = None):
    """``layer(x, training=False)`` as one fused op, or None where the layer's own call must run.

    ``axis``: the channel axis of ``x`` when it is not the layer's own (a BN
    inside ``TimeDistributed`` sees one time step at a time; here ``x`` holds
    them all, one axis further out).
    """
    axis = layer.axis if axis is None else axis
    if _fusable(layer, x, axis):
        return _fused(layer, x, layer.moving_mean, layer.moving_variance)
    if x.shape.rank is not None and axis % x.shape.rank != layer.axis % x.shape.rank:
        return normalise(layer, x, layer.moving_mean, layer.moving_variance, axis)
    return None


def normalise(layer, x, mean, variance, axis: int | None = None):
    """BN of ``x`` with the given statistics (float64 or float32) instead of the moving ones."""
    import keras

    axis = layer.axis if axis is None else axis
    if _fusable(layer, x, axis):
        return _fused(layer, x, mean, variance)
    compute = keras.backend.result_type(x.dtype, "float32")
    y = keras.ops.batch_normalization(
        keras.ops.cast(x, compute), keras.ops.cast(mean, compute), keras.ops.cast(variance, compute),
        axis=axis, offset=keras.ops.cast(layer.beta, compute) if layer.center else None,
        scale=keras.ops.cast(layer.gamma, compute) if layer.scale else None, epsilon=layer.epsilon,
    )
    return keras.ops.cast(y, layer.compute_dtype)
