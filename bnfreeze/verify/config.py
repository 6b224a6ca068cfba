"""``bnfreeze verify --config parity.toml``: parity checks listed in a file, for CI.

::

    [defaults]            # optional; any verify option
    atol = 1e-5
    rtol = 1e-4
    batch_size = 1
    device = "cpu"        # cpu | gpu | all
    samples = 8
    seed = 0

    [[check]]
    reference = "models/digits_cnn.keras"      # any artifact: .keras, SavedModel folder, .onnx, .tflite
    candidates = ["build/digits.onnx", "build/digits.tflite", "build/digits_savedmodel"]
    data = "models/digits_calib.npy"   # optional: .npy, .npz or a folder of images; else seeded random samples
    atol = 1e-4                        # per-check overrides

    [[check]]                          # a quantized model: its classes must agree
    reference = "build/digits.onnx"
    candidates = ["build/digits_int8.tflite"]
    data = "models/digits_test.npz"
    check = "top1"                     # or ["top1", "snr"]: all must hold
    min_top1 = 0.98
    output_map = { probs = "Identity" }   # or "probs=Identity"; input_map likewise
    signature = "serving_default"      # SavedModel / TFLite signature

Keys mean what the command-line options of the same name mean (``-`` written
``_``). A ``[[check]]`` table that sets ``check`` does not inherit the
defaults' bounds of other checks (``atol``/``rtol`` do not apply to
``check = "top1"``); bounds it sets itself must apply to its checks, as on the
command line. Relative paths are relative to the config file's folder.
"""

from __future__ import annotations

import os
import tomllib
from dataclasses import dataclass
from pathlib import Path

from bnfreeze.compare import CHECKS, TOLERANCE_CHECKS, criteria
from bnfreeze.errors import InputError
from bnfreeze.verify.matching import parse_map

OPTIONS = {"atol": float, "rtol": float, "batch_size": int, "device": str, "samples": int, "seed": int,
           "check": (str, list), "require_gpu": bool, "locate": bool, "min_top1": float, "min_snr": float,
           "signature": str, "input_map": (str, dict), "output_map": (str, dict), "rescale": float}
#: the bound options, and the checks they belong to
BOUNDS = {"atol": TOLERANCE_CHECKS, "rtol": TOLERANCE_CHECKS, "min_top1": ("top1",), "min_snr": ("snr",)}


@dataclass
class Job:
    reference: Path
    candidates: list[Path]
    data: Path | None
    options: dict

    def verify_kwargs(self) -> dict:
        options = dict(self.options)
        tolerance = criteria(
            atol=options.pop("atol", None),
            rtol=options.pop("rtol", None),
            check=options.pop("check", "max"),
            min_top1=options.pop("min_top1", None),
            min_snr=options.pop("min_snr", None),
        )
        return {"data": self.data, "tolerance": tolerance, **options}


def _options(table: dict, where: str, path: Path) -> dict:
    options = {}
    for key, value in table.items():
        if key not in OPTIONS:
            continue
        kind = OPTIONS[key]
        if kind is float and isinstance(value, int) and not isinstance(value, bool):
            value = float(value)
        if not isinstance(value, kind) or (kind in (int, float) and isinstance(value, bool)):
            names = " or ".join(k.__name__ for k in (kind if isinstance(kind, tuple) else (kind,)))
            raise InputError(f"{path}: {where}.{key} must be a {names.replace('dict', 'table').replace('str', 'string')}")
        if key == "check":
            checks = [value] if isinstance(value, str) else value
            if not checks or not all(isinstance(c, str) and c in CHECKS for c in checks):
                raise InputError(f"{path}: {where}.check must be one of {', '.join(CHECKS)} (or a list of them)")
        if key.endswith("_map"):
            if isinstance(value, dict) and not all(isinstance(v, str) for v in value.values()):
                raise InputError(f"{path}: {where}.{key} maps reference names to candidate names (strings)")
            try:
                value = parse_map(value, f"{where}.{key}")
            except InputError as exc:
                raise InputError(f"{path}: {exc}") from exc
        options[key] = value
    return options


def _beside(base: Path, path: str) -> Path:
    """A path of the config file, relative to its folder, written plainly (``docs/ci/../m.onnx`` -> ``docs/m.onnx``)."""
    return Path(os.path.normpath(base / path))


def _merge(defaults: dict, own: dict) -> dict:
    """The check's options over the defaults; a check that sets ``check`` drops inherited bounds of other checks."""
    merged = dict(defaults)
    if "check" in own:
        checks = [own["check"]] if isinstance(own["check"], str) else own["check"]
        for key, belongs in BOUNDS.items():
            if key in merged and not set(checks) & set(belongs):
                del merged[key]
    merged.update(own)
    return merged


def load_config(path) -> list[Job]:
    path = Path(path)
    if not path.is_file():
        raise InputError(f"{path}: no such config file")
    try:
        config = tomllib.loads(path.read_text())
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as exc:
        raise InputError(f"{path}: not valid TOML ({exc})") from exc
    base = path.parent
    stray = sorted(set(config) - {"defaults", "check"})
    if stray:
        raise InputError(f"{path}: unknown top-level key or table {', '.join(stray)} (expected [defaults] and [[check]])")
    if not isinstance(config.get("defaults", {}), dict):
        raise InputError(f"{path}: [defaults] must be a table")
    unknown = set(config.get("defaults", {})) - set(OPTIONS)
    if unknown:
        raise InputError(f"{path}: defaults has unknown keys {', '.join(sorted(unknown))}")
    defaults = _options(config.get("defaults", {}), "defaults", path)
    checks = config.get("check")
    if not isinstance(checks, list) or not checks:
        raise InputError(f"{path}: needs at least one [[check]] table")
    jobs = []
    for index, check in enumerate(checks):
        where = f"check[{index}]"
        if not isinstance(check, dict):
            raise InputError(f"{path}: {where} must be a [[check]] table")
        unknown = set(check) - set(OPTIONS) - {"reference", "candidates", "data"}
        if unknown:
            raise InputError(f"{path}: {where} has unknown keys {', '.join(sorted(unknown))}")
        if "reference" not in check or not check.get("candidates"):
            raise InputError(f"{path}: {where} needs a reference and a non-empty candidates list")
        candidates = check["candidates"]
        if isinstance(candidates, str):
            candidates = [candidates]
        if not isinstance(candidates, list) or not all(isinstance(c, str) for c in candidates):
            raise InputError(f"{path}: {where}.candidates must be a path or a list of paths (strings)")
        for key in ("reference", "data"):
            if key in check and not isinstance(check[key], str):
                raise InputError(f"{path}: {where}.{key} must be a path (a string)")
        job = Job(
            reference=_beside(base, check["reference"]),
            candidates=[_beside(base, c) for c in candidates],
            data=_beside(base, check["data"]) if check.get("data") else None,
            options=_merge(defaults, _options(check, where, path)),
        )
        try:
            job.verify_kwargs()  # option combinations are checked before anything runs
        except InputError as exc:
            raise InputError(f"{path}: {where}: {exc}") from exc
        jobs.append(job)
    return jobs
