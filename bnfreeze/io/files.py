"""Writing outputs atomically, the checks every output passes before any work, and derived paths.

Every file bnfreeze writes goes first to a temporary file in the destination
folder and is renamed into place only when it is complete, so a failure at any
point leaves nothing behind and never a half-written artifact. Outputs written
together (:func:`committed_together`) are put in place together: if one cannot
be, those already renamed are put back as they were.

What an output may replace (the rule every command follows):

* a path where nothing is: written;
* an existing regular file: only with ``force`` (a symbolic link is followed:
  the file it names is replaced, the link stays);
* an existing folder: only a folder *bnfreeze wrote itself* (a SavedModel,
  marked by :data:`MANIFEST`, holding nothing bnfreeze did not write), only
  for an output that is a folder, and only with ``force``;
* a character device or FIFO (``/dev/null``, ``/dev/stdout`` in CI): never
  replaced; the finished bytes are written through to it;
* anything else (a block device, a socket): refused.

:func:`check_writable` says all of this before any work starts, together
with the rest of what makes a write fail: the folder is missing, is a file,
is read-only or immutable, or the name is longer than the file system
allows. Temporary names are short (``.bnf-XXXXXXXX.tmp.keras``), whatever
the output's name. An OS error while writing becomes one
:class:`~bnfreeze.errors.InputError` line naming the output, with nothing
left behind.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import stat
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Iterable, Iterator

from bnfreeze.errors import InputError
from bnfreeze.io.interrupts import checkpoint, deferred, forget_written, record_written


#: Files that make a folder a SavedModel.
SAVEDMODEL_FILES = ("saved_model.pb", "saved_model.pbtxt")
#: The file bnfreeze puts in every folder it writes (a SavedModel): the files it wrote there. Only a folder
#: that has it, and holds nothing else, is ever replaced (with ``force``). TensorFlow ignores it.
MANIFEST = ".bnfreeze-written.json"
#: Longest suffix a temporary name keeps (Keras insists on ``.keras``); longer ones are dropped.
_SUFFIX_LIMIT = 16


# -- what is at a path ---------------------------------------------------------------------
def _target(path: Path) -> Path:
    """The path written: a symbolic link's target (the link stays), else ``path``."""
    return Path(os.path.realpath(path)) if path.is_symlink() else path


def _mode(path: Path) -> int | None:
    try:
        return path.stat().st_mode
    except (FileNotFoundError, NotADirectoryError):
        return None
    except OSError as exc:
        raise InputError(f"{path}: cannot be examined ({exc.strerror or exc})") from exc


def is_special(path: str | os.PathLike) -> bool:
    """A character device or FIFO (``/dev/null``, ``/dev/stdout`` as a pipe): written through, never replaced."""
    mode = _mode(Path(path))
    return mode is not None and (stat.S_ISCHR(mode) or stat.S_ISFIFO(mode))


def _kind(mode: int) -> str:
    if stat.S_ISBLK(mode):
        return "a block device"
    if stat.S_ISSOCK(mode):
        return "a socket"
    return "not a regular file"


def _name_limit(folder: Path) -> int:
    try:
        return int(os.pathconf(folder, "PC_NAME_MAX"))
    except (OSError, ValueError, AttributeError):
        return 255


def _path_limit(folder: Path) -> int:
    try:
        return int(os.pathconf(folder, "PC_PATH_MAX"))
    except (OSError, ValueError, AttributeError):
        return 4096


def _written_files(folder: Path) -> list[str]:
    return sorted(str(p.relative_to(folder)) for p in folder.rglob("*") if not p.is_dir())


def _foreign_files(folder: Path) -> list[str] | None:
    """The files in ``folder`` bnfreeze did not write there; None when bnfreeze did not write the folder at all."""
    try:
        manifest = json.loads((folder / MANIFEST).read_text())
        listed = set(manifest["files"])
    except (OSError, ValueError, KeyError, TypeError):
        return None
    return [name for name in _written_files(folder) if name != MANIFEST and name not in listed]


def check_name(path: Path) -> None:
    """The name, and the whole path, fit the file system (bnfreeze's temporary names are short: they fit
    wherever the name does)."""
    folder = path.parent
    while not folder.is_dir() and folder != folder.parent:  # the limits of the nearest folder that exists
        folder = folder.parent
    length = len(os.fsencode(path.name))
    if length > _name_limit(folder):
        raise InputError(f"{path}: the name is {length} bytes long; this file system allows {_name_limit(folder)}")
    if len(os.fsencode(os.path.abspath(path))) >= _path_limit(folder):
        raise InputError(f"{path}: the path is longer than this file system allows ({_path_limit(folder)} bytes)")


