"""``bnfreeze.quantize``: int8 artifacts with BN handled first, verified against the float model.

The pipeline: optional recalibration of the BN statistics on the calibration
data, then the fold (on by default; parity-checked like ``bnfreeze fold``),
then post-training quantization with the same data as the representative
set — the TF Lite converter's full-integer int8 and onnxruntime's static QDQ
int8. Each artifact is built at a temporary path, read back
(:mod:`bnfreeze.quantize.facts`: ops, ops left in float, BN-derived ops,
tensor types), refused if an op was left in float (unless
``allow_float_ops``), and compared with the float Keras model
(:mod:`bnfreeze.quantize.agreement`). Only when every artifact passes are
they renamed into place, together; otherwise nothing is written.
"""

from __future__ import annotations

import contextlib
import os
from dataclasses import dataclass, field
from pathlib import Path

from bnfreeze.compare import Tolerance
from bnfreeze.errors import CheckError, InputError, ParityError
from bnfreeze.export import check_destinations
from bnfreeze.export.formats import DEFAULT_OPSET, ExportError
from bnfreeze.fold.api import FoldResult, fold as fold_model
from bnfreeze.fold.classes import is_batch_norm
from bnfreeze.fold.plain import input_specs_of
from bnfreeze.fold.rules import INT8_RULES
from bnfreeze.io.files import atomic_path, committed_together
from bnfreeze.quantize.agreement import Agreement, criteria, measure
from bnfreeze.quantize.calibration import sample_count
from bnfreeze.quantize.facts import ArtifactFacts, file_facts
from bnfreeze.quantize.onnx_qdq import CALIBRATION_METHODS, quantize_onnx
from bnfreeze.quantize.tflite_int8 import IO_TYPES, convert_tflite
from bnfreeze.verify.runners import OnnxRunner, TFLiteRunner

RECALIBRATION_MODES = ("none", "exact", "precise")
KINDS = {"tflite": "TFLite", "onnx": "ONNX"}


class QuantizeError(CheckError):
    """A converter left ops of this model in float, so the artifact is not fully int8: the result does not
    meet quantize's gate (exit code 1, like a failed agreement check); nothing was written."""


class QuantizeCheckError(ParityError):
    """An int8 artifact does not follow the float model closely enough (exit code 1); ``.report`` holds why."""

    def __init__(self, message: str, report: dict | None = None):
        super().__init__(message)
        self.report = report


@dataclass
class QuantizedArtifact:
    kind: str
    path: str
    facts: ArtifactFacts
    agreement: Agreement | None = None
    settings: dict = field(default_factory=dict)

    def as_dict(self) -> dict:
        facts = self.facts.as_dict()
        facts.pop("kind")
        entry = {"kind": self.kind, "path": self.path, **self.settings, **facts}
        agreement = self.agreement
        if agreement is not None:
            entry.update(
                passed=agreement.passed, reason=agreement.reason, accuracy=agreement.accuracy,
                top1_agreement=agreement.worst("top1_agreement"), snr_db=agreement.worst("snr_db"),
                cosine=agreement.worst("cosine"), max_abs=agreement.worst("max_abs"),
                comparisons=[{**o.as_dict(), "criterion": agreement.tolerances[o.name].explain()}
                             for o in agreement.outputs],
            )
        return entry


@dataclass
class QuantizeResult:
    """The float model that was quantized (recalibrated and folded), the artifacts and the report."""

    model: object
    artifacts: list[QuantizedArtifact]
    report: dict
    fold: FoldResult | None = None
    recalibration: object | None = None


def _open(data, model):
    if data is None:
        return None
    if isinstance(data, (str, os.PathLike)):
        from bnfreeze.io.sources import open_data

        if not Path(data).exists():
            raise InputError(f"{data}: no such file or folder")
        return open_data(data, input_specs_of(model))
    return data


def _bn_names(model) -> list[str]:
    return [l.name for l in model._flatten_layers(include_self=False, recursive=True) if is_batch_norm(l)]


def _layer_names(model) -> list[str]:
    return [l.name for l in model._flatten_layers(include_self=False, recursive=True)]


