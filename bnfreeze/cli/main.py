"""The ``bnfreeze`` commands: option parsing only, over :mod:`bnfreeze.cli.operations`.

How a command runs (exit codes, signals, TensorFlow's import) is in
:mod:`bnfreeze.cli.runtime`; options shared by several commands in
:mod:`bnfreeze.cli.options`.
"""

from __future__ import annotations

import click

from bnfreeze.cli.options import (
    export_options, export_request, load_options, make_console, model_argument, rescale_option, say_written,
    tolerance_options, write_options,
)
from bnfreeze.cli.runtime import BnfreezeGroup


@click.group(cls=BnfreezeGroup)
@click.option("--debug", is_flag=True, help="Show Python tracebacks on errors.")
@click.version_option(package_name="bnfreeze")
def main(debug: bool) -> None:
    """Fold, recalibrate, export and verify Keras models with BatchNormalization."""


@main.command(short_help="Fold BNs into neighbouring Conv/Dense layers, exactly.")
@model_argument
@click.option("-o", "--output", type=click.Path(path_type=str), help="Folded model (default <stem>.folded.keras).")
@click.option("--report", type=click.Path(path_type=str), help="Write the fold report as JSON.")
@click.option("--data", type=click.Path(path_type=str),
              help="Also check parity on the first 32 samples of this .npy/.npz file or image folder.")
@rescale_option
@click.option("--strict", is_flag=True, help="Fail (exit 1, nothing written) when any BatchNormalization stays.")
@click.option("--max-kept", type=click.IntRange(min=0), default=None,
              help="Fail (exit 1, nothing written) when more than N BatchNormalization layers stay.")
@click.option("--seed", type=int, default=0, show_default=True, help="Seed of the parity-check inputs.")
@export_options
@write_options
@load_options
@tolerance_options
def fold(model, output, report, data, rescale, strict, max_kept, seed, onnx, savedmodel, tflite, opset,
         export_batch_size, force, unsafe, atol, rtol):
    """Fold BatchNormalization into neighbouring Conv/Dense layers (and export the result)."""
    from bnfreeze.cli.operations import fold_file
    from bnfreeze.cli.tables import make_progress, print_artifacts, print_fold_report
    from bnfreeze.errors import InputError, KeptError

    if strict and max_kept is not None and max_kept != 0:
        raise InputError("--strict means --max-kept 0; give one of them")
    exports = export_request(onnx, savedmodel, tflite, opset, export_batch_size)
    console = make_console()
    try:
        with make_progress(make_console(stderr=True)) as progress:  # the fold report before the exports run
            result = fold_file(model, output, report=report, force=force, unsafe=unsafe, atol=atol, rtol=rtol,
                               seed=seed, exports=exports, data=data, rescale=rescale,
                               max_kept=0 if strict else max_kept, progress=progress,
                               on_folded=lambda folded: print_fold_report(console, folded))
    except KeptError as exc:
        if exc.report is not None:
            print_fold_report(make_console(stderr=True), exc.report)
        raise
    if result.report.get("artifacts"):
        print_artifacts(console, result.report["artifacts"])
    say_written(console, [result.report["output"], report, *[a["path"] for a in result.report.get("artifacts", [])]])


@main.command(short_help="Export to ONNX, SavedModel and TFLite, each checked.")
@model_argument
@export_options
@click.option("--seed", type=int, default=0, show_default=True, help="Seed of the artifact-check inputs.")
@write_options
@load_options
@tolerance_options
def export(model, onnx, savedmodel, tflite, opset, export_batch_size, seed, force, unsafe, atol, rtol):
    """Export a Keras model to ONNX, SavedModel and/or TFLite, each checked before it is written."""
    from bnfreeze.cli.operations import export_file
    from bnfreeze.cli.tables import make_progress, print_artifacts

    with make_progress(make_console(stderr=True)) as progress:
        artifacts = export_file(model, export_request(onnx, savedmodel, tflite, opset, export_batch_size),
                                force=force, unsafe=unsafe, atol=atol, rtol=rtol, seed=seed, progress=progress)
    console = make_console()
    print_artifacts(console, [a.as_dict() for a in artifacts])
    say_written(console, [a.path for a in artifacts])


