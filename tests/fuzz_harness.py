"""Mangled inputs for every command, run in one process through click's test runner.

Each case takes a real file (a .keras model, a .npz data set, an .onnx or
.tflite artifact), damages it — truncation, bit flips, or a rewritten zip archive
with a member removed, replaced or corrupted — and runs a command on it. A
case passes when the command exits 1 or 2 (never 0, never 3 = internal error,
never a crash), prints no traceback, says what is wrong on one line naming the
file, and writes nothing. Run by tests/test_fuzz.py (a few hundred cases) and
scripts/fuzz.py (as many as you like). Prints a JSON summary on its last line.
"""

from __future__ import annotations

import io
import json
import os
import random
import shutil
import sys
import tempfile
import zipfile
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
REPO = Path(__file__).resolve().parents[1]


def truncate(data: bytes, rng: random.Random) -> bytes:
    return data[: rng.randrange(0, max(len(data) - 1, 1))]


def flip_bits(data: bytes, rng: random.Random) -> bytes:
    raw = bytearray(data)
    for _ in range(rng.randint(1, 8)):
        i = rng.randrange(len(raw))
        raw[i] ^= 1 << rng.randrange(8)
    return bytes(raw)


def mangle_zip(data: bytes, rng: random.Random) -> bytes:
    """Rewrite the archive with one member removed, emptied, replaced by junk, truncated or renamed."""
    source = zipfile.ZipFile(io.BytesIO(data))
    names = source.namelist()
    # an .npz's labels are optional: losing y leaves valid data, so damage the inputs
    victim = "x.npy" if "x.npy" in names else rng.choice(names)
    how = rng.choice(["remove", "empty", "junk", "truncate", "rename", "json"])
    out = io.BytesIO()
    with zipfile.ZipFile(out, "w") as target:
        for name in names:
            content = source.read(name)
            if name == victim:
                if how == "remove":
                    continue
                if how == "empty":
                    content = b""
                elif how == "junk":
                    content = bytes(rng.randrange(256) for _ in range(rng.randint(1, 200)))
                elif how == "truncate":
                    content = content[: rng.randrange(0, max(len(content), 1))]
                elif how == "rename":
                    name = name + ".moved"
                elif how == "json":
                    content = json.dumps(rng.choice([[], {}, {"class_name": "Nope"}, 3, "x"])).encode()
            target.writestr(name, content)
    return out.getvalue()


def harmless(original: bytes, damaged: bytes) -> bool:
    """A .keras whose only change is a metadata.json that is still a JSON object: Keras reads only
    config.json and the weights, so the model is intact and a command rightly succeeds on it."""
    try:
        before, after = zipfile.ZipFile(io.BytesIO(original)), zipfile.ZipFile(io.BytesIO(damaged))
        if sorted(before.namelist()) != sorted(after.namelist()):
            return False
        changed = [n for n in before.namelist() if before.read(n) != after.read(n)]
        return changed == ["metadata.json"] and isinstance(json.loads(after.read("metadata.json")), dict)
    except (zipfile.BadZipFile, ValueError, KeyError):
        return False


def build_sources(work: Path) -> dict[str, Path]:
    from click.testing import CliRunner

    from bnfreeze.cli import main

    model = REPO / "models" / "digits_cnn.keras"
    onnx, tflite = work / "good.onnx", work / "good.tflite"
    result = CliRunner().invoke(main, ["export", str(model), "--onnx", str(onnx), "--tflite", str(tflite)])
    assert result.exit_code == 0, result.output
    return {"keras": model, "npz": REPO / "models" / "digits_test.npz", "onnx": onnx, "tflite": tflite}


def commands(kind: str, bad: Path, out: Path, good_model: Path) -> list[list[str]]:
    if kind == "keras":
        return [["fold", str(bad), "-o", str(out / "f.keras")], ["inspect", str(bad), "--json", str(out / "i.json")],
                ["export", str(bad), "--onnx", str(out / "e.onnx")],
                ["recalibrate", str(bad), "--calib-data", str(REPO / "models" / "digits_calib.npy"), "-o", str(out / "r.keras")],
                ["report", str(bad), "-o", str(out / "r.html")],
                ["verify", str(bad), str(good_model)]]
    if kind == "npz":
        return [["recalibrate", str(good_model), "--calib-data", str(bad), "-o", str(out / "r.keras")],
                ["verify", str(good_model), str(good_model), "--data", str(bad)]]
    return [["verify", str(good_model), str(bad)]]


def run(cases: int, seed: int) -> dict:
    from click.testing import CliRunner

    from bnfreeze.cli import main

    rng = random.Random(seed)
    runner = CliRunner()
    failures, outcomes = [], {}
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        sources = build_sources(work)
        mutations = {"truncate": truncate, "flip": flip_bits, "zip": mangle_zip}
        for case in range(cases):
            kind = rng.choice(list(sources))
            how = rng.choice([m for m in mutations if m != "zip" or kind in ("keras", "npz")])
            original = sources[kind].read_bytes()
            damaged = mutations[how](original, rng)
            if damaged == original:
                continue
            case_dir = work / f"case{case}"
            out = case_dir / "out"
            out.mkdir(parents=True)
            bad = case_dir / f"bad{sources[kind].suffix}"
            bad.write_bytes(damaged)
            args = rng.choice(commands(kind, bad, out, sources["keras"]))
            result = runner.invoke(main, args)
            text = (result.output or "") + (getattr(result, "stderr", "") or "")
            code = result.exit_code
            written = sorted(p.name for p in out.iterdir())
            leftovers = sorted(p.name for p in case_dir.iterdir() if p.name not in ("out", bad.name))
            problem = None
            if code == 0 and kind in ("onnx", "tflite") and args[0] == "verify":
                # a flipped bit in a name or the low bits of a weight leaves an equivalent graph: verify
                # judging it within tolerance is the right answer, and verify writes nothing here
                code = "0 (equivalent)"
            elif code == 0 and kind == "keras" and how == "zip" and harmless(original, damaged):
                code = "0 (metadata only)"
            elif code not in (1, 2):
                problem = f"exit {code}"
            elif "Traceback" in text:
                problem = "traceback"
            elif written or leftovers:
                problem = f"wrote {written + leftovers}"
            elif code == 2 and str(bad) not in text and bad.name not in text:
                problem = "message does not name the file"
            key = f"{kind}/{how}/{args[0]}:{code}"
            outcomes[key] = outcomes.get(key, 0) + 1
            if problem:
                failures.append({"case": case, "kind": kind, "mutation": how, "args": args[0], "problem": problem,
                                 "output": text.strip().splitlines()[-3:]})
            shutil.rmtree(case_dir)
    return {"cases": sum(outcomes.values()), "failures": failures, "outcomes": outcomes}


if __name__ == "__main__":
    cases = int(sys.argv[1]) if len(sys.argv) > 1 else 200
    seed = int(sys.argv[2]) if len(sys.argv) > 2 else 0
    sys.path.insert(0, str(REPO))
    summary = run(cases, seed)
    print(json.dumps(summary))