def check_options(*, tflite=None, onnx=None, recalibrate: str = "none", io: str | None = None,
                  calibrate: str | None = None) -> dict[str, Path]:
    """Option errors a user can fix before any work starts; returns the requested targets."""
    targets = {kind: Path(path) for kind, path in (("tflite", tflite), ("onnx", onnx)) if path is not None}
    if not targets:
        raise InputError("nothing to write: give --tflite OUT.tflite and/or --onnx OUT.onnx")
    if recalibrate not in RECALIBRATION_MODES:
        raise InputError(f"unknown --recalibrate {recalibrate!r}; choose one of {', '.join(RECALIBRATION_MODES)}")
    if io is not None and io not in IO_TYPES:
        raise InputError(f"unknown --io {io!r}; choose one of {', '.join(IO_TYPES)}")
    if io is not None and "tflite" not in targets:
        raise InputError("--io sets the TFLite file's input and output type; the ONNX QDQ model takes and gives "
                         "float (add --tflite or drop --io)")
    if calibrate is not None and calibrate not in CALIBRATION_METHODS:
        raise InputError(f"unknown --calibrate {calibrate!r}; choose one of {', '.join(CALIBRATION_METHODS)}")
    if calibrate not in (None, "minmax") and "onnx" not in targets:
        raise InputError(f"--calibrate {calibrate} applies to the ONNX file; the TF Lite converter calibrates by "
                         f"min/max (add --onnx or drop --calibrate)")
    return targets


