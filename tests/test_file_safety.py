"""Outputs are checked before any work, and no command destroys a file it did not write.

Issue 23, classes 5 and 6: a read-only or immutable output folder, an output "folder" that is a file and a
long valid name (its temporary name passed 255 bytes) crashed with exit 3 after the work; outputs inside a
--savedmodel folder replaced with --force were deleted with it; the --custom-objects file could be replaced
as --report; and --force replaced /dev/null or a FIFO by a regular file. Every case hashes the folder
before and after.
"""

from __future__ import annotations

import contextlib
import errno
import hashlib
import json
import os
import shutil
import socket
import stat
import subprocess
import threading
from pathlib import Path

import pytest
from click.testing import CliRunner

from bnfreeze.cli import main
from bnfreeze.errors import InputError
from bnfreeze.io.files import (MANIFEST, atomic_path, check_output_paths, check_writable, committed_together,
                               write_json)
from support import bnfreeze as run_fresh


def _tree(folder: Path) -> dict[str, str]:
    """Every file under ``folder`` with its hash (special files by kind)."""
    found = {}
    for path in sorted(folder.rglob("*")):
        mode = path.lstat().st_mode
        if stat.S_ISREG(mode):
            found[str(path.relative_to(folder))] = hashlib.sha256(path.read_bytes()).hexdigest()
        elif not stat.S_ISDIR(mode):
            found[str(path.relative_to(folder))] = f"mode {stat.S_IFMT(mode)}"
    return found


def _run(*args):
    return CliRunner().invoke(main, [str(a) for a in args])


@contextlib.contextmanager
def read_only(folder: Path):
    """``folder`` made unwritable: immutable as root (root ignores permission bits), mode 555 otherwise."""
    if os.geteuid() == 0:
        if shutil.which("chattr") is None or subprocess.run(["chattr", "+i", str(folder)],
                                                             capture_output=True).returncode != 0:
            pytest.skip("root without chattr +i: no way to make a folder unwritable here")
        try:
            yield
        finally:
            subprocess.run(["chattr", "-i", str(folder)], capture_output=True)
    else:
        folder.chmod(0o555)
        try:
            yield
        finally:
            folder.chmod(0o755)


@pytest.fixture()
def model(tmp_path, example_model_path):
    target = tmp_path / "m.keras"
    shutil.copy(example_model_path, target)
    return target


# -- class 5: every output checked before any work -------------------------------------------------------
def test_a_read_only_folder_is_refused_before_any_work(tmp_path, model):
    out = tmp_path / "ro"
    out.mkdir()
    before = _tree(tmp_path)
    with read_only(out):
        with pytest.raises(InputError, match=r"ro/x.json: cannot write in .*ro \("):
            check_writable(out / "x.json", force=False)
        for args in (("fold", model, "-o", out / "f.keras"), ("fold", model, "--report", out / "r.json"),
                     ("export", model, "--onnx", out / "m.onnx"), ("inspect", model, "--json", out / "i.json"),
                     ("report", model, "-o", out / "r.html")):
            result = _run(*args)
            assert result.exit_code == 2, (args, result.output)
            assert "cannot write in" in result.output and "internal error" not in result.output, result.output
            assert "folded" not in result.output  # refused before the work
    assert _tree(tmp_path) == before


def test_an_output_folder_that_is_a_file_is_refused(tmp_path, model):
    (tmp_path / "afile").write_text("precious")
    before = _tree(tmp_path)
    for args in (("fold", model, "-o", tmp_path / "afile" / "f.keras"),
                 ("export", model, "--savedmodel", tmp_path / "afile" / "sm"),
                 ("verify", model, model, "--json", tmp_path / "afile" / "v.json")):
        result = _run(*args)
        assert result.exit_code == 2 and "is not a folder (a file of that name is in the way)" in result.output, \
            result.output
    assert _tree(tmp_path) == before


def test_long_names_work_up_to_the_limit_and_are_refused_past_it(tmp_path):
    longest = "r" * 250 + ".json"  # 255 bytes: the file system's limit, and its temporary name must fit too
    write_json({"a": 1}, tmp_path / longest)
    assert json.loads((tmp_path / longest).read_text()) == {"a": 1}
    with pytest.raises(InputError, match="the name is 256 bytes long; this file system allows 255"):
        check_writable(tmp_path / ("r" * 251 + ".json"), force=False)
    with atomic_path(tmp_path / ("k" * 249 + ".keras"), force=False) as tmp:
        assert len(tmp.name) < 40 and tmp.suffix == ".keras"
        tmp.write_text("x")
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted([longest, "k" * 249 + ".keras"])


