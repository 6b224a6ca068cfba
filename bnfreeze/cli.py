"""The ``bnfreeze`` command line: option parsing only, over :mod:`bnfreeze.commands`.

Exit codes: 0 success, 1 parity failure (nothing written), 2 bad input.
"""

from __future__ import annotations

import functools
import os
import sys

import click

from bnfreeze.compare import DEFAULT_ATOL, DEFAULT_RTOL


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


class BnfreezeGroup(click.Group):
    """Turns bnfreeze's errors into one line on stderr and an exit code."""

    def invoke(self, ctx):
        from bnfreeze.errors import BnfreezeError, ParityError

        try:
            return super().invoke(ctx)
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


def load_options(func):
    return click.option(
        "--unsafe", is_flag=True, help="Turn Keras safe mode off (needed for Lambda layers; trusted files only)."
    )(func)


def tolerance_options(func):
    func = click.option(
        "--rtol", type=float, default=DEFAULT_RTOL, show_default=True,
        help="Pass when max |error| <= RTOL * max |reference output|.",
    )(func)
    func = click.option(
        "--atol", type=float, default=DEFAULT_ATOL, show_default=True, help="Pass when max |error| <= ATOL."
    )(func)
    return func


def write_options(func):
    return click.option("--force", is_flag=True, help="Replace existing outputs.")(func)


def _console():
    from rich.console import Console

    return Console()


@click.group(cls=BnfreezeGroup)
@click.option("--debug", is_flag=True, help="Show Python tracebacks on errors.")
@click.version_option(package_name="bnfreeze")
def main(debug: bool) -> None:
    """Fold, recalibrate, export and verify Keras models with BatchNormalization."""
    if not debug:
        _quiet_tensorflow()


@main.command()
@model_argument
@click.option("-o", "--output", type=click.Path(path_type=str), help="Folded model (default <stem>.folded.keras).")
@click.option("--report", type=click.Path(path_type=str), help="Write the fold report as JSON.")
@click.option("--seed", type=int, default=0, show_default=True, help="Seed of the parity-check inputs.")
@write_options
@load_options
@tolerance_options
def fold(model, output, report, seed, force, unsafe, atol, rtol):
    """Fold BatchNormalization into neighbouring Conv/Dense layers."""
    from bnfreeze.commands import fold_file
    from bnfreeze.terminal import print_fold_report

    result = fold_file(model, output, report=report, force=force, unsafe=unsafe, atol=atol, rtol=rtol, seed=seed)
    print_fold_report(_console(), result.report)


@main.command()
@model_argument
@load_options
@click.option("--json", "json_path", type=click.Path(path_type=str), help="Also write the rows as JSON.")
@write_options
def inspect(model, unsafe, json_path, force):
    """List every normalization layer with its fold plan or the reason it stays."""
    from bnfreeze.commands import inspect_file
    from bnfreeze.modelio import write_json
    from bnfreeze.terminal import print_inspection

    rows = inspect_file(model, unsafe=unsafe)
    print_inspection(_console(), model, rows)
    if json_path:
        write_json([r.as_dict() for r in rows], json_path, force=force)


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