def check_writable(path: str | os.PathLike, *, force: bool, folder: bool = False) -> Path:
    """Everything that would make writing ``path`` fail or destroy something, said before any work.

    ``folder``: the output is a folder (a SavedModel). See the module doc for
    what may be replaced. Raises :class:`InputError` (one line naming the
    path); returns ``path``.
    """
    path = Path(path)
    if path.name in ("", ".", ".."):
        raise InputError(f"{path}: is not a file name; give the name of the {'folder' if folder else 'file'} to write")
    check_name(path)
    target = _target(path)
    parent = target.parent
    parent_mode = _mode(parent)
    if parent_mode is None:
        raise InputError(f"{parent}: output folder does not exist")
    if not stat.S_ISDIR(parent_mode):
        raise InputError(f"{path}: {parent} is not a folder (a file of that name is in the way)")
    check_name(target)
    mode = _mode(target)
    if mode is not None:
        if stat.S_ISCHR(mode) or stat.S_ISFIFO(mode):
            if folder:
                raise InputError(f"{path}: is a device or FIFO; a SavedModel is a folder: give a folder name")
            if not os.access(target, os.W_OK):
                raise InputError(f"{path}: cannot be written (permission denied)")
            return path  # written through, never replaced: nothing to force
        if stat.S_ISDIR(mode):
            if not folder:
                raise InputError(f"{path}: is a folder; give the name of the file to write")
            foreign = _foreign_files(target)
            if foreign is None:
                raise InputError(f"{path}: is a folder bnfreeze did not write; bnfreeze replaces only a SavedModel "
                                 "folder it wrote itself (with --force), never another folder")
            if foreign:
                more = f" and {len(foreign) - 1} more" if len(foreign) > 1 else ""
                raise InputError(f"{path}: holds files bnfreeze did not write ({foreign[0]}{more}); bnfreeze never "
                                 "replaces a folder with someone else's files in it")
        elif not stat.S_ISREG(mode):
            raise InputError(f"{path}: is {_kind(mode)}; bnfreeze writes only regular files and folders")
        elif folder:
            raise InputError(f"{path}: exists and is not a SavedModel folder")
        if not force:
            raise InputError(f"{path}: already exists; pass --force to replace it")
        if _immutable(target):
            raise InputError(f"{path}: cannot be replaced (it is immutable or append-only: chattr)")
    _probe(parent, path)
    return path


def _immutable(path: Path) -> bool:
    """Linux's immutable or append-only attribute (``chattr +i``/``+a``), which forbids the rename that
    replaces the file even to root; False wherever the attributes cannot be read."""
    try:
        import fcntl
        import struct

        fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK)
    except (ImportError, OSError):
        return False
    try:
        flags = struct.unpack("l", fcntl.ioctl(fd, 0x80086601, struct.pack("l", 0)))[0]  # FS_IOC_GETFLAGS
    except OSError:
        return False
    finally:
        os.close(fd)
    return bool(flags & (0x10 | 0x20))  # FS_IMMUTABLE_FL, FS_APPEND_FL


def _probe(parent: Path, path: Path) -> None:
    """Create and remove a file in ``parent``: the one sure test of a read-only, immutable or full folder."""
    try:
        fd, name = tempfile.mkstemp(prefix=".bnf-", suffix=".probe", dir=parent)
    except OSError as exc:
        raise InputError(f"{path}: cannot write in {parent} ({exc.strerror or exc})") from exc
    os.close(fd)
    with contextlib.suppress(OSError):
        os.unlink(name)


# -- several outputs, and the inputs they must not touch -----------------------------------------
def _inside(path: Path, folder: Path) -> bool:
    try:
        return Path(os.path.realpath(folder)) in Path(os.path.realpath(path)).parents
    except OSError:
        return False


def same_file(a: str | os.PathLike, b: str | os.PathLike) -> bool:
    a, b = Path(a), Path(b)
    if os.path.realpath(a) == os.path.realpath(b):
        return True
    try:
        return os.path.samefile(a, b)  # hard links
    except OSError:
        return False