#: verify options that a config file sets (per check or in [defaults]), not the command line
_CONFIG_OPTIONS = ("checks", "min_top1", "min_snr", "atol", "rtol", "data", "signature", "input_map", "output_map",
                   "rescale", "samples", "seed", "batch_size", "device", "require_gpu", "locate")


@main.command(short_help="Check that artifacts compute what a reference does.")
@click.argument("reference", required=False, type=click.Path(path_type=str))
@click.argument("candidates", nargs=-1, type=click.Path(path_type=str))
@click.option("--config", "config_path", type=click.Path(path_type=str), help="Run the checks listed in a TOML file.")
@click.option("--data", type=click.Path(path_type=str),
              help="Inputs: .npy, .npz (arrays named after the inputs, or x) or a folder of images.")
@rescale_option
@click.option("--samples", type=click.IntRange(min=1), default=8, show_default=True, help="Random samples without --data.")
@click.option("--seed", type=int, default=0, show_default=True)
@click.option("--batch-size", type=click.IntRange(min=1), default=1, show_default=True)
@click.option("--device", type=click.Choice(["cpu", "gpu", "all"]), default="cpu", show_default=True)
@click.option("--require-gpu", is_flag=True, help="Fail when a GPU row cannot run.")
@click.option("--check", "checks", type=click.Choice(["max", "elementwise", "top1", "snr"]), multiple=True,
              help="Pass criterion; repeat to require several. max (default): max error vs atol/rtol*max|ref|; "
                   "elementwise: Polygraphy's per-element rule; top1: top-1 agreement >= --min-top1; "
                   "snr: signal-to-noise ratio >= --min-snr.")
@click.option("--min-top1", type=float, default=None,
              help="With --check top1: the share of samples whose class must agree (default 0.99).")
@click.option("--min-snr", type=float, default=None, help="With --check snr: the least SNR in dB (default 30).")
@click.option("--signature", default=None, help="SavedModel (or TFLite) signature to call (default serving_default).")
@click.option("--input-map", default=None, help="Pair inputs the names do not: ref=cand,ref2=cand2.")
@click.option("--output-map", default=None, help="Pair outputs the names do not: ref=cand,ref2=cand2.")
@click.option("--locate", is_flag=True, help="For a failing Keras candidate of a Keras reference, name the first diverging layer.")
@click.option("--json", "json_path", type=click.Path(path_type=str), help="Write the results as JSON.")
@click.option("--junit", type=click.Path(path_type=str), help="Write JUnit XML (one testcase per candidate and device).")
@write_options
@load_options
@tolerance_options
def verify(reference, candidates, config_path, data, rescale, samples, seed, batch_size, device, require_gpu, checks,
           min_top1, min_snr, signature, input_map, output_map, locate, json_path, junit, force, unsafe, atol, rtol):
    """Check that CANDIDATE artifacts compute what the REFERENCE artifact computes (any of .keras, SavedModel, .onnx, .tflite)."""
    from bnfreeze.cli.operations import verify_files
    from bnfreeze.cli.tables import make_progress, print_verify, print_verify_header
    from bnfreeze.compare import criteria

    if config_path is not None:
        ctx = click.get_current_context()
        given = [param.opts[0] for param in ctx.command.params if param.name in _CONFIG_OPTIONS
                 and ctx.get_parameter_source(param.name) == click.core.ParameterSource.COMMANDLINE]
        if given:
            from bnfreeze.errors import InputError

            raise InputError(f"{config_path}: with --config, set {', '.join(given)} in the config file "
                             f"(in [defaults] or a [[check]])")
        tolerance = None
    else:
        tolerance = criteria(atol, rtol, checks or ("max",), min_top1, min_snr)
    console = make_console()
    with make_progress(make_console(stderr=True)) as progress:  # the header, then the rows, as each is known
        reports = verify_files(
            reference, list(candidates), config=config_path, data=data, samples=samples, seed=seed,
            batch_size=batch_size, tolerance=tolerance, device=device, require_gpu=require_gpu,
            locate=locate, unsafe=unsafe, signature=signature, input_map=input_map, output_map=output_map,
            rescale=rescale, json_path=json_path, junit_path=junit, force=force, progress=progress,
            on_header=lambda report: print_verify_header(console, report),
            on_report=lambda report: print_verify(console, report, header=False),
        )
    say_written(console, [json_path, junit])
    if not all(report.passed for report in reports):
        raise SystemExit(1)


