"""How fast the command line answers before any real work: --help, a command's --help, an option error.

Each is run as a user runs it (a fresh process), several times, interleaved
with `python -c "import tensorflow"` as the yardstick; prints the median
seconds and the ratio to the TensorFlow import. Goal: well under a second,
i.e. TensorFlow is not imported to print help or to reject an option.

    python scripts/bench_cli_latency.py [--repeat 5]
"""

from __future__ import annotations

import argparse
import statistics
import subprocess
import sys
import time

CASES = {
    "bnfreeze --help": ["-m", "bnfreeze.cli", "--help"],
    "bnfreeze fold --help": ["-m", "bnfreeze.cli", "fold", "--help"],
    "bnfreeze verify --help": ["-m", "bnfreeze.cli", "verify", "--help"],
    "bnfreeze fold --no-such-option": ["-m", "bnfreeze.cli", "fold", "--no-such-option"],
    "python -c 'import tensorflow' (yardstick)": ["-c", "import tensorflow"],
}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeat", type=int, default=5)
    args = parser.parse_args()
    times = {name: [] for name in CASES}
    for _ in range(args.repeat):
        for name, argv in CASES.items():
            start = time.perf_counter()
            subprocess.run([sys.executable, *argv], capture_output=True, env={"TF_CPP_MIN_LOG_LEVEL": "3",
                                                                                "PATH": "/usr/bin:/bin"})
            times[name].append(time.perf_counter() - start)
    yardstick = statistics.median(times["python -c 'import tensorflow' (yardstick)"])
    print(f"{'command':<45} {'median s':>9} {'vs TF import':>13}")
    for name, values in times.items():
        median = statistics.median(values)
        print(f"{name:<45} {median:>9.3f} {median / yardstick:>12.2f}x")


if __name__ == "__main__":
    main()
