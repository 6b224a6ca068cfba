"""``bnfreeze.export``: SavedModel, ONNX and TFLite artifacts, each checked before it is written.

Every artifact is written to a temporary path beside its destination, loaded
with its runtime, and compared with the Keras model on seeded inputs (one
sample and a batch, or the fixed batch size). Only when every requested
artifact passes are they renamed into place; otherwise nothing is written.
"""

from __future__ import annotations

import contextlib
from dataclasses import dataclass, field
from pathlib import Path

from bnfreeze.compare import Tolerance, summarize
from bnfreeze.errors import InputError, ParityError
from bnfreeze.export.formats import DEFAULT_OPSET, ExportError, write_onnx, write_savedmodel, write_tflite
from bnfreeze.io.files import atomic_path, check_output_paths, committed_together, is_special
from bnfreeze.verify.runners import OnnxRunner, SavedModelRunner, TFLiteRunner
from bnfreeze.io.signature import input_specs
from bnfreeze.parity import fixed_batch, integer_ranges
from bnfreeze.verify.harness import check_inputs, compare_runner, random_feeds, run_reference

#: kind -> (writer, runner, what the destination must look like)
FORMATS = {
    "savedmodel": (write_savedmodel, SavedModelRunner),
    "onnx": (write_onnx, OnnxRunner),
    "tflite": (write_tflite, TFLiteRunner),
}


@dataclass
class Artifact:
    kind: str
    path: str
    max_abs: float
    max_rel: float
    passed: bool
    seconds: float = 0.0
    details: dict = field(default_factory=dict)

    def as_dict(self) -> dict:
        return {"kind": self.kind, "path": self.path, "max_abs": self.max_abs, "max_rel": self.max_rel,
                "passed": self.passed, "seconds": self.seconds, **self.details}


def requested(onnx=None, savedmodel=None, tflite=None) -> dict[str, Path]:
    wanted = {"onnx": onnx, "savedmodel": savedmodel, "tflite": tflite}
    return {kind: Path(path) for kind, path in wanted.items() if path is not None}


def check_destinations(targets: dict[str, Path], force: bool, *, check_paths: bool = True) -> None:
    """Suffixes of the requested artifacts; with ``check_paths`` also that each may be written and none lies
    inside the SavedModel folder (:func:`bnfreeze.io.files.check_output_paths`)."""
    targets = {kind: Path(path) for kind, path in targets.items()}
    if "onnx" in targets and targets["onnx"].suffix != ".onnx" and not is_special(targets["onnx"]):
        raise InputError(f"{targets['onnx']}: an ONNX file must end in .onnx")
    if "tflite" in targets and targets["tflite"].suffix != ".tflite" and not is_special(targets["tflite"]):
        raise InputError(f"{targets['tflite']}: a TFLite file must end in .tflite")
    if check_paths:
        check_output_paths([], [(path, kind == "savedmodel") for kind, path in targets.items()], force)


def export(
    model,
    *,
    onnx=None,
    savedmodel=None,
    tflite=None,
    opset: int = DEFAULT_OPSET,
    batch_size: int | None = None,
    force: bool = False,
    tolerance: Tolerance = Tolerance(),
    seed: int = 0,
    outputs: contextlib.ExitStack | None = None,
    progress=None,
) -> list[Artifact]:
    """Write the requested artifacts of ``model``; raise ParityError (writing nothing) if one differs.

    ``outputs`` (from :func:`bnfreeze.io.files.committed_together`) puts the
    artifacts in place together with the caller's other outputs; by default
    they are committed together when every artifact has passed. ``progress`` hears of each artifact as its
    conversion starts (:mod:`bnfreeze.io.progress`).
    """
    import time

    targets = requested(onnx, savedmodel, tflite)
    if not targets:
        raise InputError("nothing to export: give --onnx, --savedmodel and/or --tflite")
    if batch_size is not None and batch_size < 1:
        raise InputError(f"--batch-size must be >= 1, got {batch_size}")
    check_destinations(targets, force)
    if "onnx" in targets:
        from bnfreeze.export.formats import check_opset

        check_opset(opset)
    tolerance = tolerance.resolved(model)
    specs = input_specs(model)
    fixed = fixed_batch(specs)
    feeds = random_feeds(specs, (batch_size,) if batch_size else ((fixed,) if fixed else (1, 4)), seed,
                         int_high=integer_ranges(model))
    expected = run_reference(model, feeds)
    artifacts = []
    with (contextlib.nullcontext(outputs) if outputs is not None else committed_together()) as stack:
        for kind, destination in targets.items():
            writer, runner_cls = FORMATS[kind]
            tmp = stack.enter_context(atomic_path(destination, force=force, folder=kind == "savedmodel",
                                                  suffix=None if kind == "savedmodel" else f".{kind}"))
            if progress is not None:
                progress.start(f"exporting {destination} ({kind}) and checking it", None)
            started = time.perf_counter()
            kwargs = {"batch_size": batch_size} if kind != "onnx" else {"batch_size": batch_size, "opset": opset}
            try:
                written = writer(model, tmp, **kwargs)
            except ExportError as exc:
                raise ExportError(f"{destination}: {exc}; nothing was written") from exc
            seconds = time.perf_counter() - started
            held = tolerance.for_runtimes((runner_cls.backend, "cpu"))  # this runtime's own float noise
            try:
                with runner_cls(tmp, "cpu") as runner:
                    comparisons = compare_runner(runner, feeds, expected, check_inputs(runner, specs), held)
            except InputError as exc:
                detail = str(exc).split(": ", 1)[-1]
                raise ExportError(f"{destination}: the {kind} artifact is not usable ({detail}); nothing was written") from exc
            worst = summarize(comparisons)
            artifact = Artifact(kind, str(destination), worst["max_abs"], worst["max_rel"], worst["passed"],
                                round(seconds, 3), {**written.details, "tolerance": held.as_dict()})
            artifacts.append(artifact)
            if not artifact.passed:
                raise ParityError(
                    f"{destination}: the {kind} artifact differs from the Keras model "
                    f"(max_abs {artifact.max_abs:.3g}, max_rel {artifact.max_rel:.3g}); nothing was written"
                )
    return artifacts


__all__ = ["Artifact", "ExportError", "export", "check_destinations", "requested", "DEFAULT_OPSET"]
