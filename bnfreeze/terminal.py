"""Rich tables for the terminal: the same facts as the JSON reports."""

from __future__ import annotations


def _fmt(value) -> str:
    return "-" if value is None else f"{value:.3g}"


def print_fold_report(console, report: dict) -> None:
    from rich.table import Table

    table = Table(title=f"bnfreeze fold: {report['model']}", title_justify="left")
    table.add_column("BatchNormalization")
    table.add_column("result")
    table.add_column("detail")
    for entry in report["folded"]:
        detail = entry["into"]
        if entry.get("through"):
            detail += f" (through {', '.join(entry['through'])})"
        table.add_row(entry["bn"], f"folded {entry['direction']}", detail)
    for entry in report["kept"]:
        table.add_row(entry["bn"], "[yellow]kept[/yellow]", entry["reason"])
    console.print(table)
    parity = report.get("parity")
    total = len(report["folded"]) + len(report["kept"])
    console.print(f"folded {len(report['folded'])} of {total} BatchNormalization layers")
    if parity:
        verdict = "[green]passed[/green]" if parity["passed"] else "[red]FAILED[/red]"
        console.print(
            f"parity on {parity['samples']} samples: max_abs {_fmt(parity['max_abs'])}, "
            f"max_rel {_fmt(parity['max_rel'])}: {verdict}"
        )
    if report.get("output"):
        console.print(f"wrote {report['output']}")


def print_inspection(console, model_label: str, rows) -> None:
    from rich.table import Table

    table = Table(title=f"normalization layers of {model_label}", title_justify="left")
    for column in ("layer", "kind", "plan", "detail"):
        table.add_column(column)
    for row in rows:
        table.add_row(row.layer, row.kind, row.action, row.detail)
    console.print(table)
    if not rows:
        console.print("no normalization layers")
