"""Errors that need no TensorFlow are answered before anything imports it.

A missing file, a missing option, an existing output without --force: each
command finds these first, so the user waits well under a second for the
line instead of TensorFlow's import (seconds). Checked here by what is
imported, not by a clock (scripts/bench_cli_latency.py measures the time):
every case runs through ``bnfreeze.cli.main`` in one fresh process, which
reports after each case whether ``tensorflow``, ``keras`` or ``tf2onnx``
is in ``sys.modules``.
"""

import json
import shutil
import subprocess
import sys

import pytest

#: the driver: runs each argv, and prints one JSON line per case (exit code, first stderr line, heavy modules)
DRIVER = r"""
import contextlib, io, json, sys
from bnfreeze.cli import main

for argv in json.loads(sys.argv[1]):
    err = io.StringIO()
    with contextlib.redirect_stderr(err):
        try:
            main(argv, prog_name="bnfreeze")
            code = 0
        except SystemExit as exc:
            code = exc.code
    heavy = sorted(m for m in ("tensorflow", "keras", "tf2onnx") if m in sys.modules)
    print(json.dumps({"argv": argv, "code": code, "stderr": err.getvalue(), "heavy": heavy}))
"""


@pytest.fixture()
def workdir(tmp_path, example_model_path):
    shutil.copy(example_model_path, tmp_path / "m.keras")
    (tmp_path / "exists.keras").write_bytes(b"")
    (tmp_path / "exists.json").write_bytes(b"")
    (tmp_path / "exists.onnx").write_bytes(b"")
    (tmp_path / "notes.txt").write_text("not a model\n")
    return tmp_path


CASES = [
    # (argv, words the one line must hold)
    (["fold", "missing.keras"], "missing.keras: no such file"),
    (["fold", "notes.txt"], "unknown model format"),
    (["fold", "m.keras", "-o", "exists.keras"], "exists.keras: already exists; pass --force"),
    (["fold", "m.keras", "--data", "missing.npy"], "missing.npy: no such file"),
    (["fold", "m.keras", "--onnx", "exists.onnx"], "exists.onnx: already exists"),
    (["fold", "m.keras", "--strict", "--max-kept", "2"], "--strict means --max-kept 0"),
    (["export", "m.keras"], "give --onnx, --savedmodel and/or --tflite"),
    (["export", "missing.keras", "--onnx", "a.onnx"], "missing.keras: no such file"),
    (["export", "m.keras", "--onnx", "exists.onnx"], "exists.onnx: already exists"),
    (["export", "m.keras", "--tflite", "a.onnx"], "must end in .tflite"),
    (["export", "m.keras", "--onnx", "a.onnx", "--opset", "99"], "--opset 99: tf2onnx"),
    (["fold", "m.keras", "--onnx", "a.onnx", "--opset", "0"], "--opset 0: tf2onnx"),
    (["verify", "--config", "missing.toml"], "missing.toml: no such config file"),
    (["verify"], "give a REFERENCE model and at least one CANDIDATE"),
    (["verify", "m.keras"], "give a REFERENCE model and at least one CANDIDATE"),
    (["verify", "m.keras", "missing.onnx"], "missing.onnx: no such file"),
    (["verify", "m.keras", "m.keras", "--data", "missing.npy"], "missing.npy: no such file"),
    (["verify", "m.keras", "m.keras", "--json", "exists.json"], "exists.json: already exists"),
    (["recalibrate", "missing.keras", "--calib-data", "x.npy"], "missing.keras: no such file"),
    (["recalibrate", "m.keras", "--calib-data", "missing.npy"], "missing.npy: no such file"),
    (["recalibrate", "m.keras", "--calib-data", "m.keras", "-o", "exists.keras"], "exists.keras: already exists"),
    (["recalibrate", "m.keras", "--calib-data", "m.keras", "--folded-output", "f.keras"], "--folded-output needs --fold"),
    (["quantize", "m.keras", "--calib-data", "m.keras"], "nothing to write"),
    (["quantize", "m.keras", "--calib-data", "missing.npy", "--tflite", "q.tflite"], "missing.npy: no such file"),
    (["quantize", "m.keras", "--calib-data", "m.keras", "--tflite", "q.tflite", "--report", "exists.json"],
     "exists.json: already exists"),
    (["quantize", "m.keras", "--calib-data", "m.keras", "--tflite", "q.tflite", "--check", "snr", "--min-top1", "0.9"],
     "--min-top1 applies to --check top1"),
    (["report", "missing.keras"], "missing.keras: no such file"),
    (["report", "m.keras", "--compare", "missing.keras"], "missing.keras: no such file"),
    (["report", "m.keras", "--data", "missing.npy"], "missing.npy: no such file"),
    (["inspect", "missing.keras"], "missing.keras: no such file"),
    (["inspect", "m.keras", "--json", "exists.json"], "exists.json: already exists"),
]


def test_errors_that_need_no_tensorflow_come_before_it(workdir):
    argvs = [argv for argv, _words in CASES]
    proc = subprocess.run([sys.executable, "-c", DRIVER, json.dumps(argvs)], cwd=workdir, capture_output=True,
                          text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr
    results = [json.loads(line) for line in proc.stdout.splitlines() if line.startswith("{")]
    assert len(results) == len(CASES), proc.stdout + proc.stderr
    for (argv, words), result in zip(CASES, results):
        line = result["stderr"].strip()
        assert result["code"] == 2, (argv, result)
        assert words in line and "\n" not in line and line.startswith("bnfreeze: error: "), (argv, line)
        assert result["heavy"] == [], f"{argv}: imported {result['heavy']} before saying {line!r}"
    assert sorted(p.name for p in workdir.iterdir()) == ["exists.json", "exists.keras", "exists.onnx", "m.keras",
                                                         "notes.txt"]


def test_a_command_that_gets_past_the_checks_imports_tensorflow_quietly(workdir):
    """The import moved from the start of every command to its first use: still quiet, and still working."""
    proc = subprocess.run([sys.executable, "-m", "bnfreeze.cli", "inspect", "m.keras"], cwd=workdir,
                          capture_output=True, text=True, timeout=300, env={"PATH": "/usr/bin:/bin"})
    assert proc.returncode == 0, proc.stderr
    assert "bn1" in proc.stdout
    assert proc.stderr == "", proc.stderr  # no CUDA probing, no oneDNN notice, no absl preamble
