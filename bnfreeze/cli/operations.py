"""File-level operations behind the CLI: load, run the API, write atomically.

Each function checks every output path before the expensive work starts, so a
refusal (existing file without ``force``, output equal to the input) costs
nothing and writes nothing.
"""

from __future__ import annotations

import glob
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator

from bnfreeze.compare import Tolerance
from bnfreeze.errors import InputError
from bnfreeze.export import DEFAULT_OPSET, check_destinations, export, requested
from bnfreeze.fold.api import FoldResult, fold
from bnfreeze.fold.inspection import NormalizationRow, inspect, plan_rows
from bnfreeze.fold.plain import input_specs_of
from bnfreeze.io.files import atomic_path, check_output_paths, committed_together, derived_path, is_special, to_json
from bnfreeze.io.models import check_model_file, load_model, model_label
from bnfreeze.io.progress import NoProgress


def _input_paths(inputs) -> Iterator[Path]:
    """Every input path: lists flattened (several --calib-data), globs expanded (TFRecord shards)."""
    for item in inputs:
        if item is None:
            continue
        if isinstance(item, (list, tuple)):
            yield from _input_paths(item)
            continue
        yield Path(item)
        if any(char in str(item) for char in "*?["):
            yield from (Path(match) for match in glob.glob(str(item)))


def check_outputs(inputs, outputs, force: bool, exports: dict[str, Path] | None = None) -> None:
    """Before any work: the outputs (files, and ``exports`` by kind) are distinct, none is (or holds, or
    lies inside) one of the ``inputs`` (even with ``force``; the ``--custom-objects`` file counts), none lies
    inside a SavedModel folder another output writes, and each may be written
    (:func:`bnfreeze.io.files.check_output_paths`)."""
    exports = exports or {}
    check_destinations(exports, force, check_paths=False)  # suffixes
    check_output_paths(list(_input_paths(inputs)),
                       [(out, False) for out in outputs] + [(path, kind == "savedmodel") for kind, path in exports.items()],
                       force)


@dataclass
class ExportOptions:
    """Artifacts to write beside a model (any may be None)."""

    onnx: str | None = None
    savedmodel: str | None = None
    tflite: str | None = None
    opset: int = DEFAULT_OPSET
    batch_size: int | None = None

    @property
    def targets(self) -> dict[str, Path]:
        return requested(self.onnx, self.savedmodel, self.tflite)


def fold_file(
    model_path,
    output=None,
    *,
    report=None,
    force: bool = False,
    unsafe: bool = False,
    atol: float,
    rtol: float,
    seed: int = 0,
    exports: ExportOptions | None = None,
    data=None,
    rescale=None,
    max_kept: int | None = None,
    progress=None,
    on_folded=None,
) -> FoldResult:
    """Fold the model in ``model_path``; write ``output`` (``report``, artifacts) only if parity holds.

    ``progress`` hears of each step as it starts; ``on_folded`` gets the fold report once parity has held,
    before any artifact is exported (minutes, for a large model)."""
    from bnfreeze.io.sources import open_data

    model_path = Path(model_path)
    output = Path(output) if output is not None else derived_path(model_path, "folded")
    report = Path(report) if report is not None else None
    exports = exports or ExportOptions()
    if output.suffix != ".keras" and not is_special(output):
        raise InputError(f"{output}: the folded model is saved as .keras; give an output ending in .keras")
    if data is not None and not Path(data).exists():
        raise InputError(f"{data}: no such file or folder")
    check_outputs([model_path, data], [output, report], force, exports.targets)
    check_model_file(model_path)  # bad input is one line: before the first progress line
    _check_opset(exports)
    progress = progress or NoProgress()
    progress.start(f"loading {model_path}", None)
    model = load_model(model_path, unsafe=unsafe)
    source = open_data(data, input_specs_of(model), rescale, model=model) if data is not None else None
    progress.start(f"folding {model_path} and checking parity", None)
    result = fold(model, atol=atol, rtol=rtol, seed=seed, data=source, max_kept=max_kept)
    result.report["model"] = str(model_path)
    result.report["output"] = str(output)
    if on_folded is not None:
        on_folded(result.report)
    artifacts = []
    with committed_together() as stack:  # the folded model and every artifact that passed, together
        if exports.targets:
            artifacts = export(result.model, **_export_kwargs(exports), force=force, tolerance=Tolerance(atol, rtol),
                               seed=seed, outputs=stack, progress=progress)
            result.report["artifacts"] = [a.as_dict() for a in artifacts]
        result.model.save(stack.enter_context(atomic_path(output, force=force, suffix=".keras")))
        if report is not None:
            stack.enter_context(atomic_path(report, force=force)).write_text(to_json(result.report))
    _raise_refused(artifacts, [output, report])
    return result


