"""Tables that never cut a name or a number.

A rich table squeezed into 80 columns cuts long cells with an ellipsis
(``1.97e…``, ``build/digits_c…``), and every CI log is an 80-column console
that is not a terminal. So a table is drawn as a table only on a terminal
wide enough for all of it; otherwise every row becomes one plain line of
``header value`` fields, wrapped between fields (never inside a value) with
a hanging indent. The same facts, nothing cut, readable in a log.
"""

from __future__ import annotations

import textwrap
from dataclasses import dataclass
from typing import Callable, Sequence

PLAIN_WIDTH = 80


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
    return console.measure(table).maximum <= console.width


def plain_line(columns: Sequence[Column], row: Sequence[str]) -> str:
    """``first  header value, header value ...``: the default plain form of one row."""
    parts = [row[0]]
    for column, value in zip(columns[1:], row[1:]):
        if value in ("", None):
            continue
        label = column.header if column.label is None else column.label
        parts.append(f"{label} {value}" if label else str(value))
    return parts[0] + ": " + ", ".join(parts[1:]) if len(parts) > 1 else parts[0]


def wrap(text: str, width: int, indent: str = "    ") -> str:
    """Wrap at spaces only (a long name or number stays whole), continuation lines indented."""
    return "\n".join(textwrap.wrap(text, width=max(width, 40), subsequent_indent=indent, break_long_words=False,
                                   break_on_hyphens=False)) or text


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
    width = console.width if console.is_terminal else PLAIN_WIDTH
    console.print(wrap(title, width, "  "), markup=False, highlight=False, soft_wrap=True)
    for row in rows:
        line = plain(row) if plain else plain_line(columns, [str(c) for c in row])
        console.print(wrap("  " + line, width, "      "), markup=False, highlight=False, soft_wrap=True)


def say(console, text: str) -> None:
    """A sentence of output, wrapped between words on narrow consoles, never cut, no markup."""
    width = console.width if console.is_terminal else PLAIN_WIDTH
    console.print(wrap(text, width, "  "), markup=False, highlight=False, soft_wrap=True)
