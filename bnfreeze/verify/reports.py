"""Machine-readable verify reports: JSON and JUnit XML.

The JSON has one summary row per candidate, device, batch size and output
(``samples`` compared, ``worst_sample`` an index into the data), plus one row
for a candidate/device that was skipped. Non-finite numbers are written as
the strings ``"inf"``, ``"-inf"`` and ``"nan"``, so the file stays strict
JSON (``snr_db`` is ``"inf"`` for identical outputs).

JUnit has one testcase per candidate and device, with a ``<failure>`` naming
the failing outputs.
"""

from __future__ import annotations

import math
import xml.etree.ElementTree as ET

from bnfreeze.io.files import atomic_path, to_json

#: keys of every JSON row, in order
ROW_KEYS = ("reference", "candidate", "backend", "device", "provider", "quantization", "batch_size", "output",
            "candidate_output", "samples", "worst_sample", "max_abs", "max_rel", "mean_abs", "p99_abs",
            "top1_agreement", "snr_db", "cosine", "finite", "passed", "skipped", "reason", "first_diverging_layer",
            "criteria")
_STATS = ("max_abs", "max_rel", "mean_abs", "p99_abs", "top1_agreement", "snr_db", "cosine", "samples",
          "worst_sample", "finite", "passed")


def _strict(value):
    if isinstance(value, float) and not math.isfinite(value):
        return "nan" if math.isnan(value) else ("inf" if value > 0 else "-inf")
    if isinstance(value, dict):
        return {k: _strict(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_strict(v) for v in value]
    return value


def verify_rows(report) -> list[dict]:
    """The JSON rows of one report (see the module doc)."""
    rows = []
    base_criteria = report.tolerance.as_dict()
    for row in report.rows:
        base = {key: None for key in ROW_KEYS}
        base.update(reference=report.reference, candidate=row.candidate, backend=row.backend, device=row.device,
                    provider=row.provider, quantization=row.quantization, batch_size=row.batch_size,
                    skipped=row.skipped,
                    criteria=row.tolerance.as_dict() if row.tolerance is not None else base_criteria)
        if row.skipped:
            # not run: failed only where it was required (--require-gpu), otherwise neither passed nor failed
            base.update(passed=False if row.required else None, reason=row.reason, samples=0)
            rows.append(base)
            continue
        for output in row.outputs:
            entry = dict(base)
            entry.update({key: getattr(output, key) for key in _STATS})
            entry["output"] = output.name
            entry["candidate_output"] = row.output_names.get(output.name, output.name)
            entry["reason"] = output.reason
            if row.first_diverging_layer and not output.passed:
                entry["first_diverging_layer"] = row.first_diverging_layer
                entry["reason"] = f"{output.reason}; first diverging layer: {row.first_diverging_layer}"
            rows.append(entry)
    return rows


def verify_json(reports) -> dict:
    """``{"passed", "results": [...]}`` over one or several verify reports."""
    results = [entry for report in reports for entry in verify_rows(report)]
    return _strict({"passed": all(r.passed for r in reports), "results": results})


def junit_xml(reports) -> str:
    suite = ET.Element("testsuite", name="bnfreeze.verify")
    counts = {"tests": 0, "failures": 0, "skipped": 0}
    for report in reports:
        for row in report.rows:
            counts["tests"] += 1
            case = ET.SubElement(
                suite, "testcase",
                classname=f"bnfreeze.verify.{row.backend}",
                name=f"{row.candidate} [{row.backend}/{row.device}, batch {row.batch_size}]",
            )
            props = ET.SubElement(case, "properties")
            values = {"reference": report.reference, "provider": row.provider, "quantization": row.quantization,
                      "criteria": (row.tolerance or report.tolerance).explain(), "samples": row.samples,
                      "max_abs": row.max_abs,
                      "max_rel": row.max_rel, "top1_agreement": row.top1_agreement, "snr_db": row.snr_db,
                      "cosine": row.cosine}
            for key, value in values.items():
                if value is not None:  # a float row has no quantization, a skipped one no figures
                    ET.SubElement(props, "property", name=key, value=str(value))
            if row.skipped and not row.required:
                counts["skipped"] += 1
                ET.SubElement(case, "skipped", message=row.reason or "skipped")
            elif not row.passed:
                counts["failures"] += 1
                failure = ET.SubElement(case, "failure", message=row.reason or "mismatch", type="ParityMismatch")
                failure.text = "\n".join(
                    f"{o.name}: max_abs={o.max_abs:.3g} max_rel={o.max_rel:.3g} "
                    f"top1={'-' if o.top1_agreement is None else f'{o.top1_agreement:.4f}'} "
                    f"snr_db={'-' if o.snr_db is None else f'{o.snr_db:.3g}'} worst_sample={o.worst_sample} "
                    f"passed={o.passed}" + (f" ({o.reason})" if o.reason else "")
                    for o in row.outputs
                ) or (row.reason or "")
    for key, value in counts.items():
        suite.set(key, str(value))
    suite.set("errors", "0")
    return ET.tostring(suite, encoding="unicode", xml_declaration=True) + "\n"


def write_text(text: str, path, *, force: bool = True) -> None:
    with atomic_path(path, force=force) as tmp:
        tmp.write_text(text)


def write_verify_json(reports, path, *, force: bool = True) -> None:
    write_text(to_json(verify_json(reports)), path, force=force)


def write_junit(reports, path, *, force: bool = True) -> None:
    write_text(junit_xml(reports), path, force=force)
