"""The README and the pages of docs/ run as written on a fresh copy of the repository, and their facts are true.

Every ```bash and ```python block of README.md and of each docs/*.md page is
run, in file order, each page in its own copy of the repository (the
installed ``bnfreeze`` command and package), so a page's later blocks may use
the files its earlier blocks wrote. A block may be skipped only with a marker
on the line above it that says why (``<!-- readme-test: skip: needs two
hosts -->``): at most two per page, three in all. Files a block writes must
be ignored by git (no ``m.onnx`` left in the repository root).

The README's first block is what a new user types on a fresh clone: the
lines CI itself runs (``.ci/run``: the virtual environment, the install, the
test command) are checked against ``.ci/run`` instead of being run here, and
the others are run. A ```text block marked ``<!-- readme-test: output -->``
right after a block must be what that block prints on stdout (numbers may
differ: they are measured). Every bash block holds one command per line, so
that it can be copied line by line.
"""

import os
import re
import shlex
import shutil
import subprocess
import sys
import tomllib
from dataclasses import dataclass
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
README = REPO / "README.md"
DOCS = REPO / "docs"
PAGES = [README, *sorted(DOCS.glob("*.md"))]
CI_RUN = REPO / ".ci" / "run"
WORKFLOW = DOCS / "ci" / "github-actions-parity.yml"
FENCE = re.compile(r"^```(\w*)\s*$")
SKIP = re.compile(r"<!--\s*readme-test:\s*skip:\s*(.+?)\s*-->")
OUTPUT = re.compile(r"<!--\s*readme-test:\s*output\s*-->")
RUNNABLE = ("bash", "python")
MAX_SKIPS_PER_PAGE, MAX_SKIPS = 2, 3
README_MAX_LINES = 400


@dataclass(frozen=True)
class Block:
    page: Path
    line: int  # of the opening fence, 1-based
    language: str
    code: str
    skip: str | None  # the reason given by a skip marker
    output: bool  # marked as the output of the block before it

    @property
    def where(self) -> str:
        return f"{self.page.relative_to(REPO)} line {self.line}"


def blocks(page: Path) -> list[Block]:
    """Every fenced block of a page, in order, with the markers on the two lines above it."""
    lines = page.read_text().splitlines()
    found, index = [], 0
    while index < len(lines):
        match = FENCE.match(lines[index])
        if not match:
            index += 1
            continue
        start = index
        end = next(i for i in range(index + 1, len(lines)) if lines[i].startswith("```"))
        above = "\n".join(lines[max(0, start - 2):start])
        skip = SKIP.search(above)
        found.append(Block(page, start + 1, match.group(1), "\n".join(lines[start + 1:end]),
                           skip.group(1) if skip else None, bool(OUTPUT.search(above))))
        index = end + 1
    return found


def snippets(page: Path = README) -> list[Block]:
    return [b for b in blocks(page) if b.language in RUNNABLE]


def commands(code: str) -> list[str]:
    """The command lines of a bash block (comments and blank lines left out)."""
    return [line.strip() for line in code.splitlines() if line.strip() and not line.strip().startswith("#")]


def ci_commands() -> list[str]:
    """The commands .ci/run runs, as a user types them: its own environment .venv-ci read as .venv, --quiet dropped."""
    return [re.sub(r"\s--quiet\b", "", line).replace(".venv-ci", ".venv") for line in commands(CI_RUN.read_text())]


def workflow_commands() -> list[str]:
    """The commands of the example workflow's ``run:`` steps, in order (``run: cmd`` and ``run: |`` blocks)."""
    lines, found, index = WORKFLOW.read_text().splitlines(), [], 0
    while index < len(lines):
        match = re.match(r"^(\s*)(?:- )?run:\s*(.*)$", lines[index])
        index += 1
        if not match:
            continue
        if match.group(2) != "|":
            found.append(match.group(2).strip())
            continue
        indent = len(match.group(1))
        while index < len(lines) and (not lines[index].strip() or len(lines[index]) - len(lines[index].lstrip()) > indent):
            found.extend(commands(lines[index]))
            index += 1
    return found


