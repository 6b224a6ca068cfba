"""Long commands say what they do as they go, in a pipe too: the header first, progress lines while it runs,
the results when they are known (a pipe used to get everything at the end, in one go)."""

import io
import os
import subprocess
import sys

from rich.console import Console

from bnfreeze.cli.tables import LineProgress


class Clock:
    def __init__(self):
        self.now = 0.0

    def __call__(self):
        return self.now


def test_line_progress_prints_steps_at_intervals_and_the_end():
    out, clock = io.StringIO(), Clock()
    with LineProgress(Console(file=out, force_terminal=False, width=80), interval=10, clock=clock) as progress:
        progress.start("loading m.keras", None)
        clock.now = 3
        progress.start("exact: pass 1/2", 100)
        for _ in range(10):
            clock.now += 2
            progress.advance(10)
        progress.start("exact: pass 2/2", None)  # a pass whose size is unknown (TFRecords)
        clock.now += 1
        progress.advance(7)
    lines = out.getvalue().splitlines()
    assert lines == [
        "loading m.keras ...",
        "exact: pass 1/2: 0/100 samples",
        "exact: pass 1/2: 50/100 samples, 5 samples/s, 10.0 s",  # one line per 10 s, not one per batch
        "exact: pass 1/2: 100/100 samples, 5 samples/s, 20.0 s",  # and one when its samples are done
        "exact: pass 2/2 ...",
        "exact: pass 2/2: 7 samples, 7 samples/s, 1.0 s",  # said when the next step (or the end) comes
    ]


def _merged(args, cwd):
    """stdout and stderr in one pipe, in the order the process wrote them (as a CI log shows them)."""
    env = {k: v for k, v in os.environ.items() if k not in ("COLUMNS", "LINES")}
    proc = subprocess.run([sys.executable, "-m", "bnfreeze.cli", *map(str, args)], cwd=cwd, stdout=subprocess.PIPE,
                          stderr=subprocess.STDOUT, text=True, env=env, timeout=600)
    assert proc.returncode == 0, proc.stdout
    return proc.stdout.splitlines()


def _index(lines, start):
    return next(i for i, line in enumerate(lines) if line.startswith(start))


def test_fold_and_verify_print_their_header_before_the_work_in_a_pipe(example_model_path, tmp_path):
    lines = _merged(["fold", example_model_path, "-o", tmp_path / "f.keras", "--onnx", tmp_path / "f.onnx"], tmp_path)
    header, parity = _index(lines, "bnfreeze fold: "), _index(lines, "parity on ")
    exporting, artifacts = _index(lines, f"exporting {tmp_path / 'f.onnx'}"), _index(lines, "artifacts ")
    assert _index(lines, "loading ") < header < parity < exporting < artifacts, lines
    lines = _merged(["verify", example_model_path, tmp_path / "f.keras", tmp_path / "f.onnx", "--samples", 20],
                    tmp_path)
    header = _index(lines, "bnfreeze verify: ")
    started, done = _index(lines, "comparing 2 candidate runs"), _index(lines, "passed ")
    assert _index(lines, "loading the reference") < header < started < done, lines
    assert lines[started].endswith(": 0/20 samples") and "20/20 samples" in lines[started + 1]
    assert lines[-1].startswith("criterion: ") and lines[-1].endswith("passed")
