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
    reference = "models/digits_cnn.keras"
    candidates = ["build/digits.onnx", "build/digits.tflite", "build/digits_savedmodel"]
    data = "models/digits_calib.npy"   # optional: else seeded random samples
    atol = 1e-4                        # per-check overrides

Relative paths are relative to the config file's folder.
"""

from __future__ import annotations

import tomllib
from dataclasses import dataclass
from pathlib import Path

from bnfreeze.compare import CHECKS, Tolerance
from bnfreeze.errors import InputError

OPTIONS = {"atol": float, "rtol": float, "batch_size": int, "device": str, "samples": int, "seed": int,
           "check": str, "require_gpu": bool, "locate": bool}


@dataclass
class Job:
    reference: Path
    candidates: list[Path]
    data: Path | None
    options: dict

    def verify_kwargs(self) -> dict:
        options = dict(self.options)
        tolerance = Tolerance(
            atol=options.pop("atol", None),
            rtol=options.pop("rtol", None),
            check=options.pop("check", "max"),
        )
        return {"data": self.data, "tolerance": tolerance, **options}


def _options(table: dict, where: str, path: Path) -> dict:
    options = {}
    for key, value in table.items():
        if key not in OPTIONS:
            continue
        kind = OPTIONS[key]
        if kind is float and isinstance(value, int):
            value = float(value)
        if not isinstance(value, kind):
            raise InputError(f"{path}: {where}.{key} must be a {kind.__name__}")
        if key == "check" and value not in CHECKS:
            raise InputError(f"{path}: {where}.check must be one of {', '.join(CHECKS)}")
        options[key] = value
    return options


def load_config(path) -> list[Job]:
    path = Path(path)
    if not path.is_file():
        raise InputError(f"{path}: no such config file")
    try:
        config = tomllib.loads(path.read_text())
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as exc:
        raise InputError(f"{path}: not valid TOML ({exc})") from exc
    base = path.parent
    defaults = _options(config.get("defaults", {}), "defaults", path)
    checks = config.get("check")
    if not isinstance(checks, list) or not checks:
        raise InputError(f"{path}: needs at least one [[check]] table")
    jobs = []
    for index, check in enumerate(checks):
        where = f"check[{index}]"
        unknown = set(check) - set(OPTIONS) - {"reference", "candidates", "data"}
        if unknown:
            raise InputError(f"{path}: {where} has unknown keys {', '.join(sorted(unknown))}")
        if "reference" not in check or not check.get("candidates"):
            raise InputError(f"{path}: {where} needs a reference and a non-empty candidates list")
        candidates = check["candidates"]
        if isinstance(candidates, str):
            candidates = [candidates]
        jobs.append(
            Job(
                reference=base / check["reference"],
                candidates=[base / c for c in candidates],
                data=base / check["data"] if check.get("data") else None,
                options={**defaults, **_options(check, where, path)},
            )
        )
    return jobs
