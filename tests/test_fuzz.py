"""Truncated, bit-flipped and zip-mangled files fed to every command: exit 1/2, one line, nothing written.

The cases run in one separate process (tests/fuzz_harness.py), so that a
crash would fail this test instead of the test session. ``BNFREEZE_FUZZ_CASES``
changes the number of cases (default 200, about a minute on 2 cores); scripts/fuzz.py runs longer.
"""

import json
import os
import subprocess
import sys
from pathlib import Path


def test_mangled_inputs_never_crash_or_write():
    cases = int(os.environ.get("BNFREEZE_FUZZ_CASES", "200"))
    harness = Path(__file__).with_name("fuzz_harness.py")
    proc = subprocess.run([sys.executable, str(harness), str(cases), "0"], capture_output=True, text=True,
                          timeout=1800, env=dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2"))
    assert proc.returncode == 0, proc.stderr[-3000:]
    summary = json.loads(proc.stdout.strip().splitlines()[-1])
    assert summary["cases"] >= cases * 0.9
    assert summary["failures"] == [], json.dumps(summary["failures"][:5], indent=1)
    kinds = {key.split("/")[0] for key in summary["outcomes"]}
    mutations = {key.split("/")[1] for key in summary["outcomes"]}
    assert kinds == {"keras", "npz", "onnx", "tflite"} and mutations == {"truncate", "flip", "zip"}
