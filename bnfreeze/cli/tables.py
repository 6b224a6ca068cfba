"""What each command shows: the same facts as its JSON report, never cut (:mod:`bnfreeze.cli.render`)."""

from __future__ import annotations

import collections

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


def _ops_text(ops: dict) -> str:
    hidden = {"QuantizeLinear", "DequantizeLinear"}
    shown = [f"{kind} {count}" for kind, count in sorted(ops.items(), key=lambda kv: (-kv[1], kv[0])) if kind not in hidden]
    conversions = sum(count for kind, count in ops.items() if kind in hidden)
    return ", ".join(shown) + (f" (+{conversions} QuantizeLinear/DequantizeLinear)" if conversions else "")


def _size(count: int) -> str:
    return f"{count / 1024:.1f} KiB" if count < 1 << 20 else f"{count / 2**20:.2f} MiB"


def print_quantize_report(console, report: dict) -> None:
    """The fold plan, then one row per int8 artifact: ops, float ops, BN ops left, size, agreement, accuracy."""
    calibration = report["calibration"]
    say(console, f"bnfreeze quantize: {report['model']}, calibrated on {calibration['samples']} samples of "
                 f"{calibration['data']} ({report['weights']} weights)")
    recalibration = report.get("recalibration")
    if recalibration:
        say(console, f"recalibrated the BN statistics first ({recalibration['mode']}, {recalibration['samples']} "
                     f"samples, {recalibration['passes']} passes)")
        for kept in recalibration.get("kept") or []:
            say(console, f"  not recalibrated: {kept['reason']}")
    if report.get("fold") is not None:
        print_fold_report(console, {**report["fold"], "model": report["model"]})
    else:
        say(console, "not folded (--no-fold): the converters see every BatchNormalization layer")
    for entry in report.get("scales_moved_back") or []:
        say(console, f"  {entry['bn']}: scale of {entry['channels']} of {entry['of']} channels moved back into "
                     f"{entry['scale_into']} (through its ReLU), shift folded into {entry['shift_into']}")
    equalization = report.get("equalization")
    if equalization is not None:
        say(console, f"cross-layer equalization: {len(equalization['pairs'])} layer pairs in "
                     f"{equalization['sweeps']} sweeps")
    corrected = report.get("bias_correction")
    if corrected is not None:
        say(console, f"bias correction: {len(corrected['layers'])} layers, on {corrected.get('samples', 0)} samples")
    for entry in report.get("not_rewritten") or []:
        say(console, f"  {entry['layer']}: left as it is by {entry['step']}: {entry['reason']}")
    artifacts = report.get("artifacts") or []
    if not artifacts:
        return
    evaluation = report.get("evaluation") or {}
    rows, styles = [], []
    for a in artifacts:
        accuracy = "-" if a.get("accuracy") is None else f"{a['accuracy']:.4f}"
        top1 = "-" if a.get("top1_agreement") is None else f"{a['top1_agreement']:.4f}"
        exact = sum(1 for op in a["float_ops"] if op["exact"])
        floats = f"{len(a['float_ops']) - exact}" + (f" (+{exact} exact)" if exact else "")
        verdict = "passed" if a.get("passed") else "FAILED"
        rows.append((a["path"], f"{a['kind']}, {a['io']} I/O", _size(a["bytes"]), _ops_text(a["ops"]), floats,
                     str(a["bn_derived_ops"]), top1, _number(a.get("snr_db")), accuracy, verdict))
        styles.append(None if a.get("passed") else "red")
    print_table(
        console, f"int8 artifacts against {evaluation.get('reference', 'the float model')} "
                 f"({evaluation.get('samples', '?')} samples of {evaluation.get('data', '?')})",
        [Column("artifact"), Column("format", ""), Column("size"), Column("ops"), Column("ops left in float"),
         Column("BN-derived ops left"), Column("top-1 agreement"), Column("SNR dB"), Column("accuracy"),
         Column("result", "")],
        rows, styles=styles,
        plain=lambda r: (f"{r[0]} ({r[1]}, {r[2]}): {r[9]}; top-1 agreement {r[6]}, SNR {r[7]} dB, accuracy {r[8]}; "
                         f"BN-derived ops left {r[5]}; ops left in float {r[4]}; ops: {r[3]}"),
    )
    places = {"input": "at the graph's float input", "output": "at the graph's float output",
              "inside": "between quantized ops"}
    for a in artifacts:
        for op in a["float_ops"]:
            if op["exact"]:
                continue
            origin = f"layer {op['layer']}" if op.get("layer") else op["name"]
            say(console, f"  {a['path']}: {op['op']} ({origin}) computes in float, {places[op['where']]}")
        exact = [op["op"] for op in a["float_ops"] if op["exact"]]
        if exact:
            kinds = ", ".join(f"{kind} {count}" for kind, count in collections.Counter(exact).items())
            say(console, f"  {a['path']}: {len(exact)} op{'s' if len(exact) != 1 else ''} run on floats but only "
                         f"move or select values, losing nothing ({kinds})")
        if a.get("bn_derived"):
            say(console, f"  {a['path']}: BN-derived quantized ops: {', '.join(a['bn_derived'])}")
        if a.get("reason"):
            say(console, f"  {a['path']}: {a['reason']}")
    if report.get("float_accuracy") is not None:
        parts = [f"float {report['float_accuracy']:.4f}"]
        parts += [f"{a['kind']} int8 {a['accuracy']:.4f}" for a in artifacts if a.get("accuracy") is not None]
        say(console, f"accuracy on {evaluation.get('samples')} labelled samples: {', '.join(parts)}")
    criteria = report.get("criteria") or {}
    if criteria:
        bars = "; ".join(f"{name}: {text}" for name, text in criteria.items())
        say(console, f"criterion: {bars}: {'passed' if report.get('passed') else 'FAILED'}")


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
        if row.first_diverging_layer:  # --locate
            line(("    ", ""), ("first diverging layer: ", "red"), row.first_diverging_layer)
    verdict = ("passed", "green") if report.passed else ("FAILED", "red")
    line(f"criterion: {report.tolerance.explain()}: ", verdict)


