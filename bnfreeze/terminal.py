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


def print_artifacts(console, artifacts: list[dict]) -> None:
    from rich.table import Table

    table = Table(title="artifacts (checked against the Keras model)", title_justify="left")
    for column in ("kind", "path", "max_abs", "max_rel", "seconds", "BN nodes left"):
        table.add_column(column)
    for a in artifacts:
        table.add_row(a["kind"], a["path"], _fmt(a["max_abs"]), _fmt(a["max_rel"]), f"{a['seconds']:.2f}",
                      str(a.get("bn_derived_nodes", "-")))
    console.print(table)


def print_verify(console, report) -> None:
    from rich.table import Table

    table = Table(title=f"bnfreeze verify: {report.reference} on {report.data}", title_justify="left")
    for column in ("candidate", "backend", "device", "provider", "batch", "max_abs", "max_rel", "top-1", "result"):
        table.add_column(column)
    notes = []
    for row in report.rows:
        if row.skipped:
            result = "[red]FAILED[/red]" if row.required else "[yellow]skipped[/yellow]"
        elif row.passed:
            result = "[green]passed[/green]"
        else:
            result = "[red]FAILED[/red]"
        if row.reason:
            notes.append(f"{row.candidate} ({row.backend}/{row.device}): {row.reason}")
            result += f" [{len(notes)}]"
        top1 = "-" if row.top1_agreement is None else f"{row.top1_agreement:.3f}"
        table.add_row(row.candidate, row.backend, row.device, row.provider or "-", str(row.batch_size),
                      _fmt(row.max_abs), _fmt(row.max_rel), top1, result)
    console.print(table)
    for number, note in enumerate(notes, 1):
        console.print(f"[{number}] {note}", markup=False, highlight=False)
    t = report.tolerance
    verdict = "[green]passed[/green]" if report.passed else "[red]FAILED[/red]"
    console.print(f"tolerance: max_abs <= {t.atol:g} or max_rel <= {t.rtol:g} ({t.check}): {verdict}")
