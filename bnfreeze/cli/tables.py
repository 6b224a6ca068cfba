"""What each command shows: the same facts as its JSON report, never cut (:mod:`bnfreeze.cli.render`)."""

from __future__ import annotations

import collections

from bnfreeze.cli.render import Column, print_table, say


def _plural(count: int, noun: str) -> str:
    return f"{count} {noun}" if count == 1 else f"{count} {noun}s"


def _fmt(value) -> str:
    return "-" if value is None else f"{value:.3g}"


def _tolerance_note(tolerance: dict | None) -> str:
    if not tolerance:
        return ""
    dtype = f", {tolerance['dtype']} defaults" if tolerance.get("dtype") else ""
    return f" (atol {tolerance['atol']:g}, rtol {tolerance['rtol']:g}{dtype})"


def structure_rows(notes: list[dict]) -> list[tuple[str, str, str, str]]:
    """One row per note, except that traced and opaque layers of one class share a row (a KerasHub backbone
    traces hundreds of blocks): ``(layer(s), class, action, detail)``. The JSON report keeps every note."""
    rows, groups = [], collections.OrderedDict()
    for note in notes:
        if note["action"] in ("traced", "opaque"):
            groups.setdefault((note["action"], note["class"]), []).append(note)
        else:
            rows.append((note["layer"], note["class"], note["action"], note["detail"]))
    for (action, cls), members in groups.items():
        if len(members) == 1:
            rows.append((members[0]["layer"], cls, action, members[0]["detail"]))
            continue
        names = ", ".join(m["layer"] for m in members[:3]) + (", ..." if len(members) > 3 else "")
        detail = members[0]["detail"] if action == "opaque" else "each traced and checked against the layer"
        rows.append((f"{len(members)} layers ({names})", cls, action, detail if action == "traced"
                     else f"{detail} (the first; every one is in the JSON report)"))
    return rows


def print_structure(console, report: dict) -> None:
    """What the plain reading of the model did (classes read as their graph, layers traced or kept opaque,
    preprocessing layers dropped or pinned), and how the original's default call differs, where it does."""
    notes = report.get("structure") or []
    if notes:
        print_table(console, f"how bnfreeze read {report['model']}",
                    [Column("layer"), Column("class", ""), Column("action", ""), Column("detail", "")],
                    structure_rows(notes), plain=lambda row: f"{row[0]} ({row[1]}): {row[2]}: {row[3]}")
    if report.get("default_call"):
        say(console, f"default call: {report['default_call']}")


def _layers(count: int) -> str:
    return f"{count} BatchNormalization layer" + ("" if count == 1 else "s")


def _parity_runs(runs: list[dict]) -> str:
    """``5 runs: inference at x1, x10 and x100, the default call, data``: what the fold's check compared."""
    from bnfreeze.parity import READING

    scales = []
    for run in runs:
        inputs = str(run.get("inputs", ""))
        if run.get("call") == "training=False" and inputs.startswith("random x"):
            scale = inputs.split(",")[0][len("random "):]
            if scale not in scales:
                scales.append(scale)
    parts = []
    if scales:
        parts.append("inference at " + (scales[0] if len(scales) == 1 else ", ".join(scales[:-1]) + " and "
                                        + scales[-1]))
    if any(run.get("call") == "default call" for run in runs):
        parts.append("the default call")
    if any("samples" in str(run.get("inputs", "")) for run in runs):
        parts.append("data")
    if any(str(run.get("inputs", "")).endswith(READING) for run in runs):
        parts.append("each also in the float32 reading")
    return f"{len(runs)} run{'s' if len(runs) != 1 else ''}: {', '.join(parts)}"