@main.command(short_help="Re-estimate BN statistics on calibration data.")
@model_argument
@click.option("--calib-data", required=True, multiple=True, type=click.Path(path_type=str),
              help="Calibration inputs: .npy, .npz (arrays named after the inputs, or x; optional y), an image "
                   "folder, or TFRecord files and globs (repeat the option for several).")
@click.option("--feature", default=None,
              help="TFRecords: the tf.train.Example feature to feed (default: the input's name, image/encoded, "
                   "image, x, or the only feature).")
@click.option("--feature-type", type=click.Choice(["auto", "image", "tensor"]), default=None,
              help="TFRecords: image = encoded PNG/JPEG/BMP/GIF bytes; tensor = tf.io.serialize_tensor bytes or a "
                   "float/int64 list of one sample's values (default auto: decided by the first record).")
@click.option("-o", "--output", type=click.Path(path_type=str), help="Recalibrated model (default <stem>.recalibrated.keras).")
@click.option("--mode", type=click.Choice(["exact", "precise", "ema", "fixed-batch"]), default="exact", show_default=True,
              help="exact: population statistics in dependency order; precise: PreciseBN; ema: Keras's momentum "
                   "update; fixed-batch: one seeded batch.")
@click.option("--batch-size", type=click.IntRange(min=1), default=32, show_default=True)
@click.option("--max-samples", type=click.IntRange(min=1), default=None, help="Use only the first N samples.")
@click.option("--seed", type=int, default=0, show_default=True, help="Seed of the fixed batch and the parity checks.")
@click.option("--memory-budget", default=None,
              help="Memory for activations kept between exact passes, e.g. 2GiB or 0 (default: 1/4 of RAM, max 8GiB).")
@click.option("--distribute", type=click.Choice(["mirrored", "multi-worker"]), default=None,
              help="mirrored: tf.distribute.MirroredStrategy over all local devices; multi-worker: "
                   "MultiWorkerMirroredStrategy over the cluster in TF_CONFIG (run the same command on every worker).")
@click.option("--worker-timeout", type=click.FloatRange(min=1), default=3600, show_default=True,
              help="multi-worker: seconds to wait for the cluster to start and for the other workers at each "
                   "merge (one per pass); then fail with nothing written.")
@click.option("--threads", type=click.IntRange(min=1), default=None,
              help="TensorFlow threads per process (intra-op; inter-op 1), e.g. for several workers on one machine.")
@click.option("--eval-data", type=click.Path(path_type=str), help="Labelled .npz (x, y) for accuracy before/after.")
@rescale_option
@click.option("--strict", is_flag=True,
              help="Fail (exit 1, nothing written) instead of warning: too few samples, extreme variance ratios or "
                   "mean shifts, a fixed batch smaller than --batch-size.")
@click.option("--report", type=click.Path(path_type=str), help="Write the recalibration report as JSON.")
@click.option("--fold", "fold_after", is_flag=True, help="Fold the recalibrated model right after (and export that).")
@click.option("--folded-output", type=click.Path(path_type=str),
              help="Folded model with --fold (default <output stem>.folded.keras).")