def quantize(
    model,
    data,
    *,
    tflite=None,
    onnx=None,
    recalibrate: str = "none",
    fold: bool = True,
    io: str | None = None,
    per_tensor: bool = False,
    calibrate: str | None = None,
    allow_float_ops: bool = False,
    equalize: bool | None = None,
    bias_correction: bool = False,
    place_scales: bool = True,
    eval_data=None,
    check=None,
    min_top1: float | None = None,
    min_snr: float | None = None,
    max_samples: int | None = None,
    opset: int = DEFAULT_OPSET,
    seed: int = 0,
    batch_size: int = 32,
    export_batch_size: int | None = None,
    force: bool = False,
    outputs: contextlib.ExitStack | None = None,
) -> QuantizeResult:
    """Quantize ``model`` to int8 (``tflite=`` and/or ``onnx=`` paths), calibrated on ``data``.

    ``data`` and ``eval_data`` are sources from :func:`bnfreeze.open_data`
    or paths (``.npy``, ``.npz``, an image folder). ``model`` is not modified.
    ``recalibrate`` (``"exact"``/``"precise"``) first recalibrates the BN
    statistics on ``data``; ``fold`` folds every BN that folds exactly (a
    pre-activation BN whose shift would stay as an add is left to the converter:
    :data:`bnfreeze.fold.rules.INT8_RULES`).
    ``io`` (TFLite only): ``"int8"`` (default), ``"uint8"`` or ``"float"``
    inputs and outputs. ``per_tensor``: one weight scale per tensor instead of
    per output channel. ``calibrate`` (ONNX): ``"minmax"`` (default),
    ``"entropy"`` or ``"percentile"``. An op a converter leaves in float raises
    :class:`QuantizeError` naming it, unless ``allow_float_ops``.
    ``export_batch_size`` fixes the files' batch dimension (default: dynamic), as for ``export``.
    ``equalize`` (cross-layer equalization, exact; default: on with
    ``per_tensor``) and ``bias_correction`` (biases that cancel the mean shift
    of the rounded weights) rewrite the folded model first
    (:mod:`bnfreeze.quantize.datafree`). Every
    artifact is compared with the float model on ``eval_data`` (else
    ``data``): ``check`` (``"top1"``/``"snr"`` or both), ``min_top1`` and
    ``min_snr`` set the bar (default top-1 >= 0.99 for classifier outputs,
    SNR >= 25 dB otherwise); a miss raises :class:`QuantizeCheckError` and
    writes nothing. ``outputs`` (from
    :func:`bnfreeze.io.files.committed_together`) commits the files together
    with the caller's; by default they are committed when all have passed.
    """
    targets = check_options(tflite=tflite, onnx=onnx, recalibrate=recalibrate, io=io, calibrate=calibrate)
    check_destinations(targets, force)
    if max_samples is not None and max_samples < 1:
        raise InputError(f"--max-samples must be >= 1, got {max_samples}")
    if batch_size < 1:
        raise InputError(f"batch size must be >= 1, got {batch_size}")
    if export_batch_size is not None and export_batch_size < 1:
        raise InputError(f"--batch-size must be >= 1, got {export_batch_size}")
    if isinstance(check, str):
        check = (check,)
    _refuse_low_precision(model)
    tolerances = criteria(model, check, min_top1, min_snr)
    data = _open(data, model)
    evaluation = _open(eval_data, model)
    calibration_samples = sample_count(data, max_samples)
    io = io or "int8"
    calibrate = calibrate or "minmax"

    reference = model
    recalibrated = None
    if recalibrate != "none":
        from bnfreeze.recalibration import recalibrate as recalibrate_model

        labelled = evaluation if evaluation is not None and evaluation.labels is not None else None
        recalibrated = recalibrate_model(model, data, mode=recalibrate, max_samples=max_samples, seed=seed,
                                         eval_data=labelled)
        reference = recalibrated.model
    folded = None
    source = reference
    moved = None
    not_rewritten: list[dict] = []  # layers a weight rewrite left as they are (Keras-quantized, LoRA), and why
    if fold:
        folded = fold_model(reference, seed=seed, data=data, rules=INT8_RULES)
        source = folded.model
        if place_scales:
            from bnfreeze.quantize.placement import place_scales as move_scales

            source, moved = move_scales(folded, not_rewritten)
            _check_exact(folded.model, source, seed, "moving the folded BN scales back through the ReLUs")
    equalization = corrected = None
    if equalize is None:
        equalize = per_tensor  # measured: per-tensor weights need it (BENCHMARKS.md), per-channel ones do not
    if equalize:
        from bnfreeze.quantize.datafree import equalize as equalize_model

        before = source
        source, equalization = equalize_model(source)
        not_rewritten += equalization.pop("not_rewritten", [])
        equalization["parity"] = _check_exact(before, source, seed, "cross-layer equalization")
    if bias_correction:
        from bnfreeze.quantize.datafree import correct_bias

        source, corrected = correct_bias(source, data, per_tensor=per_tensor, limit=max_samples, batch_size=batch_size)
        not_rewritten += corrected.pop("not_rewritten", [])
    bn_names, layer_names = _bn_names(source), _layer_names(source)

    report = {
        "model": getattr(model, "name", None),
        "calibration": {"data": str(data.source), "samples": calibration_samples,
                        "method": {kind: ("minmax (the converter's)" if kind == "tflite" else calibrate)
                                   for kind in targets}},
        "recalibration": None if recalibrated is None else _recalibration_entry(recalibrated),
        "fold": None if folded is None else {k: folded.report[k] for k in ("folded", "kept", "dropped", "structure",
                                                                            "default_call", "parity")},
        "weights": "per-tensor" if per_tensor else "per-channel",
        "scales_moved_back": moved,
        "not_rewritten": not_rewritten,
        "equalization": equalization,
        "bias_correction": corrected,
        "evaluation": None,
        "float_accuracy": None,
        "criteria": {name: t.explain() for name, t in tolerances.items()},
        "artifacts": [],
        "passed": False,
    }
    artifacts: list[QuantizedArtifact] = []
    temporaries: dict[str, Path] = {}
    with (contextlib.nullcontext(outputs) if outputs is not None else committed_together()) as stack:
        for kind, destination in targets.items():
            tmp = temporaries[kind] = stack.enter_context(atomic_path(destination, force=force, suffix=f".{kind}"))
            try:
                if kind == "tflite":
                    tmp.write_bytes(convert_tflite(source, data, io=io, per_tensor=per_tensor,
                                                   allow_float_ops=allow_float_ops, limit=max_samples,
                                                   workdir=tmp.parent, batch_size=export_batch_size))
                    settings = {"io": io, "batch_size": export_batch_size}
                else:
                    quantize_onnx(source, data, tmp, per_tensor=per_tensor, calibrate=calibrate, opset=opset,
                                  limit=max_samples, workdir=tmp.parent, batch_size=export_batch_size)
                    settings = {"io": "float", "calibration": calibrate, "batch_size": export_batch_size}
            except ExportError as exc:  # a converter failed: the message names the file it was to write
                raise ExportError(f"{destination}: {exc}{_keras_quantized_hint(source)}; nothing was written") from exc
            facts = file_facts(tmp, kind, bn_names=bn_names, layer_names=layer_names)
            artifact = QuantizedArtifact(kind, str(destination), facts, settings=settings)
            artifacts.append(artifact)
            blocking = facts.float_compute
            if blocking and not allow_float_ops:
                names = ", ".join(op.describe() for op in blocking[:4]) + (", ..." if len(blocking) > 4 else "")
                plural = "s" if len(blocking) != 1 else ""
                who = (f"the TF Lite converter left {len(blocking)} op{plural} in float" if kind == "tflite" else
                       f"onnxruntime runs {len(blocking)} op{plural} of the QDQ model in float")
                hint = _keras_quantized_hint(source, {op.layer for op in blocking})
                raise QuantizeError(f"{destination}: {who}, so the model is not fully int8: {names}{hint}; "
                                    f"pass --allow-float-ops to accept float ops; nothing was written")
        checked = evaluation if evaluation is not None else data
        runners = {}
        try:
            for artifact in artifacts:
                runner = (TFLiteRunner if artifact.kind == "tflite" else OnnxRunner)(temporaries[artifact.kind], "cpu")
                runner.load()
                runners[artifact.kind] = runner
            measured = measure(reference, runners, checked, tolerances, export_batch_size or batch_size)
        finally:
            for runner in runners.values():
                runner.close()
        for artifact in artifacts:
            artifact.agreement = measured.artifacts[artifact.kind]
        report.update(
            evaluation={"data": str(checked.source), "samples": measured.samples,
                        "labelled": measured.labelled > 0,
                        "reference": "the recalibrated float model" if recalibrated is not None
                        else "the float Keras model"},
            float_accuracy=measured.float_accuracy,
            artifacts=[a.as_dict() for a in artifacts],
            passed=all(a.agreement.passed for a in artifacts),
        )
        failing = [a for a in artifacts if not a.agreement.passed]
        if failing:
            first = failing[0]
            raise QuantizeCheckError(
                f"{first.path}: the int8 {KINDS[first.kind]} model does not follow the float model on "
                f"{measured.samples} samples of {checked.source} ({first.agreement.reason}); nothing was written",
                report,
            )
    return QuantizeResult(source, artifacts, report, folded, recalibrated)