def print_fold_report(console, report: dict) -> None:
    folded, kept, dropped = report["folded"], report["kept"], report.get("dropped", [])
    print_structure(console, report)
    rows, styles = [], []
    for entry in folded:
        result = f"folded {entry['direction']} into {entry['into']}"
        if entry.get("detail"):  # a pre-activation fold: where the scale and the shift went
            result = f"folded {entry['direction']} {entry['detail']}"
        elif entry.get("through"):
            result += f" through {', '.join(entry['through'])}"
        rows.append((entry["bn"], result, ""))
        styles.append(None)
    for entry in kept:
        rows.append((entry["bn"], "kept", entry["reason"]))
        styles.append("yellow")
    for entry in dropped:
        rows.append((entry["bn"], "dropped", entry["reason"]))
        styles.append(None)
    total = len(folded) + len(kept) + len(dropped)
    if rows:  # what happens to a BN, and (a second kind of fact) why it stays (or is not in the output)
        print_table(console, f"bnfreeze fold: {report['model']}",
                    [Column("BatchNormalization"), Column("result", ""), Column("why it stays", "")], rows,
                    styles=styles,
                    plain=lambda row: f"{row[0]}: {row[1]}" if row[1] not in ("kept", "dropped")
                    else f"{row[0]}: {row[1]}: {row[2]}")
    if total == 0:
        say(console, f"{report['model']} has no BatchNormalization layer: nothing to fold")
    elif not folded:
        say(console, "no BatchNormalization layer could be folded: "
                     + ("it stays (reason above)" if total == 1 else f"all {total} stay (reasons above)"))
    else:
        say(console, f"folded {len(folded)} of {_layers(total)}"
                     + (f"; {len(kept)} stay{'s' if len(kept) == 1 else ''} (reasons above)" if kept else "")
                     + (f"; {len(dropped)} never called, not in the output" if dropped else ""))
    parity = report.get("parity")
    if parity:
        verdict = "passed" if parity["passed"] else "FAILED"
        runs = parity.get("runs") or []
        noted = [r for r in runs if r.get("note")]
        say(console, f"parity on {parity['samples']} samples ({_parity_runs(runs)}): "
                     f"max_abs {_fmt(parity['max_abs'])}, max_rel {_fmt(parity['max_rel'])}"
                     f"{_tolerance_note(parity.get('tolerance'))}: {verdict}")
        reading = parity.get("float32_reading_tolerance")
        if reading:
            stored = reading.get("dtype")
            why = f" (the folded weights are stored in {stored})" if stored != "float32" else ""
            say(console, f"  float32 reading: the same network and stored weights computing in float32, held to "
                         f"{_tolerance_note(reading).strip(' ()')}{why}; there the fold's algebra is judged")
        elif parity.get("float32_reading_unavailable"):
            say(console, f"  no float32 reading ({parity['float32_reading_unavailable']}): every run judged in "
                         f"{(parity.get('tolerance') or {}).get('dtype') or 'its own precision'}")
        for run in noted:
            say(console, f"  {run['call']}, {run['inputs']}: {run['note']}")