@export_options(batch_flag="--export-batch-size")
@write_options
@load_options
@tolerance_options
def recalibrate(model, calib_data, feature, feature_type, output, mode, batch_size, max_samples, seed, memory_budget,
                distribute, worker_timeout, threads, eval_data, rescale, strict, report, fold_after, folded_output,
                onnx, savedmodel, tflite, opset, export_batch_size, force, unsafe, atol, rtol):
    """Replace BN moving statistics with those of calibration data (AdaBN / PreciseBN)."""
    from bnfreeze.cli.operations import recalibrate_file
    from bnfreeze.cli.tables import make_progress, print_artifacts, print_fold_report, print_recalibration

    console = make_console()
    with make_progress(make_console(stderr=True)) as progress:
        result, fold_result, summary = recalibrate_file(
            model, list(calib_data), output, mode=mode, batch_size=batch_size, max_samples=max_samples, seed=seed,
            memory_budget=memory_budget, distribute=distribute, worker_timeout=worker_timeout, threads=threads,
            eval_data=eval_data, rescale=rescale, feature=feature, feature_type=feature_type, strict=strict,
            report=report, force=force, unsafe=unsafe, fold_after=fold_after, folded_output=folded_output,
            exports=export_request(onnx, savedmodel, tflite, opset, export_batch_size), atol=atol, rtol=rtol,
            progress=progress,
        )
    print_recalibration(console, model, summary)
    if fold_result is not None:
        print_fold_report(console, fold_result.report)
    if summary.get("artifacts"):
        print_artifacts(console, summary["artifacts"])
    from bnfreeze.io.interrupts import written

    say_written(console, written())  # what this process wrote: nothing on a worker that is not the chief


@main.command(short_help="int8 TFLite/ONNX with the BNs handled first, verified.")
@model_argument
@click.option("--calib-data", required=True, type=click.Path(path_type=str),
              help="Calibration inputs (the representative set): .npy, .npz (arrays named after the inputs, or x) "
                   "or an image folder.")
@click.option("--tflite", type=click.Path(path_type=str), help="Write a full-integer int8 TFLite file.")
@click.option("--onnx", type=click.Path(path_type=str), help="Write a QDQ int8 ONNX file (onnxruntime quantize_static).")
@click.option("--recalibrate", type=click.Choice(["none", "exact", "precise"]), default="none", show_default=True,
              help="Recalibrate the BN statistics on the calibration data first.")
@click.option("--no-fold", "no_fold", is_flag=True, help="Quantize without folding the BNs first (what the converters do alone).")
@click.option("--io", type=click.Choice(["float", "int8", "uint8"]), default=None,
              help="The TFLite file's input and output type (default int8). The ONNX QDQ model takes and gives float.")
@click.option("--per-tensor", is_flag=True, help="One weight scale per tensor instead of per output channel.")
@click.option("--calibrate", type=click.Choice(["minmax", "entropy", "percentile"]), default=None,
              help="How onnxruntime sets the activation ranges of the ONNX file (default minmax; the TF Lite "
                   "converter always uses min/max).")
@click.option("--allow-float-ops", is_flag=True,
              help="Accept ops a converter leaves in float (listed in the report) instead of refusing the model.")
@click.option("--equalize/--no-equalize", default=None,
              help="Cross-layer equalization before quantizing (exact). Default: on with --per-tensor, off otherwise "
                   "(measured in BENCHMARKS.md).")
@click.option("--bias-correction", is_flag=True,
              help="Shift biases to cancel the mean error of the rounded weights, measured on the calibration data.")
@click.option("--eval-data", type=click.Path(path_type=str),
              help="Compare the artifacts with the float model on this data (default: the calibration data); "
                   "with labels (y in the .npz), float and int8 accuracy.")
@click.option("--check", "checks", type=click.Choice(["top1", "snr"]), multiple=True,
              help="Pass criterion for every output (repeat for both). Default: top1 for (batch, classes) outputs, "
                   "snr otherwise.")
@click.option("--min-top1", type=float, default=None, help="Least top-1 agreement with the float model (default 0.99).")
@click.option("--min-snr", type=float, default=None, help="Least SNR against the float model in dB (default 25).")
@click.option("--max-samples", type=click.IntRange(min=1), default=None, help="Calibrate on the first N samples only.")
@rescale_option
@click.option("--opset", type=int, default=17, show_default=True, help="ONNX opset of the exported float graph.")
@click.option("--batch-size", "export_batch_size", type=click.IntRange(min=1), default=None,
              help="Fix the files' batch dimension, as export does (default: dynamic); e.g. 1 for a fixed-shape "
                   "model on a microcontroller.")