def print_recalibration(console, model_label: str, report: dict) -> None:
    from bnfreeze.recalibration.report import plural as _plural

    workers = f", {report['workers']} workers" if report.get("workers") else ""
    title = (f"bnfreeze recalibrate ({report['mode']}, {_plural(report['samples'], 'sample')}, "
             f"{_plural(report['passes'], 'pass')}{workers}): {model_label}")
    rows = []
    for bn in report["batch_norms"]:
        level = "-" if bn["level"] is None else str(bn["level"])
        rows.append((bn["name"], level, str(bn["calls"]), f"{bn['mean_shift_max']:.3g}", f"{bn['mean_shift_rms']:.3g}",
                     f"{bn['variance_ratio_median']:.3g}",
                     f"{bn['variance_ratio_min']:.3g}..{bn['variance_ratio_max']:.3g}"))
    print_table(console, title,
                [Column("BatchNormalization"), Column("level"), Column("calls"), Column("Δmean max/σ"),
                 Column("Δmean rms/σ"), Column("var ratio"), Column("var ratio range")], rows,
                plain=lambda r: (f"{r[0]}: level {r[1]}, {r[2]} call{'s' if r[2] != '1' else ''}, mean shift max "
                                 f"{r[3]} σ (rms {r[4]}), variance ratio {r[5]} ({r[6]})"))
    for kept in report.get("kept", []):  # every BN not recalibrated, those inside layers it cannot reach included
        say(console, f"not recalibrated: {kept['reason']}")
    for warning in report.get("warnings", []):
        say(console, f"warning: {warning['message']}")
    accuracy = report.get("accuracy")
    if accuracy:
        say(console, f"accuracy on {accuracy['data']}: before {accuracy['before']:.4f}, after {accuracy['after']:.4f}")
    if "cached_passes" in report:
        say(console, f"activations kept between passes: {report['cached_passes']} of {report['passes']} passes, "
                      f"peak {report['peak_cache_bytes'] / 2**20:.1f} MiB of {report['memory_budget'] / 2**20:.0f} MiB")
    if report.get("worker"):
        say(console, f"worker {report['worker'] + 1} of {report['workers']}: done; the chief writes the outputs")


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
        return self

    def __exit__(self, *exc):
        if self._task is not None:  # started by the first pass: an error before it prints no empty bar line
            self._progress.stop()

    def start(self, description: str, total: int | None) -> None:
        if self._task is None:
            self._progress.start()
        else:
            self._progress.update(self._task, visible=False)
        self._task = self._progress.add_task(description, total=total, rate="")

    def advance(self, samples: int) -> None:
        self._progress.advance(self._task, samples)
        speed = self._progress.tasks[-1].speed
        self._progress.update(self._task, rate=f"{speed:,.0f} samples/s" if speed else "")
