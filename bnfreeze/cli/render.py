"""Tables that never cut a name or a number, and lines that stay whole in a log.

A rich table squeezed into 80 columns cuts long cells with an ellipsis
(``1.97e…``, ``build/digits_c…``) or folds them mid-word. So a table is drawn
as a table only on a terminal wide enough for all of it. Otherwise every row
becomes one plain line of ``header value`` fields: off a terminal (a pipe, a
CI log) each such line is written whole, however long, so that
``grep passed`` finds a verdict with its row; on a narrow terminal it is
wrapped between fields (never inside a value) with a hanging indent.
"""

from __future__ import annotations

import re
import textwrap
from dataclasses import dataclass
from typing import Callable, Sequence



@dataclass(frozen=True)
class Column:
    header: str
    #: How the plain layout labels this field: the header by default, "" for the value alone.
    label: str | None = None
    justify: str = "left"


def fits(console, table) -> bool:
    """The rich table is drawn in full (no cell cut or folded) on this console."""
    if not console.is_terminal:
        return False
    # measured without the console's width as a cap: a table squeezed into it folds its cells (across lines)
    natural = console.measure(table, options=console.options.update(width=1 << 16, max_width=1 << 16)).maximum
    return natural <= console.width


def plain_line(columns: Sequence[Column], row: Sequence[str]) -> str:
    """``first  header value, header value ...``: the default plain form of one row."""
    parts = [row[0]]
    for column, value in zip(columns[1:], row[1:]):
        if value in ("", None):
            continue
        label = column.header if column.label is None else column.label
        parts.append(f"{label} {value}" if label else str(value))
    return parts[0] + ": " + ", ".join(parts[1:]) if len(parts) > 1 else parts[0]


def wrap(text: str, width: int | None, indent: str = "    ") -> str:
    """Wrap between fields (after ``", "`` or ``": "``), so that ``max_abs 1.07e-06`` stays on one line for a
    reader and for ``grep``; only a field longer than a line by itself (a long path) wraps at its
    own spaces. Never inside a word or number; continuation lines indented. ``width`` None: ``text`` as it is."""
    if width is None:
        return text
    width = max(width, 40)
    lines: list[str] = []
    line = ""
    for field in re.split(r"(?<=[,:]) ", text):
        joined = f"{line} {field}" if line else field
        if len(joined) <= width or not line:
            line = joined
            continue
        lines.append(line)
        line = indent + field
    if line:
        lines.append(line)
    out = []
    for number, line in enumerate(lines):
        if len(line) <= width:
            out.append(line)
            continue
        pieces = textwrap.wrap(line, width=width, subsequent_indent=indent, break_long_words=False,
                               break_on_hyphens=False, drop_whitespace=True)
        if number:  # textwrap strips the indent of a continuation line's first piece
            pieces[0] = indent + pieces[0].lstrip()
        out.extend(pieces)
    return "\n".join(out) or text


def print_table(
    console,
    title: str,
    columns: Sequence[Column],
    rows: Sequence[Sequence[str]],
    *,
    styles: Sequence[str | None] | None = None,
    plain: Callable[[Sequence[str]], str] | None = None,
) -> None:
    """Print ``rows`` as a rich table where it fits, else as wrapped plain lines.

    ``styles`` gives a rich style per row (terminal only); ``plain`` formats
    one row as a line (default :func:`plain_line`).
    """
    from rich.table import Table

    table = Table(title=title, title_justify="left")
    for column in columns:
        table.add_column(column.header, justify=column.justify, overflow="fold")
    for index, row in enumerate(rows):
        style = styles[index] if styles else None
        table.add_row(*[str(cell) for cell in row], style=style)
    if fits(console, table):
        console.print(table)
        return
    width = _width(console)
    console.print(wrap(title, width, "  "), markup=False, highlight=False, soft_wrap=True)
    for row in rows:
        line = plain(row) if plain else plain_line(columns, [str(c) for c in row])
        console.print(wrap("  " + line, width, "      "), markup=False, highlight=False, soft_wrap=True)


def _width(console) -> int | None:
    """The terminal's width; None off a terminal, where a line is never wrapped (a log has no width)."""
    return console.width if console.is_terminal else None


def say(console, text: str) -> None:
    """A sentence of output, wrapped between words on a narrow terminal, whole off one, never cut, no markup."""
    console.print(wrap(text, _width(console), "  "), markup=False, highlight=False, soft_wrap=True)
