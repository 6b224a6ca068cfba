"""Options shared by several commands, defined once, and the small helpers the commands share."""

from __future__ import annotations

import math

import click


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


def _runtime_defaults_text(index: int) -> str:
    """``1e-05 for Keras, SavedModel and onnxruntime on the CPU, 0.0001 for TFLite, ...``: the float32 defaults
    by runtime, read from :data:`bnfreeze.compare.tolerance.RUNTIME_TOLERANCES` (the help cannot go stale)."""
    from bnfreeze.compare.tolerance import RUNTIME_TOLERANCES

    names = {"keras": "Keras", "savedmodel": "SavedModel", "onnxruntime": "onnxruntime", "tflite": "TFLite"}
    groups: dict[tuple[float, str], list[str]] = {}
    for (backend, device), bounds in RUNTIME_TOLERANCES.items():
        groups.setdefault((bounds[index], device), []).append(names.get(backend, backend))
    parts = []
    for (value, device), backends in groups.items():
        where = "on a GPU" if device == "gpu" else ("on the CPU" if backends != ["TFLite"] else "")
        who = backends[0] if len(backends) == 1 else ", ".join(backends[:-1]) + " and " + backends[-1]
        parts.append(f"{value:g} for {who} {where}".strip())
    return ", ".join(parts)


def tolerance_options(func):
    func = click.option(
        "--rtol", type=float, default=None,
        help=f"Pass when max |error| <= RTOL * max |reference output| (default: float32 by runtime, "
             f"{_runtime_defaults_text(1)}; float16 0.01, bfloat16 0.05, float64 1e-07).",
    )(func)
    func = click.option(
        "--atol", type=float, default=None,
        help=f"Pass when max |error| <= ATOL (default: float32 by runtime, {_runtime_defaults_text(0)}; "
             f"float16 0.01, bfloat16 0.05, float64 1e-08)."
    )(func)
    return func


_FLOAT32_MAX = 3.4028234663852886e38


class _Rescale(click.ParamType):
    """A number or a fraction: ``0.00392156862745098`` or ``1/255``."""

    name = "NUMBER|FRACTION"

    def convert(self, value, param, ctx):
        if isinstance(value, float):
            return value
        try:
            if "/" in str(value):
                numerator, denominator = str(value).split("/", 1)
                factor = float(numerator) / float(denominator)
            else:
                factor = float(value)
        except (ValueError, ZeroDivisionError):
            self.fail(f"{value!r} is not a number or a fraction such as 1/255", param, ctx)
        if not (math.isfinite(factor) and factor != 0 and abs(factor) <= _FLOAT32_MAX):
            self.fail(f"{value!r}: the factor must be a non-zero number that float32 holds (1/255 for raw "
                      "pixels)", param, ctx)
        return factor


def rescale_option(func):
    return click.option(
        "--rescale", type=_Rescale(), default=None,
        help="Multiply the data's float inputs by this as they are read (images, .npy/.npz arrays, TFRecords), "
             "a number or a fraction: 1/255 for raw 0..255 pixels (default: fed as they are).",
    )(func)


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


def export_request(onnx, savedmodel, tflite, opset, batch_size):
    from bnfreeze.cli.operations import ExportOptions

    return ExportOptions(onnx=onnx, savedmodel=savedmodel, tflite=tflite, opset=opset, batch_size=batch_size)


def say_written(console, paths) -> None:
    """Say once what each written file is called (paths in the order they were asked for)."""
    from bnfreeze.cli.render import say

    seen = []
    for path in paths:
        if path is not None and str(path) not in seen:
            seen.append(str(path))
            say(console, f"wrote {path}")


def make_console(stderr: bool = False):
    from rich.console import Console

    return Console(stderr=stderr)