def _raise_refused(artifacts, written) -> None:
    """A refused artifact fails the command once the outputs that passed are in place (the line says which)."""
    from bnfreeze.export import refusal

    error = refusal(artifacts, written)
    if error is not None:
        raise error


def _check_opset(exports: ExportOptions) -> None:
    """An ONNX opset tf2onnx cannot write is bad input, found before the model is loaded."""
    if "onnx" in exports.targets:
        from bnfreeze.export.formats import check_opset

        check_opset(exports.opset)


def _export_kwargs(exports: ExportOptions) -> dict:
    return {"onnx": exports.onnx, "savedmodel": exports.savedmodel, "tflite": exports.tflite,
            "opset": exports.opset, "batch_size": exports.batch_size}


def export_file(model_path, exports: ExportOptions, *, force=False, unsafe=False, atol: float, rtol: float, seed=0,
                progress=None):
    """Export the model in ``model_path``; every artifact is checked before it is written."""
    model_path = Path(model_path)
    if not exports.targets:  # before the model is loaded (and TensorFlow imported)
        raise InputError("nothing to export: give --onnx, --savedmodel and/or --tflite")
    check_outputs([model_path], [], force, exports.targets)
    check_model_file(model_path)
    _check_opset(exports)
    if progress is not None:
        progress.start(f"loading {model_path}", None)
    model = load_model(model_path, unsafe=unsafe)
    return export(model, **_export_kwargs(exports), force=force, tolerance=Tolerance(atol, rtol), seed=seed,
                  progress=progress)


