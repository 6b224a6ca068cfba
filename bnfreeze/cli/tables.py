"""What each command shows: the same facts as its JSON report, never cut (:mod:`bnfreeze.cli.render`)."""

from __future__ import annotations

from bnfreeze.cli.render import Column, print_table, say


def _fmt(value) -> str:
    return "-" if value is None else f"{value:.3g}"


def _tolerance_note(tolerance: dict | None) -> str:
    if not tolerance:
        return ""
    dtype = f", {tolerance['dtype']} defaults" if tolerance.get("dtype") else ""
    return f" (atol {tolerance['atol']:g}, rtol {tolerance['rtol']:g}{dtype})"


def print_fold_report(console, report: dict) -> None:
    folded, kept = report["folded"], report["kept"]
    rows, styles = [], []
    for entry in folded:
        detail = f"into {entry['into']}"
        if entry.get("through"):
            detail += f" through {', '.join(entry['through'])}"
        rows.append((entry["bn"], f"folded {entry['direction']}", detail))
        styles.append(None)
    for entry in kept:
        rows.append((entry["bn"], "kept", entry["reason"]))
        styles.append("yellow")
    total = len(folded) + len(kept)
    if rows:
        print_table(console, f"bnfreeze fold: {report['model']}",
                    [Column("BatchNormalization"), Column("result", ""), Column("detail", "")], rows, styles=styles,
                    plain=lambda row: f"{row[0]}: {row[1]} {row[2]}" if row[1] != "kept" else f"{row[0]}: kept: {row[2]}")
    if total == 0:
        say(console, f"{report['model']} has no BatchNormalization layer: nothing to fold")
    elif not folded:
        say(console, f"no BatchNormalization layer could be folded: all {total} stay (reasons above)")
    else:
        say(console, f"folded {len(folded)} of {total} BatchNormalization layers"
                     + (f"; {len(kept)} stay (reasons above)" if kept else ""))
    parity = report.get("parity")
    if parity:
        verdict = "passed" if parity["passed"] else "FAILED"
        runs = parity.get("runs") or []
        noted = [r for r in runs if r.get("note")]
        say(console, f"parity on {parity['samples']} samples ({len(runs)} runs: inference at x1 and x10, "
                     f"the default call{', data' if any('samples' in r['inputs'] for r in runs) else ''}): "
                     f"max_abs {_fmt(parity['max_abs'])}, max_rel {_fmt(parity['max_rel'])}"
                     f"{_tolerance_note(parity.get('tolerance'))}: {verdict}")
        for run in noted:
            say(console, f"  {run['call']}, {run['inputs']}: {run['note']}")


def print_inspection(console, model_label: str, rows) -> None:
    if not rows:
        say(console, f"{model_label} has no normalization layers")
        return
    print_table(console, f"normalization layers of {model_label}",
                [Column("layer"), Column("kind", ""), Column("action", ""), Column("detail", "")],
                [(r.layer, r.kind, r.action, r.detail) for r in rows],
                plain=lambda row: f"{row[0]} ({row[1]}): {row[2]}: {row[3]}")


def print_artifacts(console, artifacts: list[dict]) -> None:
    rows = []
    for a in artifacts:
        tolerance = a.get("tolerance") or {}
        limit = f"atol {tolerance['atol']:g} or rtol {tolerance['rtol']:g}" if tolerance else "-"
        rows.append((a["kind"], a["path"], _fmt(a["max_abs"]), _fmt(a["max_rel"]), limit,
                     "passed" if a["passed"] else "FAILED", f"{a['seconds']:.2f}",
                     str(a.get("bn_derived_nodes", "-"))))
    print_table(console, "artifacts (each checked against the Keras model before it was written)",
                [Column("kind"), Column("path", ""), Column("max_abs"), Column("max_rel"), Column("tolerance"),
                 Column("result", ""), Column("seconds"), Column("BN nodes left")], rows,
                plain=lambda r: (f"{r[0]} {r[1]}: max_abs {r[2]}, max_rel {r[3]} ({r[4]}): {r[5]}; "
                                 f"{r[6]} s; BN nodes left {r[7]}"))


def _number(value, digits: int = 3) -> str:
    if value is None:
        return "-"
    if value != value:
        return "nan"
    if value in (float("inf"), float("-inf")):
        return "inf" if value > 0 else "-inf"
    return f"{value:.{digits}g}"


def print_verify(console, report) -> None:
    """One block per candidate and device: a verdict line, then one line per output.

    Plain lines written with ``soft_wrap`` (rich neither cuts nor folds them),
    so paths and numbers survive any terminal width and a pipe (no terminal:
    80 columns and no colour).
    """
    from rich.text import Text

    def line(*parts):
        console.print(Text.assemble(*parts), soft_wrap=True, highlight=False)

    quantized = f", {report.reference_quantization}" if report.reference_quantization else ""
    data = str(report.data)
    if "random sample" not in data:
        data = f"{report.samples} sample{'s' if report.samples != 1 else ''} from {data}"
    line(("bnfreeze verify: ", "bold"), f"{report.reference} ({report.reference_backend}{quantized}) on {data}")
    for row in report.rows:
        if row.skipped:
            verdict = ("FAILED ", "red") if row.required else ("skipped", "yellow")
            line(verdict, f"  {row.candidate}  {row.backend}/{row.device}: {row.reason}")
            continue
        verdict = ("passed ", "green") if row.passed else ("FAILED ", "red")
        quantization = f"  quantized: {row.quantization}" if row.quantization else ""
        line(verdict, f"  {row.candidate}  {row.backend}/{row.device} ({row.provider}), batch {row.batch_size}{quantization}")
        for output in row.outputs:
            name = output.name
            other = row.output_names.get(name)
            label = f"{name} <- {other}" if other else name
            top1 = "-" if output.top1_agreement is None else f"{output.top1_agreement:.4f}"
            snr = "-" if output.snr_db is None else _number(output.snr_db)
            cosine = "-" if output.cosine is None else f"{output.cosine:.6f}"
            worst = "" if output.worst_sample is None else f"  worst sample {output.worst_sample}"
            line(f"    {label}: max_abs {_number(output.max_abs)}  max_rel {_number(output.max_rel)}  top-1 {top1}  "
                 f"snr {snr} dB  cosine {cosine}{worst}")
            if output.reason:
                line(("      ", ""), (output.reason, "red"))
    verdict = ("passed", "green") if report.passed else ("FAILED", "red")
    line(f"criterion: {report.tolerance.explain()}: ", verdict)


def print_recalibration(console, model_label: str, report: dict) -> None:
    from rich.table import Table

    table = Table(title=f"bnfreeze recalibrate ({report['mode']}, {report['samples']} samples, "
                        f"{report['passes']} passes): {model_label}", title_justify="left")
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
    accuracy = report.get("accuracy")
    if accuracy:
        console.print(f"accuracy on {accuracy['data']}: before {accuracy['before']:.4f}, after {accuracy['after']:.4f}")
    if "cached_passes" in report:
        console.print(f"activations kept between passes: {report['cached_passes']} of {report['passes']} passes, "
                      f"peak {report['peak_cache_bytes'] / 2**20:.1f} MiB of {report['memory_budget'] / 2**20:.0f} MiB")
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

    def start(self, description: str, total: int) -> None:
        if self._task is not None:
            self._progress.update(self._task, visible=False)
        self._task = self._progress.add_task(description, total=total, rate="")

    def advance(self, samples: int) -> None:
        self._progress.advance(self._task, samples)
        speed = self._progress.tasks[-1].speed
        self._progress.update(self._task, rate=f"{speed:,.0f} samples/s" if speed else "")
