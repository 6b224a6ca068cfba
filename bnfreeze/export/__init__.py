"""``bnfreeze.export``: SavedModel, ONNX and TFLite artifacts, each checked before it is written.

Every artifact is written to a temporary path beside its destination, loaded
with its runtime, and compared with the Keras model on seeded inputs (one
sample and a batch, or the fixed batch size). The artifacts that pass are
renamed into place together (with the command's other outputs); one that
fails its check, or that its converter cannot write, is not written, and
never costs the others: the command then fails with one line naming what it
refused and what it wrote (:func:`refusal`).
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
    #: why the artifact was not written (its converter failed, it is not usable, or it differs), or None
    error: str | None = None
    #: the error class that refusal raises for it (ParityError: it differs; ExportError: it could not be made)
    error_class: type = field(default=ParityError, repr=False)

    def as_dict(self) -> dict:
        entry = {"kind": self.kind, "path": self.path, "max_abs": self.max_abs, "max_rel": self.max_rel,
                 "passed": self.passed, "seconds": self.seconds, **self.details}
        if self.error is not None:
            entry.update(written=False, error=self.error)
        return entry


def refusal(artifacts: list[Artifact], also_written: list = ()) -> Exception | None:
    """The one-line error for the artifacts that were refused, naming those that passed and were written
    with ``also_written`` (the command's other outputs), or None when every artifact passed.

    It is a :class:`ParityError` (exit 1: the result does not meet the gate) where an artifact differs,
    else the first refusal's class (an :class:`ExportError`: a converter could not write it, exit 2).
    """
    refused = [a for a in artifacts if a.error is not None]
    if not refused:
        return None
    written = [a.path for a in artifacts if a.error is None] + [str(p) for p in also_written if p is not None]
    cls = ParityError if any(a.error_class is ParityError for a in refused) else refused[0].error_class
    said = "; ".join(a.error for a in refused)
    tail = f"; written: {', '.join(written)} (they passed)" if written else "; nothing was written"
    return cls(f"{said}{tail}")


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
    """Write the requested artifacts of ``model``, each checked first; those that pass are written.

    Without ``outputs`` the passing artifacts are committed together, and then a refused one raises
    (:func:`refusal`: a ParityError where one differs, an ExportError where one could not be made).
    ``outputs`` (from :func:`bnfreeze.io.files.committed_together`) puts the passing artifacts in place
    together with the caller's other outputs; the caller raises :func:`refusal` after its commit (a
    refused artifact comes back with ``error`` set). ``progress`` hears of each artifact as its
    conversion starts (:mod:`bnfreeze.io.progress`).
    """

    targets = requested(onnx, savedmodel, tflite)
    if not targets:
        raise InputError("nothing to export: give --onnx, --savedmodel and/or --tflite")
    if batch_size is not None and batch_size < 1:
        raise InputError(f"--batch-size must be >= 1, got {batch_size}")
    check_destinations(targets, force)
    if "onnx" in targets:
        from bnfreeze.export.formats import check_opset

        check_opset(opset)
    if not hasattr(model, "inputs"):
        # a subclassed model records no inputs or outputs to name the artifacts' after: its plain reading
        # (its call traced and checked against it, bnfreeze.fold.plain) is what is converted and compared
        from bnfreeze.fold.plain import plain_model

        model = plain_model(model).model
    tolerance = tolerance.resolved(model)
    specs = input_specs(model)
    fixed = fixed_batch(specs)
    feeds = random_feeds(specs, (batch_size,) if batch_size else ((fixed,) if fixed else (1, 4)), seed,
                         int_high=integer_ranges(model))
    expected = run_reference(model, feeds)
    artifacts = []
    with (contextlib.nullcontext(outputs) if outputs is not None else committed_together()) as stack:
        for kind, destination in targets.items():
            scope = contextlib.ExitStack()  # this artifact's temporary: removed if it fails, else committed
            try:
                with scope:
                    tmp = scope.enter_context(atomic_path(destination, force=force, folder=kind == "savedmodel",
                                                          suffix=None if kind == "savedmodel" else f".{kind}"))
                    artifact = _make(model, kind, destination, tmp, feeds, expected, specs, tolerance,
                                     batch_size, opset, progress)
                    stack.enter_context(scope.pop_all())  # its rename waits for the command's other outputs
            except (ExportError, ParityError) as exc:
                artifact = getattr(exc, "artifact", None) or Artifact(kind, str(destination), float("nan"),
                                                                      float("nan"), False)
                artifact.passed, artifact.error, artifact.error_class = False, str(exc), type(exc)
            artifacts.append(artifact)
    if outputs is None:
        error = refusal(artifacts)
        if error is not None:
            raise error
    return artifacts


def _make(model, kind, destination, tmp, feeds, expected, specs, tolerance, batch_size, opset,
          progress) -> Artifact:
    """Write one artifact to ``tmp``, load it with its runtime and compare it; raise (ExportError or
    ParityError, carrying the artifact where it was measured) when it may not be written."""
    import time

    writer, runner_cls = FORMATS[kind]
    if progress is not None:
        progress.start(f"exporting {destination} ({kind}) and checking it", None)
    started = time.perf_counter()
    kwargs = {"batch_size": batch_size} if kind != "onnx" else {"batch_size": batch_size, "opset": opset}
    try:
        written = writer(model, tmp, **kwargs)
    except ExportError as exc:
        raise ExportError(f"{destination}: {exc}; not written") from exc
    seconds = time.perf_counter() - started
    held = tolerance.for_runtimes((runner_cls.backend, "cpu"))  # this runtime's own float noise
    try:
        with runner_cls(tmp, "cpu") as runner:
            comparisons = compare_runner(runner, feeds, expected, check_inputs(runner, specs), held)
    except InputError as exc:
        detail = str(exc).split(": ", 1)[-1]
        raise ExportError(f"{destination}: the {kind} artifact is not usable ({detail}); not written") from exc
    worst = summarize(comparisons)
    artifact = Artifact(kind, str(destination), worst["max_abs"], worst["max_rel"], worst["passed"],
                        round(seconds, 3), {**written.details, "tolerance": held.as_dict()})
    if not artifact.passed:
        error = ParityError(f"{destination}: the {kind} artifact differs from the Keras model "
                            f"(max_abs {artifact.max_abs:.3g}, max_rel {artifact.max_rel:.3g}); not written")
        error.artifact = artifact
        raise error
    return artifact


__all__ = ["Artifact", "ExportError", "export", "check_destinations", "refusal", "requested", "DEFAULT_OPSET"]