def recalibrate_file(
    model_path,
    calib_data,
    output=None,
    *,
    mode: str = "exact",
    batch_size: int = 32,
    max_samples: int | None = None,
    seed: int = 0,
    memory_budget=None,
    distribute: str | None = None,
    worker_timeout: float = 3600,
    threads: int | None = None,
    eval_data=None,
    rescale: float | None = None,
    feature: str | None = None,
    feature_type: str | None = None,
    strict: bool = False,
    report=None,
    force: bool = False,
    unsafe: bool = False,
    fold_after: bool = False,
    folded_output=None,
    exports: ExportOptions | None = None,
    atol: float,
    rtol: float,
    progress=None,
):
    """Recalibrate the model in ``model_path`` on ``calib_data``; optionally fold and export the result.

    Everything is checked before the work starts (the data is there, outputs,
    data against the model's inputs) and written at the end, atomically; a
    failure writes nothing. With ``distribute="multi-worker"`` every worker
    runs this; only the chief checks and writes outputs, the others return
    without writing once the chief is done. Returns the RecalibrationResult,
    the FoldResult (or None) and the report dict that ``report`` receives.
    """
    from bnfreeze.io.sources import check_data_path, open_data
    from bnfreeze.recalibration import parse_bytes, recalibrate
    from bnfreeze.recalibration.execution import cluster_of

    model_path = Path(model_path)
    output = Path(output) if output is not None else derived_path(model_path, "recalibrated")
    report = Path(report) if report is not None else None
    exports = exports or ExportOptions()
    if folded_output is not None and not fold_after:
        raise InputError("--folded-output needs --fold")
    if fold_after:  # the fold's tolerances, before any work
        Tolerance(atol=atol, rtol=rtol)
    folded = (Path(folded_output) if folded_output is not None else derived_path(output, "folded")) if fold_after else None
    for path in (output, folded):
        if path is not None and path.suffix != ".keras" and not is_special(path):
            raise InputError(f"{path}: models are saved as .keras; give an output ending in .keras")
    budget = parse_bytes(memory_budget) if memory_budget is not None else None
    check_model_file(model_path)
    check_data_path(calib_data, feature_type)
    if eval_data is not None:
        check_data_path(eval_data)
    inputs, outputs = [model_path, calib_data, eval_data], [output, folded, report]
    if distribute is None:  # one process, the chief: before TensorFlow is imported
        check_outputs(inputs, outputs, force, exports.targets)
    _check_opset(exports)
    if threads is not None:
        _limit_threads(threads)
    strategy = _strategy(distribute, worker_timeout)
    cluster = cluster_of(strategy)
    if distribute is not None and cluster.is_chief:
        check_outputs(inputs, outputs, force, exports.targets)
    if progress is not None:
        progress.start(f"loading {model_path}", None)
    model = load_model(model_path, unsafe=unsafe)
    specs = input_specs_of(model)
    data = open_data(calib_data, specs, rescale, feature=feature, feature_type=feature_type, model=model)
    evaluation = None
    if eval_data is not None:
        evaluation = open_data(eval_data, specs, rescale, model=model)
        if evaluation.labels is None:
            raise InputError(f"{eval_data}: evaluation data needs labels (an array y in the .npz)")
    result = recalibrate(model, data, mode=mode, batch_size=batch_size, max_samples=max_samples, seed=seed,
                         memory_budget=budget, strategy=strategy, eval_data=evaluation, strict=strict,
                         progress=progress)
    summary = result.report
    shown = calib_data if isinstance(calib_data, (str, Path)) else ", ".join(map(str, calib_data))
    summary.update(model=str(model_path), data=str(shown))
    if not cluster.is_chief:
        summary.update(worker=cluster.index, output=None)
        # stay until the chief has written: a worker that leaves early looks like a crashed one to the cluster
        _executor_of(strategy).barrier("the chief's writing")
        return result, None, summary
    try:
        summary.update(output=str(output))
        fold_result = None
        final = result.model
        if fold_after:
            if progress is not None:
                progress.start("folding the recalibrated model and checking parity", None)
            fold_result = fold(result.model, atol=atol, rtol=rtol, seed=seed)
            fold_result.report.update(model=str(output), output=str(folded))
            summary.update(folded_output=str(folded), fold=fold_result.report)
            final = fold_result.model
        artifacts = []
        with committed_together() as stack:  # every output that passed in place together, or none
            if exports.targets:
                artifacts = export(final, **_export_kwargs(exports), force=force, tolerance=Tolerance(atol, rtol),
                                   seed=seed, outputs=stack, progress=progress)
                summary["artifacts"] = [a.as_dict() for a in artifacts]
            result.model.save(stack.enter_context(atomic_path(output, force=force, suffix=".keras")))
            if fold_result is not None:
                fold_result.model.save(stack.enter_context(atomic_path(folded, force=force, suffix=".keras")))
            if report is not None:
                stack.enter_context(atomic_path(report, force=force)).write_text(to_json(summary))
        _raise_refused(artifacts, [output, folded if fold_result is not None else None, report])
    finally:
        if cluster.workers > 1:
            _executor_of(strategy).barrier("the chief's writing")
    return result, fold_result, summary