@click.option("--seed", type=int, default=0, show_default=True, help="Seed of the fold's parity-check inputs.")
@click.option("--report", type=click.Path(path_type=str), help="Write the quantization report as JSON.")
@write_options
@load_options
def quantize(model, calib_data, tflite, onnx, recalibrate, no_fold, io, per_tensor, calibrate, allow_float_ops,
             equalize, bias_correction, eval_data, checks, min_top1, min_snr, max_samples, rescale, opset,
             export_batch_size, seed, report, force, unsafe):
    """Quantize to int8 (TFLite full-integer, ONNX QDQ) after folding the BNs, checked against the float model."""
    from bnfreeze.cli.operations import quantize_file
    from bnfreeze.cli.tables import make_progress, print_quantize_report
    from bnfreeze.quantize import QuantizeCheckError

    try:
        with make_progress(make_console(stderr=True)) as progress:
            summary = quantize_file(
                model, calib_data, tflite=tflite, onnx=onnx, recalibrate=recalibrate, fold=not no_fold, io=io,
                per_tensor=per_tensor, calibrate=calibrate, allow_float_ops=allow_float_ops, equalize=equalize,
                bias_correction=bias_correction, eval_data=eval_data, checks=checks, min_top1=min_top1,
                min_snr=min_snr, max_samples=max_samples, rescale=rescale, opset=opset, seed=seed, report=report,
                force=force, unsafe=unsafe, export_batch_size=export_batch_size, progress=progress,
            )
    except QuantizeCheckError as exc:
        if exc.report is not None:
            print_quantize_report(make_console(stderr=True), exc.report)
        raise
    console = make_console()
    print_quantize_report(console, summary)
    say_written(console, [*(a["path"] for a in summary["artifacts"]), report])


@main.command(short_help="One HTML page: fold plan, BN statistics, parity.")
@model_argument
@click.option("-o", "--output", type=click.Path(path_type=str), help="HTML file (default <stem>.report.html).")
@click.option("--compare", type=click.Path(path_type=str),
              help="A recalibrated version of MODEL: plot each BN's mean shift and variance ratio (BNs matched by name; "
                   "a warning names those it lacks).")
@click.option("--data", type=click.Path(path_type=str), help="Inputs for the parity histogram (default: random).")
@rescale_option
@click.option("--samples", type=click.IntRange(min=1), default=8, show_default=True, help="Random samples without --data.")
@click.option("--seed", type=int, default=0, show_default=True)
@write_options
@load_options
def report(model, output, compare, data, rescale, samples, seed, force, unsafe):
    """Write a self-contained HTML page: fold plan, BN statistics, recalibration shifts, parity histogram."""
    from bnfreeze.cli.operations import report_file

    result = report_file(model, output, compare=compare, data=data, samples=samples, seed=seed, force=force,
                         unsafe=unsafe, rescale=rescale)
    for warning in result.warnings:
        click.echo(f"bnfreeze: warning: {warning}", err=True)
    say_written(make_console(), [result.path])


@main.command(short_help="List every BN with its fold plan or why it stays.")
@model_argument
@load_options
@click.option("--json", "json_path", type=click.Path(path_type=str), help="Also write the rows as JSON.")
@write_options
def inspect(model, unsafe, json_path, force):
    """List every normalization layer with its fold plan or the reason it stays."""
    from bnfreeze.cli.operations import inspect_file
    from bnfreeze.io.files import write_json
    from bnfreeze.cli.tables import print_inspection

    from bnfreeze.cli.operations import check_outputs

    check_outputs([model], [json_path], force)
    rows = inspect_file(model, unsafe=unsafe)
    console = make_console()
    print_inspection(console, model, rows)
    if json_path:
        write_json([r.as_dict() for r in rows], json_path, force=force)
        say_written(console, [json_path])

