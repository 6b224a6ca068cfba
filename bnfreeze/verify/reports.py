"""Machine-readable verify reports: JSON and JUnit XML (one testcase per candidate and device)."""

from __future__ import annotations

import xml.etree.ElementTree as ET

from bnfreeze.io.files import atomic_path, to_json

SUMMARY_KEYS = ("candidate", "backend", "device", "provider", "batch_size", "max_abs", "max_rel", "mean_abs",
                "p99_abs", "top1_agreement", "passed", "skipped", "reason")


def verify_json(reports) -> dict:
    """``{"passed", "results": [...]}`` over one or several verify reports."""
    results = []
    for report in reports:
        for row in report.rows:
            entry = {key: getattr(row, key) for key in SUMMARY_KEYS}
            entry["reference"] = report.reference
            entry["outputs"] = [o.as_dict() for o in row.outputs]
            results.append(entry)
    return {"passed": all(r.passed for r in reports), "results": results}


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
            for key in ("reference", "provider", "max_abs", "max_rel"):
                value = report.reference if key == "reference" else getattr(row, key)
                ET.SubElement(props, "property", name=key, value=str(value))
            if row.skipped and not row.required:
                counts["skipped"] += 1
                ET.SubElement(case, "skipped", message=row.reason or "skipped")
            elif not row.passed:
                counts["failures"] += 1
                failure = ET.SubElement(case, "failure", message=row.reason or "mismatch", type="ParityMismatch")
                failure.text = "\n".join(
                    f"{o.name}: max_abs={o.max_abs:.3g} max_rel={o.max_rel:.3g} passed={o.passed}" for o in row.outputs
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