def check_output_paths(inputs: Iterable, outputs: Iterable[tuple[str | os.PathLike | None, bool]],
                       force: bool) -> None:
    """Before any work: ``outputs`` (``(path, is_folder)``, None skipped) are distinct, none is an input
    (``inputs``; the ``--custom-objects`` files are inputs too), holds one, or lies inside an input folder or
    inside a folder another output replaces; and each may be written (:func:`check_writable`)."""
    from bnfreeze.io.custom_objects import imported_files

    wanted = [(Path(out), folder) for out, folder in outputs if out is not None]
    for out, _folder in wanted:
        check_name(out)  # before anything looks at the path: the OS refuses to even look at a name too long
    seen: set[str] = set()
    for out, _folder in wanted:
        key = os.path.realpath(out)
        if key in seen and not is_special(out):  # /dev/null twice: each is written through
            raise InputError(f"{out}: given for two outputs; each output needs its own path")
        seen.add(key)
    sources = [Path(s) for s in inputs if s is not None] + list(imported_files())
    for out, _folder in wanted:
        for source in sources:
            if same_file(out, source):
                raise InputError(f"{out}: is an input of this command; bnfreeze never overwrites its inputs")
            if out.is_dir() and _inside(source, out):
                raise InputError(f"{out}: holds the input {source}; bnfreeze never replaces it")
            if source.is_dir() and _inside(out, source):
                raise InputError(f"{out}: lies inside the input folder {source}; bnfreeze never writes into its "
                                 "inputs")
    for out, _folder in wanted:
        for other, other_folder in wanted:
            if other_folder and other is not out and _inside(out, other):
                raise InputError(f"{out}: lies inside {other}, a folder this command writes (and replaces whole); "
                                 "put it elsewhere")
    for out, folder in wanted:
        check_writable(out, force=force, folder=folder)


# -- writing ---------------------------------------------------------------------------------
def _temporary(folder: Path, suffix: str, tag: str = ".tmp") -> Path:
    """A short, unused name in ``folder`` (not created)."""
    suffix = suffix if len(suffix) <= _SUFFIX_LIMIT else ""
    fd, name = tempfile.mkstemp(prefix=".bnf-", suffix=tag + suffix, dir=folder)
    os.close(fd)
    os.unlink(name)
    return Path(name)


def _remove(path: Path) -> None:
    """Remove a temporary of bnfreeze's own (best effort: a folder made read-only meanwhile keeps it)."""
    with contextlib.suppress(OSError):
        if path.is_dir() and not path.is_symlink():
            shutil.rmtree(path)
        else:
            path.unlink()


@dataclass
class _Transaction:
    """Outputs put in place so far, and how to take each back (:func:`committed_together`)."""

    undo: list[Callable[[], None]] = field(default_factory=list)
    cleanup: list[Path] = field(default_factory=list)
    later: list[Callable[[], None]] = field(default_factory=list)

    def rollback(self) -> None:
        for step in reversed(self.undo):
            with contextlib.suppress(OSError):
                step()
        self.undo.clear()
        self.finish()

    def finish(self) -> None:
        for path in self.cleanup:
            with contextlib.suppress(OSError):
                _remove(path)
        self.cleanup.clear()


_ACTIVE: list[_Transaction] = []


def _write_through(tmp: Path, target: Path) -> None:
    with open(tmp, "rb") as source, open(target, "wb") as sink:
        shutil.copyfileobj(source, sink)


def _put_in_place(tmp: Path, path: Path, target: Path, folder: bool, transaction: _Transaction) -> None:
    """Rename ``tmp`` to ``target``, keeping what was there until the transaction ends (or comes back)."""
    if is_special(target):
        def through():
            try:
                _write_through(tmp, target)
            except OSError as exc:
                raise _write_error(path, exc) from exc
            record_written(path)
        transaction.later.append(through)
        return
    if folder:
        (tmp / MANIFEST).write_text(json.dumps({"written_by": "bnfreeze", "files": _written_files(tmp)}, indent=1))
    backup = None
    existed = True
    if target.is_dir() and not target.is_symlink():
        backup = _temporary(target.parent, "", ".old")
        os.rename(target, backup)  # a folder cannot be replaced in one rename
        try:
            os.rename(tmp, target)
        except OSError:
            os.rename(backup, target)
            raise
    else:
        existed = target.exists()
        if existed:
            backup = _temporary(target.parent, "", ".old")
            try:
                os.link(target, backup)  # the old file, kept until every output is in place
            except OSError:
                try:
                    shutil.copy2(target, backup)  # a file system without hard links
                except OSError:
                    _remove(backup)
                    backup = None
        os.replace(tmp, target)
    record_written(path)

    def undo():
        if backup is not None:
            forget_written(path)
            if backup.is_dir():
                _remove(target)
                os.rename(backup, target)
            else:
                os.replace(backup, target)
        elif not existed:
            forget_written(path)
            _remove(target)
        # else: the old file could not be kept aside; the new one stays (and is reported as written)
    transaction.undo.append(undo)
    if backup is not None:
        transaction.cleanup.append(backup)


