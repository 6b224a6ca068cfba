"""How a command runs: errors and signals become one line and an exit code, and TensorFlow is
imported (quietly) only once a command's options are parsed.

Exit codes: 0 success, 1 a check failed (nothing written), 2 bad input,
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
                from bnfreeze.io.interrupts import deferred

                with deferred():  # a signal inside a native import would abort the process
                    import tensorflow

                    tensorflow.config.list_physical_devices()  # probes CUDA now, quietly
            finally:
                os.dup2(saved, 2)
    finally:
        os.close(saved)


def _interrupted_message(exc) -> str:
    from bnfreeze.io.interrupts import written

    what = "interrupted" if exc.signum == 2 else "terminated"
    done = written()
    if not done:
        return f"bnfreeze: {what}; nothing was written"
    return f"bnfreeze: {what} after writing {', '.join(done)}"


class BnfreezeGroup(click.Group):
    """Turns bnfreeze's errors into one line on stderr and an exit code."""

    def main(self, *args, **kwargs):
        from bnfreeze.io.interrupts import Interrupted, install, reported

        install()  # SIGINT/SIGTERM -> Interrupted, held inside bnfreeze.io.interrupts.deferred()
        try:
            try:
                code = super().main(*args, standalone_mode=False, **kwargs)
            except Interrupted as exc:  # wherever it arrived, up to the exit: said truly, once
                reported()
                click.echo(_interrupted_message(exc), err=True)
                sys.exit(exc.exit_code)
            except click.UsageError as exc:  # one line, like every other bad input
                where = exc.ctx.command_path if exc.ctx is not None else "bnfreeze"
                click.echo(f"bnfreeze: error: {exc.format_message()} (see {where} --help)", err=True)
                sys.exit(2)
            except click.ClickException as exc:
                exc.show()
                sys.exit(exc.exit_code)
            except click.Abort:
                click.echo("bnfreeze: aborted", err=True)
                sys.exit(1)
            sys.exit(code if isinstance(code, int) else 0)
        finally:
            # The command has finished and said what it wrote: a signal during the interpreter's
            # (slow, TensorFlow) shutdown must not turn that into a death by SIGINT.
            import signal

            signal.signal(signal.SIGINT, signal.SIG_IGN)
            signal.signal(signal.SIGTERM, signal.SIG_IGN)

    def invoke(self, ctx):
        from bnfreeze.errors import BnfreezeError, CheckError
        from bnfreeze.io.interrupts import Interrupted, checkpoint

        try:
            result = super().invoke(ctx)
            checkpoint()  # a signal whose exception was swallowed (in a finalizer) is still an interrupt
            return result
        except KeyboardInterrupt as exc:  # SIGINT before install(), or raised by a library: reported in main
            raise Interrupted(2) from exc
        except BnfreezeError as exc:
            _traceback_if_debug(ctx)
            click.echo(f"bnfreeze: error: {exc}", err=True)
            ctx.exit(1 if isinstance(exc, CheckError) else 2)
        except (click.exceptions.Exit, click.ClickException, click.Abort):
            raise
        except Exception as exc:
            _traceback_if_debug(ctx)
            from bnfreeze.errors import message_line

            click.echo(f"bnfreeze: internal error: {type(exc).__name__}: {message_line(exc)} (rerun with --debug)",
                       err=True)
            ctx.exit(3)


def _traceback_if_debug(ctx) -> None:
    """With --debug, the traceback of the error being handled; the exit code stays the same."""
    if ctx.params.get("debug"):
        import traceback

        traceback.print_exc()


class BnfreezeCommand(click.Command):
    """A command that starts TensorFlow only once its options are parsed.

    ``--help``, ``--version`` and option errors are answered by click before
    :meth:`invoke`, so they never wait for TensorFlow's import (seconds).
    """

    def invoke(self, ctx):
        import warnings

        # legacy .h5 models declare their single input as a list; Keras warns on every call
        warnings.filterwarnings("ignore", message="The structure of `inputs` doesn't match")
        root = ctx.find_root()
        if not root.params.get("debug"):
            _quiet_tensorflow()
        try:
            return super().invoke(ctx)
        except (click.exceptions.Exit, click.ClickException, click.Abort):
            raise
        except Exception as exc:
            from bnfreeze.errors import BnfreezeError, runtime_refusal

            if isinstance(exc, BnfreezeError):
                raise
            # a model this machine's TensorFlow cannot run at all (no kernel for an op here), or ids beyond a
            # table the data checks could not see: bad input, one line
            data = ctx.params.get("calib_data") or ctx.params.get("data")
            data = ", ".join(map(str, data)) if isinstance(data, (list, tuple)) else data
            refusal = runtime_refusal(ctx.params.get("model") or ctx.params.get("reference") or "the model", exc, data)
            if refusal is None:
                raise
            raise refusal from exc


BnfreezeGroup.command_class = BnfreezeCommand