def to_run(block: Block) -> str:
    """The code the test runs; of the README's first block, the lines .ci/run runs itself are checked against it
    instead (a virtual environment, an install and the whole suite cannot run inside the suite)."""
    if block != blocks(README)[0]:
        return block.code
    ci = set(ci_commands())
    return "\n".join(f": CI runs this line: {shlex.quote(line)}" if line.strip() in ci else line
                     for line in block.code.splitlines())


def _section(page: Path, heading: str) -> str:
    text = page.read_text()
    start = text.index(f"\n## {heading}\n")
    following = text.find("\n## ", start + 1)
    return text[start:following if following >= 0 else len(text)]


def test_skips_are_few_and_say_why():
    skipped = [(b.where, b.skip) for page in PAGES for b in snippets(page) if b.skip is not None]
    assert all(len(reason) > 10 for _where, reason in skipped), skipped
    assert len(skipped) <= MAX_SKIPS, f"too many snippets are not run: {skipped}"
    for page in PAGES:
        assert sum(b.skip is not None for b in snippets(page)) <= MAX_SKIPS_PER_PAGE, page
    assert sum(b.skip is None for b in snippets(README)) >= 5


def test_every_block_says_what_it_holds():
    """Commands are ```bash or ```python (run), anything else (synopses, outputs, JSON shapes) is named too."""
    unnamed = [b.where for page in PAGES for b in blocks(page) if not b.language]
    assert not unnamed, f"give these code blocks a language (bash, python, text, ...): {unnamed}"
    for page in PAGES:
        found = blocks(page)
        for index, block in enumerate(found):
            if block.output:
                assert block.language == "text" and index > 0 and found[index - 1].language in RUNNABLE, block.where
                assert found[index - 1].skip is None, f"{block.where}: the output of a block that is not run"


def _code(line: str) -> str:
    """A line without its shell comment."""
    return re.sub(r"(?:^|\s)#.*$", "", line)


def _shell_separators(line: str) -> list[str]:
    lexer = shlex.shlex(line, posix=True, punctuation_chars=True)
    lexer.commenters = "#"
    return [token for token in lexer if token in (";", "&&", "||", "&", ";;")]


@pytest.mark.parametrize("page", PAGES, ids=lambda p: str(p.relative_to(REPO)))
def test_one_command_per_line(page):
    """Copying a block line by line runs each command: no `a && b`, no `;`, no continuation lines."""
    for block in blocks(page):
        for number, line in enumerate(block.code.splitlines(), block.line + 1):
            where = f"{page.relative_to(REPO)} line {number}"
            code = _code(line) if block.language != "python" else ""
            assert len(re.findall(r"(?:^|\s)bnfreeze [a-z]", code)) <= 1, f"{where}: two commands on one line: {line}"
            if block.language == "bash":
                assert not line.rstrip().endswith("\\"), f"{where}: a command continued on the next line"
                assert not _shell_separators(line), f"{where}: more than one command on a line: {line}"


def test_the_readme_is_a_front_door():
    lines = README.read_text().splitlines()
    assert len(lines) <= README_MAX_LINES, f"README has {len(lines)} lines; the reference belongs in docs/"
    first = blocks(README)[0]
    assert first.language == "bash" and first.skip is None, "the README's first block is the first run, and is run"
    typed = commands(first.code)
    assert 'python -m pip install -e ".[test]"' in typed and "python -m pytest -q" in typed, typed
    assert any(line.startswith("bnfreeze fold ") for line in typed), typed


def test_the_first_block_is_what_ci_runs():
    """Lines of the README's first block that are not bnfreeze commands are .ci/run's own, in its order."""
    ci = ci_commands()
    typed = commands(blocks(README)[0].code)
    others = [line for line in typed if not line.startswith("bnfreeze ")]
    assert all(line in ci for line in others), (others, ci)
    positions = [ci.index(line) for line in others]
    assert positions == sorted(positions), f"the README's first block runs CI's lines in another order: {others}"
    for needed in ('python -m pip install -e ".[test]"', "python -m pytest -q"):
        assert needed in ci, f".ci/run no longer runs {needed!r}, which the README tells users to run"