def test_a_long_model_name_gives_a_default_output_name_that_is_checked_first(tmp_path, example_model_path):
    model = tmp_path / ("m" * 240 + ".keras")  # <stem>.recalibrated.keras would be 259 bytes
    shutil.copy(example_model_path, model)
    result = _run("recalibrate", model, "--calib-data", Path(example_model_path).parent / "digits_calib.npy")
    assert result.exit_code == 2 and "the name is 259 bytes long" in result.output, result.output
    result = _run("fold", model)  # <stem>.folded.keras: 253 bytes, fine
    assert result.exit_code == 0, result.output
    assert (tmp_path / ("m" * 240 + ".folded.keras")).exists()


def test_an_os_error_while_writing_is_one_line_and_leaves_nothing(tmp_path):
    with pytest.raises(InputError, match=r"out.json: cannot be written \(No space left on device\); nothing"):
        with atomic_path(tmp_path / "out.json", force=False) as tmp:
            tmp.write_text("partial")
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
    assert list(tmp_path.iterdir()) == []


def test_outputs_written_together_are_taken_back_when_one_cannot_be_put_in_place(tmp_path, monkeypatch):
    (tmp_path / "a.json").write_text("old a")
    real = os.replace

    def failing(source, destination):
        if Path(destination).name == "b.json":
            raise OSError(errno.EROFS, os.strerror(errno.EROFS))
        return real(source, destination)

    monkeypatch.setattr(os, "replace", failing)
    with pytest.raises(InputError, match=r"b.json: cannot be written \(Read-only file system\); nothing was written"):
        with committed_together() as stack:
            stack.enter_context(atomic_path(tmp_path / "b.json", force=False)).write_text("new b")
            stack.enter_context(atomic_path(tmp_path / "a.json", force=True)).write_text("new a")  # in place first
    assert (tmp_path / "a.json").read_text() == "old a"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a.json"]


# -- class 6: nothing destroyed that bnfreeze did not write ----------------------------------------------
def test_outputs_inside_a_savedmodel_folder_that_is_replaced_are_refused(tmp_path, model):
    result = _run("export", model, "--savedmodel", tmp_path / "sm")
    assert result.exit_code == 0, result.output
    assert (tmp_path / "sm" / MANIFEST).is_file()
    before = _tree(tmp_path)
    for args in (("export", model, "--savedmodel", tmp_path / "sm", "--onnx", tmp_path / "sm" / "m.onnx", "--force"),
                 ("fold", model, "--savedmodel", tmp_path / "sm", "--report", tmp_path / "sm" / "assets" / "r.json",
                  "--force"),
                 ("fold", model, "-o", tmp_path / "sm" / "f.keras", "--savedmodel", tmp_path / "sm", "--force")):
        result = _run(*args)
        assert result.exit_code == 2, (args, result.output)
        assert "a folder this command writes (and replaces whole)" in result.output, result.output
    assert _tree(tmp_path) == before
    with pytest.raises(InputError, match="lies inside"):
        check_output_paths([], [(tmp_path / "new_sm", True), (tmp_path / "new_sm" / "x.onnx", False)], force=True)


def test_a_savedmodel_folder_with_someone_elses_files_is_never_replaced(tmp_path, model):
    assert _run("export", model, "--savedmodel", tmp_path / "sm").exit_code == 0
    (tmp_path / "sm" / "README.txt").write_text("my notes")
    theirs = tmp_path / "theirs"
    theirs.mkdir()
    (theirs / "saved_model.pb").write_bytes(b"written by tf.saved_model.save")
    before = _tree(tmp_path)
    for folder, message in ((tmp_path / "sm", "holds files bnfreeze did not write (README.txt)"),
                            (theirs, "is a folder bnfreeze did not write")):
        result = _run("export", model, "--savedmodel", folder, "--force")
        assert result.exit_code == 2 and message in result.output, result.output
    assert _tree(tmp_path) == before
    (tmp_path / "sm" / "README.txt").unlink()
    result = _run("export", model, "--savedmodel", tmp_path / "sm", "--force")  # its own folder: replaced
    assert result.exit_code == 0, result.output


def test_the_custom_objects_file_is_an_input(tmp_path, model):
    code = tmp_path / "layers.py"
    code.write_text("CUSTOM_OBJECTS = {}\n")
    before = _tree(tmp_path)
    for args in (("fold", model, "--report", code), ("inspect", model, "--json", code),
                 ("verify", model, model, "--json", code), ("report", model, "-o", code)):
        result = _run(*args, "--force", "--unsafe", "--custom-objects", code)
        assert result.exit_code == 2, (args, result.output)
        assert "is an input of this command" in result.output or "ending in .html" in result.output, result.output
    assert _tree(tmp_path) == before


