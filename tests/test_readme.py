"""The README runs as written on a fresh copy of the repository, and its facts are true.

Every ```bash and ```python block is run, in README order, in a copy of the
repository (the installed ``bnfreeze`` command and package). A block may be
skipped only with a marker on the line above it that says why
(``<!-- readme-test: skip: installs the package -->``); the test fails on a
skip marker without a reason. Files a snippet writes must be ignored by git
(no ``m.onnx`` left in the repository root).
"""

import os
import re
import shutil
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
README = REPO / "README.md"
FENCE = re.compile(r"^```(\w*)\s*$")
SKIP = re.compile(r"<!--\s*readme-test:\s*skip:\s*(.+?)\s*-->")


def snippets():
    """(line, language, code, skip reason) of every fenced block with a language."""
    lines = README.read_text().splitlines()
    found, index = [], 0
    while index < len(lines):
        match = FENCE.match(lines[index])
        if not match:
            index += 1
            continue
        language, start = match.group(1), index
        end = next(i for i in range(index + 1, len(lines)) if lines[i].startswith("```"))
        if language in ("bash", "python"):
            above = "\n".join(lines[max(0, start - 2):start])
            skip = SKIP.search(above)
            found.append((start + 1, language, "\n".join(lines[start + 1:end]), skip.group(1) if skip else None))
        index = end + 1
    return found


def _fresh_copy(tmp_path: Path) -> Path:
    ignore = shutil.ignore_patterns(".git", ".venv*", "build", "__pycache__", ".pytest_cache", ".hypothesis",
                                    "*.egg-info", "*.folded.keras")
    copy = tmp_path / "repo"
    shutil.copytree(REPO, copy, ignore=ignore)
    return copy


def _files(root: Path) -> set[str]:
    return {str(p.relative_to(root)) for p in root.rglob("*") if p.is_file() and "__pycache__" not in p.parts}


def test_skips_are_few_and_say_why():
    skipped = [(line, reason) for line, _lang, _code, reason in snippets() if reason is not None]
    assert all(len(reason) > 10 for _line, reason in skipped), skipped
    assert len(skipped) <= 3, f"too many README snippets are not run: {skipped}"
    assert len(snippets()) - len(skipped) >= 2


@pytest.mark.slow
def test_every_snippet_runs_as_written(tmp_path):
    copy = _fresh_copy(tmp_path)
    before = _files(copy)
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2", PATH=f"{Path(sys.executable).parent}:{os.environ['PATH']}")
    for line, language, code, skip in snippets():
        if skip is not None:
            continue
        command = ["bash", "-euo", "pipefail", "-c", code] if language == "bash" else [sys.executable, "-c", code]
        proc = subprocess.run(command, cwd=copy, env=env, capture_output=True, text=True, timeout=900)
        assert proc.returncode == 0, f"README line {line} ({language}) failed:\n{proc.stdout[-1500:]}\n{proc.stderr[-3000:]}"
    created = sorted(_files(copy) - before)
    tracked = [path for path in created
               if subprocess.run(["git", "-C", str(REPO), "check-ignore", "-q", "--no-index", path]).returncode != 0]
    assert not tracked, f"README snippets write files git would track: {tracked}"


def test_python_versions_agree_with_pyproject():
    requires = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]["requires-python"]
    low = re.search(r">=\s*3\.(\d+)", requires).group(1)
    high = int(re.search(r"<\s*3\.(\d+)", requires).group(1)) - 1
    stated = re.search(r"Python 3\.(\d+)[–-]3\.(\d+)", README.read_text())
    assert stated and (stated.group(1), int(stated.group(2))) == (low, high), (requires, stated and stated.group(0))


def test_the_readme_names_no_test_count_to_go_stale():
    assert not re.search(r"\b\d{3,} tests\b", README.read_text()), "state measured facts with their date, not counts"


def test_test_only_dependencies_are_used_by_tests():
    """scikit-learn is in the test extras because a test reads the digits data with it."""
    extras = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]["optional-dependencies"]["test"]
    sources = "\n".join(p.read_text() for p in (REPO / "tests").rglob("*.py"))
    for requirement in extras:
        name = re.split(r"[<>=\[ ;]", requirement)[0]
        module = {"scikit-learn": "sklearn"}.get(name, name.replace("-", "_"))
        assert re.search(rf"^\s*(import|from) {module}\b", sources, re.M), f"no test imports {name}"