def quantize_file(
    model_path,
    calib_data,
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
    eval_data=None,
    checks=(),
    min_top1: float | None = None,
    min_snr: float | None = None,
    max_samples: int | None = None,
    rescale=None,
    opset: int = DEFAULT_OPSET,
    seed: int = 0,
    report=None,
    force: bool = False,
    unsafe: bool = False,
    export_batch_size: int | None = None,
    progress=None,
) -> dict:
    """Quantize the model in ``model_path``; write the artifacts (and ``report``) only if every one passes.

    Returns the report dict (the JSON ``report`` receives).
    """
    from bnfreeze.io.sources import open_data
    from bnfreeze.quantize.pipeline import QuantizeCheckError, quantize
    from bnfreeze.quantize.agreement import criteria
    from bnfreeze.quantize.pipeline import check_options

    model_path = Path(model_path)
    report = Path(report) if report is not None else None
    targets = check_options(tflite=tflite, onnx=onnx, recalibrate=recalibrate, io=io, calibrate=calibrate)
    if checks:  # bounds the given checks would not use are bad input whatever the model (before loading it)
        Tolerance(check="+".join(checks), min_top1=min_top1, min_snr=min_snr)
    for data in (calib_data, eval_data):
        if data is not None and not Path(data).exists():
            raise InputError(f"{data}: no such file or folder")
    check_outputs([model_path, calib_data, eval_data], [report], force, targets)
    check_model_file(model_path)
    scale = rescale
    progress = progress or NoProgress()
    progress.start(f"loading {model_path}", None)
    model = load_model(model_path, unsafe=unsafe)
    criteria(model, checks, min_top1, min_snr)  # bounds the checks would not use: before any work
    specs = input_specs_of(model)
    data = open_data(calib_data, specs, scale, model=model)
    evaluation = None
    if eval_data is not None:
        evaluation = open_data(eval_data, specs, scale, model=model)
    what = " and ".join(str(path) for path in (tflite, onnx) if path is not None)
    progress.start(f"quantizing {model_path} to {what} and checking against the float model", None)
    with committed_together() as stack:
        try:
            result = quantize(
                model, data, tflite=tflite, onnx=onnx, recalibrate=recalibrate, fold=fold, io=io,
                per_tensor=per_tensor, calibrate=calibrate, allow_float_ops=allow_float_ops, equalize=equalize,
                bias_correction=bias_correction, eval_data=evaluation,
                check=checks or None, min_top1=min_top1, min_snr=min_snr, max_samples=max_samples, opset=opset,
                seed=seed, export_batch_size=export_batch_size, force=force, outputs=stack,
            )
        except QuantizeCheckError as exc:
            if exc.report is not None:
                exc.report["model"] = str(model_path)
            raise
        summary = {"model": str(model_path), **{k: v for k, v in result.report.items() if k != "model"}}
        if report is not None:
            stack.enter_context(atomic_path(report, force=force)).write_text(to_json(summary))
    return summary


def _executor_of(strategy):
    from bnfreeze.recalibration.execution import Executor

    return Executor(strategy)


def _limit_threads(threads: int) -> None:
    import tensorflow as tf

    tf.config.threading.set_intra_op_parallelism_threads(threads)
    tf.config.threading.set_inter_op_parallelism_threads(1)


def _strategy(name: str | None, worker_timeout: float = 3600):
    if name is None:
        return None
    import tensorflow as tf

    if name == "mirrored":
        return tf.distribute.MirroredStrategy()
    if name == "multi-worker":
        from bnfreeze.recalibration.execution import multi_worker_strategy

        return multi_worker_strategy(worker_timeout)
    raise InputError(f"unknown --distribute {name!r}; choose mirrored or multi-worker")


@dataclass
class ReportResult:
    path: Path
    warnings: list[str]


