"""How a command runs: errors and signals become one line and an exit code, and TensorFlow is
imported (quietly) only where a command first needs it, after every check that needs none.

Exit codes: 0 success, 1 a check failed (nothing written), 2 bad input,
3 internal error (a bug: rerun with --debug), 130 interrupted (SIGINT),
143 terminated (SIGTERM); nothing is written unless the exit code is 0, except that
an export artifact refused (exit 1 or 2) never costs the outputs that passed: they are
written, and the line names them (:func:`bnfreeze.export.refusal`).
"""

from __future__ import annotations

import importlib.abc
import os
import sys

import click


class _QuietTensorFlow(importlib.abc.MetaPathFinder):
    """Imports TensorFlow, the first time anything imports it, with its start-up chatter (CUDA probing)
    kept off stderr and signals held (a signal inside a native import would abort the process).

    Installed before a command runs, so that a command imports TensorFlow only where it needs it: every
    check that needs no TensorFlow (files, options, outputs) answers first, in well under a second,
    instead of after the seconds of TensorFlow's import.
    """

    def find_spec(self, fullname, path, target=None):
        if fullname != "tensorflow" or fullname in sys.modules:
            return None
        for finder in sys.meta_path:
            if finder is self or not hasattr(finder, "find_spec"):
                continue
            spec = finder.find_spec(fullname, path, target)
            if spec is not None:
                break
        else:
            return None
        if spec.loader is not None and hasattr(spec.loader, "exec_module"):
            spec.loader = _QuietLoader(spec.loader)
        return spec


class _QuietLoader(importlib.abc.Loader):
    def __init__(self, loader):
        self._loader = loader

    def create_module(self, spec):
        return self._loader.create_module(spec)

    def exec_module(self, module):
        module.__loader__ = self._loader  # the module sees its own loader (resources, reloading)
        if module.__spec__ is not None:
            module.__spec__.loader = self._loader
        from bnfreeze.io.interrupts import deferred

        sys.stderr.flush()
        saved = os.dup(2)
        try:
            with open(os.devnull, "w") as devnull:
                os.dup2(devnull.fileno(), 2)
                try:
                    with deferred():
                        self._loader.exec_module(module)
                        module.config.list_physical_devices()  # probes CUDA now, quietly
                finally:
                    os.dup2(saved, 2)
        finally:
            os.close(saved)
        # TensorFlow's Python warnings ("N out of the last N calls ... triggered tf.function retracing", from
        # the checks that run a model at several shapes on purpose) are not the user's to act on
        import logging

        logging.getLogger("tensorflow").setLevel(logging.ERROR)


_QUIET = _QuietTensorFlow()


def quiet_tensorflow() -> None:
    """From now on, TensorFlow's first import in this process is quiet (:class:`_QuietTensorFlow`)."""
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    if _QUIET not in sys.meta_path:
        sys.meta_path.insert(0, _QUIET)


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
                # at once: a signal that arrived inside TensorFlow's import leaves half-built objects whose
                # finalizers print tracebacks during a normal shutdown; every write has ended by now
                sys.stdout.flush()
                sys.stderr.flush()
                os._exit(exc.exit_code)
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

        if not ctx.params.get("debug"):
            quiet_tensorflow()  # before the command's options are parsed: --custom-objects imports Keras
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
    """A command whose TensorFlow import, wherever it happens, is quiet.

    ``--help``, ``--version`` and option errors are answered by click before
    :meth:`invoke`; a missing file, a missing option or an existing output is
    found by the command before anything imports TensorFlow (seconds).
    """

    def invoke(self, ctx):
        import warnings

        # legacy .h5 models declare their single input as a list; Keras warns on every call
        warnings.filterwarnings("ignore", message="The structure of `inputs` doesn't match")
        _show_data_warnings()
        root = ctx.find_root()
        if not root.params.get("debug"):
            quiet_tensorflow()
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


def _show_data_warnings() -> None:
    """bnfreeze's own warnings (:class:`~bnfreeze.errors.DataWarning`) as one ``bnfreeze: warning:`` line on
    stderr, when they happen; any other warning as Python shows it."""
    import warnings

    from bnfreeze.errors import DataWarning

    shown = warnings.showwarning
    if getattr(shown, "_bnfreeze", False):
        return

    def show(message, category, filename, lineno, file=None, line=None):
        if issubclass(category, DataWarning):
            click.echo(f"bnfreeze: warning: {message}", err=True)
        else:
            shown(message, category, filename, lineno, file, line)

    show._bnfreeze = True
    warnings.showwarning = show


BnfreezeGroup.command_class = BnfreezeCommand
