"""The ``bnfreeze`` command line: option parsing only, over :mod:`bnfreeze.cli.operations`.

Exit codes: 0 success, 1 parity failure (nothing written), 2 bad input,
3 internal error (a bug: rerun with --debug), 130 interrupted (SIGINT),
143 terminated (SIGTERM); nothing is written unless the exit code is 0.
"""

from __future__ import annotations

import os
import sys

import click



def _quiet_tensorflow() -> None:
    """Import TensorFlow with its start-up chatter (CUDA probing) kept off stderr."""
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    if "tensorflow" in sys.modules:
        return
    sys.stderr.flush()
    saved = os.dup(2)
    try:
        with open(os.devnull, "w") as devnull:
            os.dup2(devnull.fileno(), 2)
            try:
                import tensorflow

                tensorflow.config.list_physical_devices()  # probes CUDA now, quietly
            finally:
                os.dup2(saved, 2)
    finally:
        os.close(saved)


class _Terminated(BaseException):
    """SIGTERM, raised where Python runs so that every ``finally`` (temporary files) runs."""


def _on_sigterm(_signum, _frame):
    raise _Terminated()


class BnfreezeGroup(click.Group):
    """Turns bnfreeze's errors into one line on stderr and an exit code."""

    def invoke(self, ctx):
        from bnfreeze.errors import BnfreezeError, ParityError

        try:
            return super().invoke(ctx)
        except KeyboardInterrupt:
            click.echo("bnfreeze: interrupted; nothing was written", err=True)
            ctx.exit(130)
        except _Terminated:
            click.echo("bnfreeze: terminated; nothing was written", err=True)
            ctx.exit(143)
        except BnfreezeError as exc:
            if ctx.params.get("debug"):
                raise
            click.echo(f"bnfreeze: error: {exc}", err=True)
            ctx.exit(1 if isinstance(exc, ParityError) else 2)
        except (click.exceptions.Exit, click.ClickException, click.Abort):
            raise
        except Exception as exc:
            if ctx.params.get("debug"):
                raise
            click.echo(f"bnfreeze: internal error: {type(exc).__name__}: {exc} (rerun with --debug)", err=True)
            ctx.exit(3)


# -- options shared by several commands ------------------------------------------------
def model_argument(func):
    return click.argument("model", type=click.Path(dir_okay=True, path_type=str))(func)


def _custom_objects(ctx, _param, value):
    if value:
        from bnfreeze.io.custom_objects import import_custom_objects

        import_custom_objects(value, unsafe=ctx.params.get("unsafe", False))
    return value


def load_options(func):
    func = click.option(
        "--custom-objects", type=click.Path(path_type=str), expose_value=False, callback=_custom_objects,
        help="Import this .py file first (it registers custom layers, or lists them in CUSTOM_OBJECTS); needs --unsafe.",
    )(func)
    return click.option(
        "--unsafe", is_flag=True, is_eager=True,
        help="Turn Keras safe mode off (needed for Lambda layers and --custom-objects; trusted files only).",
    )(func)


def tolerance_options(func):
    func = click.option(
        "--rtol", type=float, default=None,
        help="Pass when max |error| <= RTOL * max |reference output| (default by compute dtype: "
             "float32 1e-4, float16 1e-2, bfloat16 5e-2, float64 1e-7).",
    )(func)
    func = click.option(
        "--atol", type=float, default=None,
        help="Pass when max |error| <= ATOL (default by compute dtype: float32 1e-5, float16 1e-2, "
             "bfloat16 5e-2, float64 1e-8)."
    )(func)
    return func


def write_options(func):
    return click.option("--force", is_flag=True, help="Replace existing outputs.")(func)


def export_options(func=None, *, batch_flag: str = "--batch-size"):
    """--onnx/--savedmodel/--tflite/--opset and the exports' fixed batch size (``batch_flag``)."""
    if func is None:
        return lambda f: export_options(f, batch_flag=batch_flag)
    func = click.option(batch_flag, "export_batch_size", type=click.IntRange(min=1), default=None,
                        help="Fix the exports' batch dimension (default: dynamic).")(func)
    func = click.option("--opset", type=int, default=17, show_default=True, help="ONNX opset.")(func)
    func = click.option("--tflite", type=click.Path(path_type=str), help="Write a float32 TFLite file.")(func)
    func = click.option("--savedmodel", type=click.Path(path_type=str), help="Write a SavedModel folder.")(func)
    func = click.option("--onnx", type=click.Path(path_type=str), help="Write an ONNX file.")(func)
    return func


