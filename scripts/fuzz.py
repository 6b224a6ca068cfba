"""A longer fuzzing run than CI's: ``python scripts/fuzz.py [CASES] [SEED]`` (default 3000 cases).

Same harness as tests/test_fuzz.py (tests/fuzz_harness.py); prints the
outcomes per file kind, mutation, command and exit code, and every failure.
"""

import json
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "tests"))

from fuzz_harness import run  # noqa: E402

if __name__ == "__main__":
    cases = int(sys.argv[1]) if len(sys.argv) > 1 else 3000
    seed = int(sys.argv[2]) if len(sys.argv) > 2 else 1
    summary = run(cases, seed)
    for key, count in sorted(summary["outcomes"].items()):
        print(f"{count:6d}  {key}")
    print(f"{summary['cases']} cases, {len(summary['failures'])} failures")
    for failure in summary["failures"]:
        print(json.dumps(failure))
    sys.exit(1 if summary["failures"] else 0)