def report_file(model_path, output=None, *, compare=None, data=None, samples: int = 8, seed: int = 0,
                force: bool = False, unsafe: bool = False, rescale: float | None = None) -> ReportResult:
    """Write the HTML report of the model in ``model_path`` (default ``<stem>.report.html``).

    The warnings (``--compare`` lacking some of the model's BNs) are on the page too.
    """
    from bnfreeze.html.page import (bn_facts, compare_warning, describe_data, has_max_pooling, match_bns,
                                    parity_facts, render)
    from bnfreeze.io.sources import open_data
    from bnfreeze.parity import fixed_batch, random_data

    model_path = Path(model_path)
    output = Path(output) if output is not None else model_path.with_name(model_path.stem + ".report.html")
    if output.suffix not in (".html", ".htm") and not is_special(output):
        raise InputError(f"{output}: the report is HTML; give an output ending in .html")
    check_outputs([model_path, compare, data], [output], force)
    for path in (model_path, compare):
        if path is not None:
            check_model_file(path)
    if data is not None and not Path(data).exists():
        raise InputError(f"{data}: no such file or folder")
    model = load_model(model_path, unsafe=unsafe)
    other = load_model(compare, unsafe=unsafe) if compare is not None else None
    specs = input_specs_of(model)
    fixed = fixed_batch(specs)  # Input(batch_shape=...), stateful RNNs: every batch must have that size
    if fixed and data is None:
        samples = -(-samples // fixed) * fixed
    if rescale is not None and data is None:
        raise InputError("--rescale multiplies the inputs given with --data; give --data too")
    source = open_data(data, specs, rescale, model=model) if data is not None else random_data(specs, samples, seed)
    feeds = [[feed[s.name] for s in specs] for feed in source.batches(fixed or 8, samples if data is None else None)]
    if fixed:
        feeds = [arrays for arrays in feeds if len(arrays[0]) == fixed]
        if not feeds:
            raise InputError(f"{data}: fewer samples than the batch size {fixed} that {model_label(model)} fixes")
    count = sum(len(arrays[0]) for arrays in feeds)
    described = describe_data(count, data) if data is not None else describe_data(count, seed=seed)
    folded = fold(model, check=False)
    facts = bn_facts(model)
    compared = bn_facts(other) if other is not None else None
    warnings = []
    if compared is not None:
        warning = compare_warning(str(model_path), str(compare), match_bns(facts, compared))
        warnings += [warning] if warning else []
    page = render(str(model_path), plan_rows(folded.plan, folded.plain), facts,
                  parity_facts(model, folded.model, feeds, described), str(compare) if compare else None, compared,
                  max_pooling=has_max_pooling(model))
    with atomic_path(output, force=force) as tmp:
        Path(tmp).write_text(page, encoding="utf-8")
    return ReportResult(output, warnings)


def inspect_file(model_path, *, unsafe: bool = False) -> list[NormalizationRow]:
    return inspect(load_model(model_path, unsafe=unsafe))


def verify_files(reference, candidates, *, config=None, json_path=None, junit_path=None, force: bool = False,
                 on_report=None, **options):
    """Run verify for the command line or a config file; write the JSON/JUnit reports.

    ``on_report`` is called with each report as soon as its checks are done (a config runs several);
    ``progress`` and ``on_header`` go to every :func:`bnfreeze.verify.verify` run."""
    from bnfreeze.verify.reports import write_junit, write_verify_json
    from bnfreeze.verify import verify
    from bnfreeze.verify.config import load_config

    if config is not None:
        if reference or candidates:
            raise InputError("give either --config or REFERENCE CANDIDATE..., not both")
        runs = [(job.reference, job.candidates, {"unsafe": options.get("unsafe", False), **job.verify_kwargs()})
                for job in load_config(config)]
    else:
        if not reference or not candidates:
            raise InputError("give a REFERENCE model and at least one CANDIDATE (or --config FILE)")
        runs = [(reference, candidates, options)]
    inputs = [config] + [path for ref, cands, kwargs in runs for path in (ref, *cands, kwargs.get("data"))]
    check_outputs(inputs, [json_path, junit_path], force)  # before anything runs
    reports = []
    shared = {key: options[key] for key in ("progress", "on_header") if options.get(key) is not None}
    for ref, cands, kwargs in runs:
        reports.append(verify(ref, cands, **{**kwargs, **shared}))
        if on_report is not None:
            on_report(reports[-1])
    if json_path:
        write_verify_json(reports, json_path, force=force)
    if junit_path:
        write_junit(reports, junit_path, force=force)
    return reports