def test_an_output_inside_an_input_folder_is_refused(tmp_path, model):
    from PIL import Image
    import numpy as np

    images = tmp_path / "images"
    images.mkdir()
    Image.fromarray(np.zeros((8, 8), np.uint8)).save(images / "a.png")
    before = _tree(tmp_path)
    result = _run("recalibrate", model, "--calib-data", images, "--report", images / "a.png", "--force")
    assert result.exit_code == 2 and "lies inside the input folder" in result.output, result.output
    assert _tree(tmp_path) == before


@pytest.mark.parametrize("device", ["/dev/null"])
def test_a_character_device_is_written_through_never_replaced(tmp_path, model, device):
    result = _run("fold", model, "-o", tmp_path / "f.keras", "--report", device, "--force")
    assert result.exit_code == 0, result.output
    assert stat.S_ISCHR(os.stat(device).st_mode)
    result = _run("verify", model, model, "--json", device, "--junit", device)
    assert result.exit_code == 0, result.output
    assert stat.S_ISCHR(os.stat(device).st_mode)
    before = _tree(tmp_path)
    result = _run("fold", model, "-o", device, "--onnx", device, "--force")  # every check, nothing kept
    assert result.exit_code == 0 and "wrote /dev/null" in result.output, result.output
    assert stat.S_ISCHR(os.stat(device).st_mode) and _tree(tmp_path) == before


def test_a_fifo_is_written_through_never_replaced(tmp_path):
    fifo = tmp_path / "pipe"
    os.mkfifo(fifo)
    received = []
    reader = threading.Thread(target=lambda: received.append(fifo.read_text()))
    reader.start()
    write_json({"through": True}, fifo, force=True)
    reader.join(timeout=30)
    assert json.loads(received[0]) == {"through": True}
    assert stat.S_ISFIFO(os.lstat(fifo).st_mode)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["pipe"]


def test_sockets_and_folders_are_never_replaced_by_a_file(tmp_path):
    path = tmp_path / "s.sock"
    server = socket.socket(socket.AF_UNIX)
    server.bind(str(path))
    try:
        with pytest.raises(InputError, match="is a socket"):
            write_json({}, path, force=True)
    finally:
        server.close()
    (tmp_path / "folder").mkdir()
    with pytest.raises(InputError, match="is a folder"):
        write_json({}, tmp_path / "folder", force=True)


def test_a_symbolic_link_output_replaces_its_target_and_stays(tmp_path):
    target = tmp_path / "real.json"
    target.write_text("old")
    link = tmp_path / "latest.json"
    link.symlink_to(target)
    write_json({"new": 1}, link, force=True)
    assert link.is_symlink() and json.loads(target.read_text()) == {"new": 1}


def test_a_failed_export_keeps_the_old_savedmodel(tmp_path, model):
    assert _run("export", model, "--savedmodel", tmp_path / "sm").exit_code == 0
    before = _tree(tmp_path)
    result = _run("export", model, "--savedmodel", tmp_path / "sm", "--onnx", tmp_path / "m.onnx", "--force",
                  "--opset", "99")
    assert result.exit_code == 2, result.output
    assert _tree(tmp_path) == before


def test_a_fresh_process_refuses_a_read_only_output_folder_in_one_line(tmp_path, model):
    out = tmp_path / "ro"
    out.mkdir()
    with read_only(out):
        proc = run_fresh("fold", model, "-o", out / "f.keras")
    assert proc.returncode == 2, proc.stderr
    assert proc.stderr.count("\n") == 1 and "cannot write in" in proc.stderr and "Traceback" not in proc.stderr


def test_an_immutable_output_file_is_refused_before_any_work(tmp_path, model):
    report = tmp_path / "r.json"
    report.write_text("keep")
    if os.geteuid() != 0 or shutil.which("chattr") is None or \
            subprocess.run(["chattr", "+i", str(report)], capture_output=True).returncode != 0:
        pytest.skip("needs chattr +i (root)")
    try:
        result = _run("fold", model, "-o", tmp_path / "f.keras", "--report", report, "--force")
        assert result.exit_code == 2 and "r.json: cannot be replaced (it is immutable" in result.output, result.output
        assert not (tmp_path / "f.keras").exists() and report.read_text() == "keep"
    finally:
        subprocess.run(["chattr", "-i", str(report)], capture_output=True)