def print_inspection(console, model_label: str, rows) -> None:
    structure = [r for r in rows if r.kind == "structure"]
    layers = [r for r in rows if r.kind != "structure"]
    if structure:
        notes = []
        for r in structure:  # the action reads "traced (keras_hub>MBConvBlock)"
            action, _, cls = r.action.partition(" (")
            notes.append({"layer": r.layer, "class": cls[:-1], "action": action, "detail": r.detail})
        print_table(console, f"how bnfreeze reads {model_label}",
                    [Column("layer"), Column("class", ""), Column("action", ""), Column("detail", "")],
                    structure_rows(notes), plain=lambda row: f"{row[0]}: {row[2]} ({row[1]}): {row[3]}")
    if not layers:
        say(console, f"{model_label} has no normalization layers")
        return
    # how a BN folds (its rule and the layers it crosses) and why one stays are two kinds of fact: two columns
    print_table(console, f"normalization layers of {model_label}",
                [Column("layer"), Column("kind", ""), Column("action", ""), Column("how it folds", ""),
                 Column("why it stays", "")],
                [(r.layer, r.kind, r.action, r.how, r.reason or "") for r in layers],
                plain=lambda row: f"{row[0]} ({row[1]}): {row[2]}" + (f" ({row[3]})" if row[3] else "")
                + (f": {row[4]}" if row[4] else ""))


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
                plain=lambda r: (f"{r[0]} {r[1]}: {r[5]}, max_abs {r[2]}, max_rel {r[3]}, {r[4]}, "
                                 f"{r[6]} s, BN nodes left {r[7]}"))


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
        say(console, f"cross-layer equalization: {_plural(len(equalization['pairs']), 'layer pair')} in "
                     f"{_plural(equalization['sweeps'], 'sweep')}")
    corrected = report.get("bias_correction")
    if corrected is not None:
        say(console, f"bias correction: {_plural(len(corrected['layers']), 'layer')}, on "
                     f"{_plural(corrected.get('samples', 0), 'sample')}")
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
        batch = f", batch {a['batch_size']}" if a.get("batch_size") else ""
        rows.append((a["path"], f"{a['kind']}, {a['io']} I/O{batch}", _size(a["bytes"]), _ops_text(a["ops"]), floats,
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


def _verify_line(console, *parts) -> None:
    from rich.text import Text

    console.print(Text.assemble(*parts), soft_wrap=True, highlight=False)


def print_verify_header(console, report) -> None:
    """``bnfreeze verify: REFERENCE (backend) on N samples from DATA``: printed before the comparison runs."""
    quantized = f", {report.reference_quantization}" if report.reference_quantization else ""
    data = str(report.data)
    if "random sample" not in data:
        data = f"{report.samples} sample{'s' if report.samples != 1 else ''} from {data}"
    _verify_line(console, ("bnfreeze verify: ", "bold"),
                 f"{report.reference} ({report.reference_backend}{quantized}) on {data}")


def print_verify(console, report, header: bool = True) -> None:
    """The header (unless already printed), then one block per candidate and device: a verdict line, then
    one line per output.

    Plain lines written with ``soft_wrap`` (rich neither cuts nor folds them),
    so paths and numbers survive any terminal width and a pipe (no terminal:
    each line whole, no colour).
    """
    def line(*parts):
        _verify_line(console, *parts)

    if header:
        print_verify_header(console, report)
    for row in report.rows:
        if row.skipped:
            verdict = ("FAILED ", "red") if row.required else ("skipped", "yellow")
            line(verdict, f"  {row.candidate}  {row.backend}/{row.device}: {row.reason}")
            continue
        verdict = ("passed ", "green") if row.passed else ("FAILED ", "red")
        quantization = f"  quantized: {row.quantization}" if row.quantization else ""
        bounds = ""
        if row.tolerance is not None and row.tolerance.explain() != report.tolerance.explain():
            bounds = f"; {row.tolerance.explain()}"  # this runtime's own defaults
        line(verdict, f"  {row.candidate}  {row.backend}/{row.device} ({row.provider}), batch {row.batch_size}"
                      f"{quantization}{bounds}")
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
    held = {row.tolerance.explain() for row in report.rows if row.tolerance is not None and not row.skipped}
    if held and held != {report.tolerance.explain()}:
        criterion = f"each candidate within the bounds of its runtime, on its line ({report.tolerance.check})"
    else:
        criterion = report.tolerance.explain()
    line(f"criterion: {criterion}: ", verdict)


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
    if report.get("structure"):
        print_structure(console, {**report, "model": model_label})
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
    """A progress bar with samples per second on a terminal (:func:`make_progress`)."""

    def __init__(self, console):
        from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn

        self._progress = Progress(
            TextColumn("{task.description}"), BarColumn(bar_width=20), TextColumn("{task.fields[count]}"),
            TextColumn("{task.fields[rate]}"), TimeElapsedColumn(), console=console, transient=False,
        )
        self._task = None

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        if self._task is not None:  # started by the first step: an error before it prints no empty bar line
            if self._progress.tasks[-1].total is None:  # a step (loading, exporting) leaves no bar behind
                self._progress.update(self._task, visible=False)
            self._progress.stop()

    def start(self, description: str, total: int | None) -> None:
        """A new step (``total`` samples, or None: a step that is not counted, such as loading a model)."""
        if self._task is None:
            self._progress.start()
        else:
            self._progress.update(self._task, visible=False)
        self._task = self._progress.add_task(description, total=total, rate="",
                                             count=f"0/{total}" if total is not None else "")

    def advance(self, samples: int) -> None:
        self._progress.advance(self._task, samples)
        task = self._progress.tasks[-1]
        self._progress.update(self._task, rate=f"{task.speed:,.0f} samples/s" if task.speed else "",
                              count=f"{task.completed:.0f}/{task.total:.0f}" if task.total is not None
                              else f"{task.completed:.0f}")


class LineProgress:
    """Progress in a log (no terminal): a line when a step starts, one every ``interval`` seconds while it
    runs, and one when its samples are done. A bar redrawn in place would leave every frame in a log (or,
    as rich does off a terminal, nothing until the end); these lines arrive as the work goes."""

    def __init__(self, console, interval: float = 10.0, clock=None):
        import time

        self._console, self._interval, self._clock = console, interval, clock or time.monotonic
        self._description: str | None = None

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        if exc[0] is None:
            self._finish()
        self._description = None

    def start(self, description: str, total: int | None) -> None:
        self._finish()
        self._description, self._total, self._done = description, total, 0
        self._started = self._last = self._clock()
        self._said_done = False
        say(self._console, f"{description}: 0/{total} samples" if total else f"{description} ...")

    def advance(self, samples: int) -> None:
        if self._description is None:
            return
        self._done += samples
        now = self._clock()
        if self._total and self._done >= self._total:
            self._line(now)
            self._said_done = True
        elif now - self._last >= self._interval:
            self._line(now)

    def _line(self, now: float) -> None:
        elapsed = now - self._started
        rate = f", {self._done / elapsed:,.0f} samples/s" if elapsed > 0 else ""
        total = f"/{self._total}" if self._total else ""
        say(self._console, f"{self._description}: {self._done}{total} samples{rate}, {elapsed:.1f} s")
        self._last = now

    def _finish(self) -> None:
        if self._description is not None and self._done and not self._said_done:
            self._line(self._clock())
        self._description = None


def make_progress(console):
    """A bar on a terminal, lines in a pipe or CI log (:class:`LineProgress`)."""
    return RichProgress(console) if console.is_terminal else LineProgress(console)
