"""Plain lines for CI logs: wrapped between fields, a label never apart from its value."""

from __future__ import annotations

import io
import re

from hypothesis import given, settings, strategies as st
from rich.console import Console

from bnfreeze.cli.render import Column, print_table, say, wrap

FIELD = st.tuples(st.sampled_from(["max_abs", "rtol", "variance ratio", "RESHAPE", "onnx int8", "path"]),
                  st.from_regex(r"[0-9a-z_./+-]{1,30}", fullmatch=True))


@settings(max_examples=200, deadline=None)
@given(st.lists(FIELD, min_size=1, max_size=12), st.integers(40, 120))
def test_fields_stay_whole_and_lines_fit(fields, width):
    text = "  row: " + ", ".join(f"{label} {value}" for label, value in fields)
    wrapped = wrap(text, width, "      ")
    assert re.sub(r"\s+", " ", wrapped).strip() == re.sub(r"\s+", " ", text).strip()  # nothing lost or cut
    lines = wrapped.splitlines()
    for label, value in fields:
        if len(f"      {label} {value},") <= width:  # a field that fits a line is never split
            assert any(f"{label} {value}" in line for line in lines), (label, value, wrapped)
    for line in lines:
        assert len(line) <= width or " " not in line.strip(), (width, line)  # over: one unbreakable word


def test_piped_lines_are_whole_whatever_the_columns(monkeypatch):
    """A pipe or CI log has no width: a row and its verdict stay on one line (``grep passed`` finds both)."""
    rows = [["build/release/digits_cnn_quantized.tflite", "1.0700000e-06", "0.0001", "passed"],
            ["bn2", "2.5e-07", "0.0001", "passed"]]
    columns = [Column("name"), Column("max_abs"), Column("rtol"), Column("result", "")]
    for env in (None, "80", "50"):
        if env is None:
            monkeypatch.delenv("COLUMNS", raising=False)
        else:
            monkeypatch.setenv("COLUMNS", env)
        out = io.StringIO()
        print_table(Console(file=out, force_terminal=False, width=80), "a title " * 15, columns, rows * 3)
        lines = out.getvalue().splitlines()
        assert len(lines) == 7  # the title and each row on one line
        assert lines[1] == "  build/release/digits_cnn_quantized.tflite: max_abs 1.0700000e-06, rtol 0.0001, passed"
        out = io.StringIO()
        say(Console(file=out, force_terminal=False, width=80), "parity on 64 samples: " + "max_abs 1e-07, " * 10
            + "passed")
        assert len(out.getvalue().splitlines()) == 1


def _natural_width(table_rows, columns) -> int:
    out = io.StringIO()
    print_table(Console(file=out, force_terminal=True, width=1000, color_system=None), "t", columns, table_rows)
    return max(len(line) for line in out.getvalue().splitlines())


@settings(max_examples=60, deadline=None)
@given(st.lists(st.tuples(st.from_regex(r"[a-z_/]{1,20}", fullmatch=True),
                          st.from_regex(r"[a-z0-9.-]{1,14}( [a-z0-9.-]{1,10}){0,3}", fullmatch=True)),
                min_size=1, max_size=5),
       st.integers(40, 120))
def test_a_terminal_gets_a_table_only_where_no_cell_folds(rows, width):
    """Narrower than the table: plain lines, wrapped between fields; wide enough: the table, every row on one line."""
    columns = [Column("layer"), Column("detail", "")]
    out = io.StringIO()
    console = Console(file=out, force_terminal=True, width=width, color_system=None)
    print_table(console, "layers", columns, rows)
    text = out.getvalue()
    natural = _natural_width(rows, columns)
    if natural <= width:
        assert "┃" in text
        for name, detail in rows:  # each row on one table line: no cell folded onto a second line
            assert any(name in line and detail in line for line in text.splitlines()), (name, detail, text)
    else:
        assert "┃" not in text and "│" not in text
        flat = re.sub(r"\s+", " ", text)
        for name, detail in rows:
            assert f"{name}: {detail}" in flat  # nothing cut
    for line in text.splitlines():
        assert len(line) <= width or " " not in line.strip()
