"""Rich tables for the terminal: the same facts as the JSON reports."""

from __future__ import annotations


def _fmt(value) -> str:
    return "-" if value is None else f"{value:.3g}"


def _tolerance_note(tolerance: dict | None) -> str:
    if not tolerance:
        return ""
    dtype = f", {tolerance['dtype']} defaults" if tolerance.get("dtype") else ""
    return f" (atol {tolerance['atol']:g}, rtol {tolerance['rtol']:g}{dtype})"


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
            f"max_rel {_fmt(parity['max_rel'])}{_tolerance_note(parity.get('tolerance'))}: {verdict}"
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
    dtype = f", {t.dtype} defaults" if t.dtype else ""
    console.print(f"tolerance: max_abs <= {t.abs_limit:g} or max_rel <= {t.rel_limit:g} ({t.check}{dtype}): {verdict}")


def print_recalibration(console, model_label: str, report: dict) -> None:
    from rich.table import Table

    from bnfreeze.recalibration.report import plural as _plural

    workers = f", {report['workers']} workers" if report.get("workers") else ""
    table = Table(title=f"bnfreeze recalibrate ({report['mode']}, {_plural(report['samples'], 'sample')}, "
                        f"{_plural(report['passes'], 'pass')}{workers}): {model_label}", title_justify="left")
    for column in ("BatchNormalization", "level", "calls", "Δmean max/σ", "Δmean rms/σ", "var ratio",
                   "var ratio range"):
        table.add_column(column)
    for bn in report["batch_norms"]:
        level = "-" if bn["level"] is None else str(bn["level"])
        table.add_row(bn["name"], level, str(bn["calls"]), f"{bn['mean_shift_max']:.3g}",
                      f"{bn['mean_shift_rms']:.3g}", f"{bn['variance_ratio_median']:.3g}",
                      f"{bn['variance_ratio_min']:.3g}..{bn['variance_ratio_max']:.3g}")
    console.print(table)
    for name in report.get("skipped", []):
        console.print(f"[yellow]not reached[/yellow]: BNs inside {name} (a layer bnfreeze cannot look into)")
    for warning in report.get("warnings", []):
        console.print(f"[yellow]warning[/yellow]: {warning['message']}", highlight=False)
    accuracy = report.get("accuracy")
    if accuracy:
        console.print(f"accuracy on {accuracy['data']}: before {accuracy['before']:.4f}, after {accuracy['after']:.4f}")
    if "cached_passes" in report:
        console.print(f"activations kept between passes: {report['cached_passes']} of {report['passes']} passes, "
                      f"peak {report['peak_cache_bytes'] / 2**20:.1f} MiB of {report['memory_budget'] / 2**20:.0f} MiB")
    if report.get("worker"):
        console.print(f"worker {report['worker'] + 1} of {report['workers']}: done; the chief writes the outputs")
    for key in ("output", "folded_output"):
        if report.get(key):
            console.print(f"wrote {report[key]}")


class RichProgress:
    """A progress bar with samples per second, for :mod:`bnfreeze.recalibration`."""

    def __init__(self, console):
        from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

        self._progress = Progress(
            TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(),
            TextColumn("{task.fields[rate]}"), TimeElapsedColumn(), console=console, transient=False,
        )
        self._task = None

    def __enter__(self):
        self._progress.start()
        return self

    def __exit__(self, *exc):
        self._progress.stop()

    def start(self, description: str, total: int | None) -> None:
        if self._task is not None:
            self._progress.update(self._task, visible=False)
        self._task = self._progress.add_task(description, total=total, rate="")

    def advance(self, samples: int) -> None:
        self._progress.advance(self._task, samples)
        speed = self._progress.tasks[-1].speed
        self._progress.update(self._task, rate=f"{speed:,.0f} samples/s" if speed else "")