def test_the_ci_example_is_the_workflow():
    """The README's "In CI" block lists the steps of docs/ci/github-actions-parity.yml after its install."""
    section = _section(README, "In CI")
    shown = [line for b in blocks(README) if b.language == "bash" and f"\n{b.code}\n" in section + "\n"
             for line in commands(b.code)]
    steps = [line for line in workflow_commands() if not re.match(r"(python -m )?pip install", line)]
    assert shown and shown == steps, (shown, steps)
    assert any("verify --config docs/ci/parity.toml" in line for line in shown), shown


def _slug(heading: str) -> str:
    text = re.sub(r"[^\w\- ]", "", heading.strip().lower().replace("`", ""))
    return text.replace(" ", "-")


def _anchors(page: Path) -> set[str]:
    found, seen = set(), {}
    in_code = False
    for line in page.read_text().splitlines():
        if line.startswith("```"):
            in_code = not in_code
            continue
        match = re.match(r"^#{1,6}\s+(.*?)\s*$", line)
        if match and not in_code:
            slug = _slug(match.group(1))
            count = seen.get(slug, 0)
            seen[slug] = count + 1
            found.add(slug if count == 0 else f"{slug}-{count}")
    return found


@pytest.mark.parametrize("page", PAGES, ids=lambda p: str(p.relative_to(REPO)))
def test_links_point_at_files_and_sections_that_exist(page):
    text = re.sub(r"```.*?```", "", page.read_text(), flags=re.S)
    for target in re.findall(r"\]\(([^)\s]+)\)", text):
        if re.match(r"[a-z]+:", target):
            continue
        path, _, anchor = target.partition("#")
        resolved = (page.parent / path).resolve() if path else page
        assert resolved.exists(), f"{page.relative_to(REPO)} links to {target}, which does not exist"
        if anchor:
            assert resolved.suffix == ".md" and anchor in _anchors(resolved), \
                f"{page.relative_to(REPO)} links to {target}: no such section in {resolved.name}"


def test_every_page_of_docs_is_linked_from_the_readme():
    text = README.read_text()
    missing = [p.name for p in PAGES[1:] if f"(docs/{p.name})" not in text]
    assert not missing, f"the README's documentation table misses {missing}"


def test_options_shown_are_options_of_their_command():
    """Every --option after `bnfreeze COMMAND` in any block (synopses included) is one that command takes."""
    from bnfreeze.cli import main

    options = {name: {o for p in command.params for o in (*p.opts, *p.secondary_opts)}
               for name, command in main.commands.items()}
    for page in PAGES:
        for block in blocks(page):
            if block.language == "python":
                continue
            command = None
            for number, line in enumerate(block.code.splitlines(), block.line + 1):
                code = _code(line)
                match = re.search(r"(?:^|\s)bnfreeze (?:--debug )?([a-z-]+)", code)
                if match:
                    command = match.group(1)
                    assert command in options, f"{page.relative_to(REPO)} line {number}: no command {command}"
                    code = code[match.end():]
                if command is None:
                    continue
                for option in re.findall(r"(?<![\w-])(--[a-z][a-z0-9-]*|-o)\b", code):
                    assert option in options[command], \
                        f"{page.relative_to(REPO)} line {number}: bnfreeze {command} has no option {option}"


def _fresh_copy(tmp_path: Path) -> Path:
    ignore = shutil.ignore_patterns(".git", ".venv*", "build", "__pycache__", ".pytest_cache", ".hypothesis",
                                    "*.egg-info", "*.folded.keras", "*.recalibrated.keras", "*.report.html")
    copy = tmp_path / "repo"
    shutil.copytree(REPO, copy, ignore=ignore)
    return copy


def _files(root: Path) -> set[str]:
    return {str(p.relative_to(root)) for p in root.rglob("*") if p.is_file() and "__pycache__" not in p.parts}


_NUMBER = re.compile(r"[-+]?\d+(?:\.\d+)?(?:e[-+]?\d+)?")


def _matches_shown(shown: str, printed: str) -> str | None:
    """Why ``printed`` is not what ``shown`` says (every line in order; measured numbers may differ), or None."""
    want = [line.rstrip() for line in shown.splitlines() if line.strip()]
    got = [line.rstrip() for line in printed.splitlines() if line.strip()]
    if len(want) != len(got):
        return f"{len(got)} lines printed, {len(want)} shown"
    for wanted, line in zip(want, got):
        pattern = "".join(_NUMBER.pattern if i % 2 else re.escape(part) for i, part in enumerate(_split_numbers(wanted)))
        if not re.fullmatch(pattern, line):
            return f"shown: {wanted}\nprinted: {line}"
    return None