def _write_error(path: Path, exc: OSError) -> InputError:
    return InputError(f"{path}: cannot be written ({exc.strerror or exc}); nothing was written")


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike, *, force: bool, folder: bool = False,
                suffix: str | None = None) -> Iterator[Path]:
    """Yield a temporary path beside ``path``; move it into place on success.

    The temporary name is short and keeps the suffix (Keras insists on
    ``.keras``). On any exception the temporary file or folder is removed and
    ``path`` is left as it was; an OS error becomes an :class:`InputError`
    naming ``path``. ``folder``: the output is a folder (a SavedModel), which
    may replace a folder bnfreeze wrote (:func:`check_writable`). Inside
    :func:`committed_together` the rename waits for the other outputs.
    ``suffix``: the temporary's suffix where the writer needs one the path
    may lack (Keras saves only to ``.keras``; ``-o /dev/null``).
    """
    path = Path(path)
    check_writable(path, force=force, folder=folder)
    target = _target(path)
    special = is_special(target)
    try:
        tmp = _temporary(Path(tempfile.gettempdir()) if special else target.parent,
                         target.suffix if suffix is None else suffix)
    except OSError as exc:
        raise _write_error(path, exc) from exc
    own = None if _ACTIVE else _Transaction()
    transaction = own if own is not None else _ACTIVE[-1]
    try:
        try:
            yield tmp
        except OSError as exc:
            raise _write_error(path, exc) from exc
        if not tmp.exists():
            raise RuntimeError(f"nothing was written for {path}")
        checkpoint()  # an interrupt that was swallowed on the way stops the command here, nothing written
        try:
            with deferred():  # replace the old output and put the new one in place, untorn
                check_writable(path, force=force, folder=folder)
                _put_in_place(tmp, path, target, folder, transaction)
            if own is not None:
                _complete(own)
        except BaseException as exc:
            if own is not None:
                own.rollback()
            if isinstance(exc, OSError):
                raise _write_error(path, exc) from exc
            raise
    finally:
        if special and own is None:
            transaction.cleanup.append(tmp)  # written through once every output is in place
        else:
            _remove(tmp)


def _complete(transaction: _Transaction) -> None:
    """Write through to the special files (signals not held: a FIFO may wait for its reader), then drop
    the old outputs. The caller takes everything back if this fails."""
    steps, transaction.later = transaction.later, []
    for step in steps:
        step()
    transaction.undo.clear()
    transaction.finish()


def write_json(data, path: str | os.PathLike, *, force: bool = False) -> Path:
    """Write ``data`` as indented JSON atomically."""
    path = Path(path)
    with atomic_path(path, force=force) as tmp:
        tmp.write_text(to_json(data))
    return path


@contextlib.contextmanager
def committed_together() -> Iterator[contextlib.ExitStack]:
    """An ExitStack of :func:`atomic_path` outputs that are put in place together or not at all.

    The work inside the block may be interrupted (every temporary is removed);
    once it is done, all renames run with signals held, so an interrupt
    cannot leave some outputs written and others not; and where one rename
    fails (a full disk, a folder made read-only meanwhile), those done are
    taken back, so nothing is written.
    """
    transaction = _Transaction()
    _ACTIVE.append(transaction)
    try:
        with contextlib.ExitStack() as stack:
            yield stack
            checkpoint()  # raised here, it unwinds every output without putting any in place
            pending = stack.pop_all()
        with deferred():
            pending.close()
        _complete(transaction)
    except BaseException:
        transaction.rollback()
        raise
    finally:
        _ACTIVE.remove(transaction)


def to_json(data) -> str:
    return json.dumps(data, indent=2, default=_json_default) + "\n"


def _json_default(value):
    import numpy as np

    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, np.ndarray):
        return value.tolist()
    raise TypeError(f"cannot write {type(value).__name__} as JSON")


def derived_path(model_path: str | os.PathLike, tag: str) -> Path:
    """``<stem>.<tag>.keras`` beside ``model_path``."""
    model_path = Path(model_path)
    return model_path.with_name(f"{model_path.stem}.{tag}.keras")