def _exports(onnx, savedmodel, tflite, opset, batch_size):
    from bnfreeze.cli.operations import ExportOptions

    return ExportOptions(onnx=onnx, savedmodel=savedmodel, tflite=tflite, opset=opset, batch_size=batch_size)


def _console(stderr: bool = False):
    from rich.console import Console

    return Console(stderr=stderr)


@click.group(cls=BnfreezeGroup)
@click.option("--debug", is_flag=True, help="Show Python tracebacks on errors.")
@click.version_option(package_name="bnfreeze")
def main(debug: bool) -> None:
    """Fold, recalibrate, export and verify Keras models with BatchNormalization."""
    import signal

    signal.signal(signal.SIGTERM, _on_sigterm)
    if not debug:
        _quiet_tensorflow()


@main.command()
@model_argument
@click.option("-o", "--output", type=click.Path(path_type=str), help="Folded model (default <stem>.folded.keras).")
@click.option("--report", type=click.Path(path_type=str), help="Write the fold report as JSON.")
@click.option("--seed", type=int, default=0, show_default=True, help="Seed of the parity-check inputs.")
@export_options
@write_options
@load_options
@tolerance_options
def fold(model, output, report, seed, onnx, savedmodel, tflite, opset, export_batch_size, force, unsafe, atol, rtol):
    """Fold BatchNormalization into neighbouring Conv/Dense layers (and export the result)."""
    from bnfreeze.cli.operations import fold_file
    from bnfreeze.cli.tables import print_artifacts, print_fold_report

    exports = _exports(onnx, savedmodel, tflite, opset, export_batch_size)
    result = fold_file(model, output, report=report, force=force, unsafe=unsafe, atol=atol, rtol=rtol, seed=seed,
                       exports=exports)
    console = _console()
    print_fold_report(console, result.report)
    if result.report.get("artifacts"):
        print_artifacts(console, result.report["artifacts"])


@main.command()
@model_argument
@export_options
@click.option("--seed", type=int, default=0, show_default=True, help="Seed of the artifact-check inputs.")
@write_options
@load_options
@tolerance_options
def export(model, onnx, savedmodel, tflite, opset, export_batch_size, seed, force, unsafe, atol, rtol):
    """Export a Keras model to ONNX, SavedModel and/or TFLite, each checked before it is written."""
    from bnfreeze.cli.operations import export_file
    from bnfreeze.cli.tables import print_artifacts

    artifacts = export_file(model, _exports(onnx, savedmodel, tflite, opset, export_batch_size), force=force,
                            unsafe=unsafe, atol=atol, rtol=rtol, seed=seed)
    print_artifacts(_console(), [a.as_dict() for a in artifacts])


@main.command()
@click.argument("reference", required=False, type=click.Path(path_type=str))
@click.argument("candidates", nargs=-1, type=click.Path(path_type=str))
@click.option("--config", "config_path", type=click.Path(path_type=str), help="Run the checks listed in a TOML file.")
@click.option("--data", type=click.Path(path_type=str), help="Inputs (.npy, or .npz named after the inputs).")
@click.option("--samples", type=click.IntRange(min=1), default=8, show_default=True, help="Random samples without --data.")
@click.option("--seed", type=int, default=0, show_default=True)
@click.option("--batch-size", type=click.IntRange(min=1), default=1, show_default=True)
@click.option("--device", type=click.Choice(["cpu", "gpu", "all"]), default="cpu", show_default=True)
@click.option("--require-gpu", is_flag=True, help="Fail when a GPU row cannot run.")
@click.option("--check", type=click.Choice(["max", "elementwise"]), default="max", show_default=True,
              help="max: max error vs atol/rtol*max|ref|; elementwise: Polygraphy's per-element rule.")
