"""How fast the command line answers before any real work: help, option errors, and the errors that need no
TensorFlow (a missing file, a missing option, an existing output without --force).

Each is run as a user runs it (a fresh process), several times, interleaved
with `python -c "import tensorflow"` as the yardstick and with the same error
as it was answered before (TensorFlow imported first, then the error: the
`--tf-first` rows); prints the median seconds, the ratio to the TensorFlow
import and, for each error, the ratio to its TensorFlow-first twin. Goal: an
error that needs no TensorFlow within about 1 s, i.e. TensorFlow is not
imported to print help, to reject an option, or to say that a file is missing.

    python scripts/bench_cli_latency.py [--repeat 5]
"""

from __future__ import annotations

import argparse
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
YARDSTICK = "python -c 'import tensorflow' (yardstick)"

#: the shell's view of each case: (label, bnfreeze argv or None for the yardstick, an error that needs no TF)
CASES = [
    ("bnfreeze --help", ["--help"], False),
    ("bnfreeze fold --help", ["fold", "--help"], False),
    ("bnfreeze verify --help", ["verify", "--help"], False),
    ("bnfreeze fold --no-such-option (click's error)", ["fold", "--no-such-option"], False),
    ("bnfreeze fold missing.keras", ["fold", "missing.keras"], True),
    ("bnfreeze export m.keras (no --onnx/...)", ["export", "m.keras"], True),
    ("bnfreeze verify (no REFERENCE)", ["verify"], True),
    ("bnfreeze fold m.keras -o exists.keras", ["fold", "m.keras", "-o", "exists.keras"], True),
    ("bnfreeze recalibrate m.keras --calib-data missing.npy", ["recalibrate", "m.keras", "--calib-data", "missing.npy"],
     True),
    (YARDSTICK, None, False),
]

#: the same command with TensorFlow imported first, as every command did before its checks moved ahead of it
TF_FIRST = "import tensorflow, sys; from bnfreeze.cli import main; main(sys.argv[1:], prog_name='bnfreeze')"


def _command(argv, tf_first: bool) -> list[str]:
    if argv is None:
        return [sys.executable, "-c", "import tensorflow"]
    if tf_first:
        return [sys.executable, "-c", TF_FIRST, *argv]
    return [sys.executable, "-m", "bnfreeze.cli", *argv]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeat", type=int, default=5)
    args = parser.parse_args()
    runs = [(label, argv, False) for label, argv, _error in CASES]
    runs += [(f"{label} --tf-first", argv, True) for label, argv, error in CASES if error]
    env = {"TF_CPP_MIN_LOG_LEVEL": "3", "PATH": "/usr/bin:/bin"}
    times: dict[str, list[float]] = {label: [] for label, _argv, _tf in runs}
    with tempfile.TemporaryDirectory() as folder:
        shutil.copy(REPO / "models" / "digits_cnn.keras", Path(folder) / "m.keras")
        (Path(folder) / "exists.keras").write_bytes(b"")
        for _ in range(args.repeat):
            for label, argv, tf_first in runs:  # interleaved: a load change on the machine hits every case
                start = time.perf_counter()
                proc = subprocess.run(_command(argv, tf_first), capture_output=True, env=env, cwd=folder)
                times[label].append(time.perf_counter() - start)
                if argv is not None and argv[-1] != "--help" and proc.returncode != 2:
                    raise SystemExit(f"{label}: exit {proc.returncode}, expected 2 (bad input)\n{proc.stderr.decode()}")
    yardstick = statistics.median(times[YARDSTICK])
    width = max(len(label) for label in times)
    print(f"{'command':<{width}} {'median s':>9} {'vs TF import':>13} {'vs TF first':>12}")
    for label, _argv, tf_first in runs:
        if tf_first:
            continue
        median = statistics.median(times[label])
        twin = times.get(f"{label} --tf-first")
        versus = f"{median / statistics.median(twin):>11.2f}x" if twin else f"{'':>12}"
        print(f"{label:<{width}} {median:>9.3f} {median / yardstick:>12.2f}x {versus}")
    for label, _argv, tf_first in runs:
        if tf_first:
            median = statistics.median(times[label])
            print(f"{label:<{width}} {median:>9.3f} {median / yardstick:>12.2f}x")


if __name__ == "__main__":
    main()