def _refuse_low_precision(model) -> None:
    """int8 starts from float32: onnxruntime's quantizer and TFLite's converter take float32 tensors, so a
    model computing in float16 or bfloat16 gets one line (before any work) instead of an invalid graph."""
    from bnfreeze.compare.precision import low_precision_layers
    from bnfreeze.io.models import model_label

    low = low_precision_layers(model)
    if low:
        raise InputError(f"{model_label(model)}: {low[0].name} computes in {low[0].compute_dtype} "
                         f"({low[0].dtype_policy.name} policy); int8 quantization starts from a float32 model "
                         "(onnxruntime's QuantizeLinear and the TF Lite converter take float32): rebuild it under "
                         "keras.config.set_dtype_policy('float32') and copy its weights in, then quantize that")


def _keras_quantized_hint(model, layers: set | None = None) -> str:
    """Where ``model`` has layers Keras quantized itself (``layer.quantize``; among ``layers`` when given):
    a clause naming them, since the converters cannot requantize their integer kernels."""
    found = {layer.name: mode for layer in model._flatten_layers(include_self=False, recursive=True)
             if (mode := getattr(layer, "quantization_mode", None)) and (layers is None or layer.name in layers)}
    if not found:
        return ""
    names = ", ".join(f"{name} ({mode})" for name, mode in sorted(found.items()))
    return (f" ({names} {'is' if len(found) == 1 else 'are'} already quantized by Keras, whose integer kernels and "
            "dynamic activation scales the converters do not turn into a full-integer model: quantize the float "
            "model instead)")


def _check_exact(before, after, seed: int, what: str) -> dict:
    """An exact rewrite must compute what it started from (the fold's parity check and tolerances)."""
    from bnfreeze.parity import check_models

    parity = check_models(before, after, Tolerance(), seed=seed)
    if not parity.passed:
        raise ParityError(f"{what} changed what the model computes ({parity.failure()}); nothing was written",
                          parity)
    return {"max_abs": parity.max_abs, "max_rel": parity.max_rel, "passed": parity.passed}


def _recalibration_entry(result) -> dict:
    """What recalibration did, with every BN it measured (``recalibrated``) or left as it was (``kept``, reasons)."""
    report = result.report
    entry = {k: report.get(k) for k in ("mode", "samples", "passes", "accuracy")}
    entry["recalibrated"] = [change.name for change in result.changes]
    entry["kept"] = report.get("kept", [])
    return entry
