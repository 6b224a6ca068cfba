"""Recalibration on a tf.distribute MirroredStrategy over two logical CPU devices equals one device."""

import json
import os
import subprocess
import sys
from pathlib import Path


def test_mirrored_strategy_matches_single_device():
    script = Path(__file__).with_name("distributed_check.py")
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2", CUDA_VISIBLE_DEVICES="")
    proc = subprocess.run([sys.executable, str(script)], capture_output=True, text=True, env=env, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    report = json.loads(proc.stdout.strip().splitlines()[-1])
    assert report["replicas"] == 2
    assert report["exact_passes"] == 5
    for mode in ("exact", "precise", "ema"):
        assert report[mode] < 1e-5, (mode, report)
