"""Helpers for the report's tests: read the charts' SVG text, and measure a page in headless Chromium.

The measurement adds a small script to a *copy* of the page (the page itself has none), lets
Chromium lay it out, and reads back every chart's box and every SVG text's box from the DOM.
"""

import json
import os
import re
import shutil
import subprocess
import xml.etree.ElementTree as ET
from dataclasses import dataclass

import pytest

SVG = "{http://www.w3.org/2000/svg}"
SUPERSCRIPT = str.maketrans("⁻⁰¹²³⁴⁵⁶⁷⁸⁹−", "-0123456789-")
POWER = re.compile(r"10([⁻]?[⁰¹²³⁴⁵⁶⁷⁸⁹]+)")
NUMBER = re.compile(r"−?\d+(\.\d+)?(×10[⁻]?[⁰¹²³⁴⁵⁶⁷⁸⁹]+)?")


@dataclass
class Text:
    text: str
    x: float
    y: float
    anchor: str


def charts(page: str) -> dict[str, ET.Element]:
    """Every chart of a page by its kind (``data-chart``), parsed as XML."""
    found = {}
    for svg in re.findall(r"<svg.*?</svg>", page, re.S):
        root = ET.fromstring(svg)
        found[root.get("data-chart")] = root
    return found


def texts(svg: ET.Element) -> list[Text]:
    out = []
    for node in svg.iter(f"{SVG}text"):
        style = node.get("style", "")
        anchor = re.search(r"text-anchor: (\w+)", style)
        out.append(Text("".join(node.itertext()), float(node.get("x", 0)), float(node.get("y", 0)),
                        anchor.group(1) if anchor else "start"))
    return out


def value(label: str) -> float:
    """The number a tick label shows: ``0.5``, ``−2``, ``3×10⁻⁵``, ``10⁻⁴``."""
    power = POWER.fullmatch(label)
    if power:
        return 10.0 ** int(power.group(1).translate(SUPERSCRIPT))
    if "×" in label:
        mantissa, power = label.split("×")
        return float(mantissa.replace("−", "-")) * value(power)
    return float(label.replace("−", "-"))


def tick_rows(svg: ET.Element) -> list[list[Text]]:
    """The tick labels of each axis: numeric texts sharing a baseline (x axes) or a right edge (y axes)."""
    numeric = [t for t in texts(svg) if NUMBER.fullmatch(t.text) or POWER.fullmatch(t.text)]
    rows = {}
    for t in numeric:
        kind = bool(POWER.fullmatch(t.text))  # two panels side by side: a linear and a log x axis
        key = ("x", round(t.y, 1), kind) if t.anchor == "middle" else ("y", round(t.x, 1), kind)
        rows.setdefault(key, []).append(t)
    return [sorted(r, key=lambda t: t.x if key[0] == "x" else -t.y) for key, r in rows.items() if len(r) >= 2]


def chromium_path() -> str:
    for name in ("chromium", "chromium-browser", "google-chrome"):
        if shutil.which(name):
            return shutil.which(name)
    if os.environ.get("BNFREEZE_REQUIRE_CHROMIUM"):
        pytest.fail("BNFREEZE_REQUIRE_CHROMIUM is set but no chromium is installed")
    pytest.skip("headless Chromium not installed (.ci/run installs Debian's chromium)")


CHROME_FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--hide-scrollbars"]

MEASURE = """<script>
const out = [];
for (const svg of document.querySelectorAll("svg.chart")) {
  const box = svg.getBoundingClientRect();
  const texts = [];
  for (const t of svg.querySelectorAll("text")) {
    const r = t.getBoundingClientRect();
    texts.push({text: t.textContent, left: r.left, top: r.top, right: r.right, bottom: r.bottom});
  }
  out.push({chart: svg.dataset.chart, left: box.left, top: box.top, right: box.right, bottom: box.bottom, texts});
}
const pre = document.createElement("pre");
pre.id = "measured";
pre.textContent = JSON.stringify(out);
document.body.appendChild(pre);
</script>"""


def measure(page_path, tmp_path, width: int = 1400) -> list[dict]:
    """Lay the page out in headless Chromium at ``width`` px; every chart's box and its texts' boxes."""
    chromium = chromium_path()
    copy = tmp_path / f"measure-{width}.html"
    copy.write_text(page_path.read_text().replace("</body>", MEASURE + "</body>"))
    dom = subprocess.run([chromium, *CHROME_FLAGS, f"--window-size={width},1000", "--dump-dom", copy.as_uri()],
                         capture_output=True, text=True, timeout=120)
    assert dom.returncode == 0, dom.stderr[-2000:]
    found = re.search(r'<pre id="measured">(.*?)</pre>', dom.stdout, re.S)
    assert found, dom.stdout[-2000:]
    import html

    return json.loads(html.unescape(found.group(1)))


def overlaps(texts: list[dict], slack: float = 0.5) -> list[tuple[str, str]]:
    """Pairs of texts whose boxes intersect by more than ``slack`` px each way."""
    pairs = []
    boxes = sorted((t for t in texts if t["right"] - t["left"] > 0), key=lambda t: t["left"])
    for i, a in enumerate(boxes):
        for b in boxes[i + 1:]:
            if b["left"] >= a["right"] - slack:
                break
            if min(a["bottom"], b["bottom"]) - max(a["top"], b["top"]) > slack:
                pairs.append((a["text"], b["text"]))
    return pairs


def outside(chart: dict, slack: float = 1.0) -> list[str]:
    """Texts that stick out of their chart (cut off by the page or the SVG's edge)."""
    return [t["text"] for t in chart["texts"]
            if t["left"] < chart["left"] - slack or t["right"] > chart["right"] + slack
            or t["top"] < chart["top"] - slack or t["bottom"] > chart["bottom"] + slack]