def _split_numbers(line: str) -> list[str]:
    """Text and numbers alternately: text, number, text, ... (so odd items are numbers)."""
    parts, last = [], 0
    for match in _NUMBER.finditer(line):
        parts += [line[last:match.start()], match.group(0)]
        last = match.end()
    return [*parts, line[last:]]


RUN_PAGES = [page for page in PAGES if any(b.skip is None for b in snippets(page))]


@pytest.mark.slow
@pytest.mark.parametrize("page", RUN_PAGES, ids=lambda p: str(p.relative_to(REPO)))
def test_every_snippet_runs_as_written(page, tmp_path):
    copy = _fresh_copy(tmp_path)
    before = _files(copy)
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2", PATH=f"{Path(sys.executable).parent}:{os.environ['PATH']}")
    env.pop("COLUMNS", None)
    found = blocks(page)
    for index, block in enumerate(found):
        if block.language not in RUNNABLE or block.skip is not None:
            continue
        code = to_run(block)
        command = ["bash", "-euo", "pipefail", "-c", code] if block.language == "bash" else [sys.executable, "-c", code]
        proc = subprocess.run(command, cwd=copy, env=env, capture_output=True, text=True, timeout=900)
        assert proc.returncode == 0, f"{block.where} ({block.language}) failed:\n{proc.stdout[-1500:]}\n{proc.stderr[-3000:]}"
        if index + 1 < len(found) and found[index + 1].output:
            wrong = _matches_shown(found[index + 1].code, proc.stdout)
            assert wrong is None, f"{found[index + 1].where} is not what {block.where} prints:\n{wrong}"
    created = sorted(_files(copy) - before)
    tracked = [path for path in created
               if subprocess.run(["git", "-C", str(REPO), "check-ignore", "-q", "--no-index", path]).returncode != 0]
    assert not tracked, f"{page.relative_to(REPO)}'s snippets write files git would track: {tracked}"


def test_shown_output_is_compared_line_by_line():
    shown = "folded 3 of 3 layers\nparity: max_abs 1.67e-06 (atol 1e-05): passed"
    assert _matches_shown(shown, "folded 3 of 3 layers\nparity: max_abs 2.5e-07 (atol 1e-05): passed\n") is None
    assert _matches_shown(shown, "folded 2 of 3 layers\nparity: max_abs 2.5e-07 (atol 1e-05): failed") is not None
    assert _matches_shown(shown, "folded 3 of 3 layers") is not None


def test_python_versions_agree_with_pyproject():
    requires = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]["requires-python"]
    low = re.search(r">=\s*3\.(\d+)", requires).group(1)
    high = int(re.search(r"<\s*3\.(\d+)", requires).group(1)) - 1
    stated = re.search(r"Python 3\.(\d+)[–-]3\.(\d+)", README.read_text())
    assert stated and (stated.group(1), int(stated.group(2))) == (low, high), (requires, stated and stated.group(0))


@pytest.mark.parametrize("page", PAGES, ids=lambda p: str(p.relative_to(REPO)))
def test_no_test_count_to_go_stale(page):
    assert not re.search(r"\b\d{3,} tests\b", page.read_text()), "state measured facts with their date, not counts"


def test_test_only_dependencies_are_used_by_tests():
    """scikit-learn is in the test extras because a test reads the digits data with it."""
    extras = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]["optional-dependencies"]["test"]
    sources = "\n".join(p.read_text() for p in (REPO / "tests").rglob("*.py"))
    addopts = tomllib.loads((REPO / "pyproject.toml").read_text())["tool"]["pytest"]["ini_options"]["addopts"]
    for requirement in extras:
        name = re.split(r"[<>=\[ ;]", requirement)[0]
        if name == "pytest-xdist":  # a plugin the configuration uses, not a module a test imports
            assert re.search(r"(^|\s)-n\s*\S", addopts), f"{name} is in the test extras but addopts runs no workers"
            continue
        module = {"scikit-learn": "sklearn"}.get(name, name.replace("-", "_"))
        assert re.search(rf"^\s*(import|from) {module}\b", sources, re.M), f"no test imports {name}"
