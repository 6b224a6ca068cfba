"""Run by test_distribute.py in a fresh process: two logical CPU devices, MirroredStrategy.

Prints the largest relative difference between single-device and mirrored
statistics for each mode, as JSON on the last line.
"""

import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import tensorflow as tf  # noqa: E402

cpu = tf.config.list_physical_devices("CPU")[0]
tf.config.set_logical_device_configuration(cpu, [tf.config.LogicalDeviceConfiguration()] * 2)

import numpy as np  # noqa: E402

from bnfreeze.recalibration import recalibrate  # noqa: E402
from helpers import calibration, residual_model  # noqa: E402
from test_recalibrate import bn_statistics, data_of  # noqa: E402

model = residual_model(seed=7)
x = calibration(model, samples=45)  # 45 = 2 full batches of 16 and an odd 13: uneven replica splits
strategy = tf.distribute.MirroredStrategy(["/cpu:0", "/cpu:1"])
report = {"replicas": strategy.num_replicas_in_sync}
for mode in ("exact", "precise", "ema"):
    single = bn_statistics(recalibrate(model, data_of(model, x), mode=mode, batch_size=16).model)
    mirrored_result = recalibrate(model, data_of(model, x), mode=mode, batch_size=16, strategy=strategy)
    mirrored = bn_statistics(mirrored_result.model)
    worst = 0.0
    for name in single:
        (mean_a, var_a), (mean_b, var_b) = single[name], mirrored[name]
        # means in units of the standard deviation, variances relative
        worst = max(worst, float(np.max(np.abs(mean_a - mean_b) / np.sqrt(var_a))),
                    float(np.max(np.abs(var_a - var_b) / var_a)))
    report[mode] = worst
    report[mode + "_passes"] = mirrored_result.passes
print(json.dumps(report))
