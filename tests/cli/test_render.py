"""Plain lines for CI logs: wrapped between fields, a label never apart from its value."""

from __future__ import annotations

import io
import re

from hypothesis import given, settings, strategies as st
from rich.console import Console

from bnfreeze.cli.render import Column, print_table, wrap

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


def test_piped_tables_honour_columns(monkeypatch):
    rows = [["bn1", "1.0700000e-06", "0.0001"], ["bn2", "2.5e-07", "0.0001"]]
    columns = [Column("name"), Column("max_abs"), Column("rtol")]
    for env, limit in ((None, 80), ("200", 200)):
        if env is None:
            monkeypatch.delenv("COLUMNS", raising=False)
        else:
            monkeypatch.setenv("COLUMNS", env)
        out = io.StringIO()
        print_table(Console(file=out, force_terminal=False, width=80), "a title " * 15, columns, rows * 3)
        lines = out.getvalue().splitlines()
        assert max(len(line) for line in lines) <= limit
        assert "max_abs 1.0700000e-06" in out.getvalue()
    assert len(lines) == 7  # COLUMNS=200: the title and each row on one line