@click.option("--locate", is_flag=True, help="For a failing Keras candidate, name the first diverging layer.")
@click.option("--json", "json_path", type=click.Path(path_type=str), help="Write the results as JSON.")
@click.option("--junit", type=click.Path(path_type=str), help="Write JUnit XML (one testcase per candidate and device).")
@load_options
@tolerance_options
def verify(reference, candidates, config_path, data, samples, seed, batch_size, device, require_gpu, check, locate,
           json_path, junit, unsafe, atol, rtol):
    """Check that CANDIDATE artifacts compute what the REFERENCE Keras model computes."""
    from bnfreeze.cli.operations import verify_files
    from bnfreeze.compare import Tolerance
    from bnfreeze.cli.tables import print_verify

    reports = verify_files(
        reference, list(candidates), config=config_path, data=data, samples=samples, seed=seed,
        batch_size=batch_size, tolerance=Tolerance(atol, rtol, check), device=device, require_gpu=require_gpu,
        locate=locate, unsafe=unsafe, json_path=json_path, junit_path=junit,
    )
    console = _console()
    for report in reports:
        print_verify(console, report)
    if not all(report.passed for report in reports):
        raise SystemExit(1)


class _Scale(click.ParamType):
    """A number or a fraction: ``0.5``, ``1/255``."""

    name = "number"

    def convert(self, value, param, ctx):
        if isinstance(value, float):
            return value
        text = str(value).strip()
        try:
            if "/" in text:
                top, bottom = text.split("/", 1)
                return float(top) / float(bottom)
            return float(text)
        except (ValueError, ZeroDivisionError):
            self.fail(f"{value!r} is not a number or a fraction like 1/255", param, ctx)


@main.command()
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
@click.option("--rescale", type=_Scale(), default=None,
              help="Multiply image pixels (folders, TFRecord images) by this: a number or a fraction, e.g. 1/255.")
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
    from bnfreeze.cli.tables import RichProgress, print_artifacts, print_fold_report, print_recalibration

    console = _console()
    with RichProgress(_console(stderr=True)) as progress:
        result, fold_result, summary = recalibrate_file(
            model, list(calib_data), output, mode=mode, batch_size=batch_size, max_samples=max_samples, seed=seed,
            memory_budget=memory_budget, distribute=distribute, worker_timeout=worker_timeout, threads=threads,
            eval_data=eval_data, rescale=rescale, feature=feature, feature_type=feature_type, strict=strict,
            report=report, force=force, unsafe=unsafe, fold_after=fold_after, folded_output=folded_output,
            exports=_exports(onnx, savedmodel, tflite, opset, export_batch_size), atol=atol, rtol=rtol,
            progress=progress,
        )
    print_recalibration(console, model, summary)
    if fold_result is not None:
        print_fold_report(console, fold_result.report)
    if summary.get("artifacts"):
        print_artifacts(console, summary["artifacts"])


@main.command()
@model_argument
@click.option("-o", "--output", type=click.Path(path_type=str), help="HTML file (default <stem>.report.html).")
@click.option("--compare", type=click.Path(path_type=str), help="A recalibrated version of MODEL: plot the mean shifts.")
@click.option("--data", type=click.Path(path_type=str), help="Inputs for the parity histogram (default: random).")
@click.option("--samples", type=click.IntRange(min=1), default=8, show_default=True, help="Random samples without --data.")
@click.option("--seed", type=int, default=0, show_default=True)
@write_options
@load_options
def report(model, output, compare, data, samples, seed, force, unsafe):
    """Write a self-contained HTML page: fold plan, BN statistics, recalibration shifts, parity histogram."""
    from bnfreeze.cli.operations import report_file

    path = report_file(model, output, compare=compare, data=data, samples=samples, seed=seed, force=force,
                       unsafe=unsafe)
    _console().print(f"wrote {path}")


@main.command()
@model_argument
@load_options
@click.option("--json", "json_path", type=click.Path(path_type=str), help="Also write the rows as JSON.")
@write_options
def inspect(model, unsafe, json_path, force):
    """List every normalization layer with its fold plan or the reason it stays."""
    from bnfreeze.cli.operations import inspect_file
    from bnfreeze.io.files import write_json
    from bnfreeze.cli.tables import print_inspection

    rows = inspect_file(model, unsafe=unsafe)
    print_inspection(_console(), model, rows)
    if json_path:
        write_json([r.as_dict() for r in rows], json_path, force=force)

