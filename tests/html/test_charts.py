"""The report's charts on synthetic BN statistics (no TensorFlow): names, ticks, tolerance, layout.

A page with 120 BNs (long and nested names, near-zero variances, negative scales) is read as SVG
text and, where Chromium is installed, laid out and measured: no two labels may overlap.
"""

import math
import re
from dataclasses import dataclass

import numpy as np
import pytest

from chartcheck import CHROME_FLAGS, POWER, SUPERSCRIPT, charts, chromium_path, measure, outside, overlaps, texts, \
    tick_rows, value

from bnfreeze.html import charts as chart_module
from bnfreeze.html.page import (BnFacts, Matching, ParityFacts, compare_warning, describe_data, match_bns, name_list,
                                render)

BLUE, RED = chart_module.BLUE, chart_module.RED


@dataclass
class Row:  # the fields of bnfreeze.fold.inspection.NormalizationRow that the page reads
    layer: str
    kind: str
    action: str
    how: str
    reason: str | None = None


def _names(count: int) -> list[str]:
    names = [f"stage_{i // 12}_block_{i % 12}_{('expand', 'depthwise', 'project')[i % 3]}_BN" for i in range(count - 2)]
    return names + ["backbone/encoder/stage_9/block_11/squeeze_excite_BN", "head_bn"]


def _facts(names, seed=0) -> list[BnFacts]:
    rng = np.random.default_rng(seed)
    facts = []
    for i, name in enumerate(names):
        channels = int(rng.integers(8, 96))
        gamma = rng.uniform(0.5, 1.5, channels) * np.where(rng.random(channels) < 0.3, -1, 1)
        variance = rng.uniform(0.05, 3.0, channels)
        if i % 17 == 3:
            variance[0] = 1e-7  # near zero: a scale of ~1/sqrt(eps), an outlier of the scale histogram
        facts.append(BnFacts(name, 1e-3, gamma, rng.normal(0, 0.5, channels), rng.normal(0, 0.5, channels), variance))
    return facts


def _recalibrated(facts, seed=1) -> list[BnFacts]:
    rng = np.random.default_rng(seed)
    return [BnFacts(f.name, f.epsilon, f.gamma, f.beta, f.mean + rng.normal(0, 0.3, f.mean.shape),
                    f.variance * rng.uniform(0.5, 2.0, f.variance.shape)) for f in facts]


def _parity(max_abs=3e-7, peak=12.0) -> ParityFacts:
    rng = np.random.default_rng(1)
    errors = np.concatenate([10.0 ** rng.uniform(-12, math.log10(max_abs), 4000), np.zeros(100)])
    return ParityFacts(errors, float(errors.max()), float(errors.max()) / peak, 8, describe_data(8, seed=0),
                       1e-5, 1e-4, peak, True, "float32")


def _page(count=120, compared=True, parity=None) -> tuple[str, list[str]]:
    names = _names(count)
    facts = _facts(names)
    rows = [Row(n, "batch", f"fold backward into conv_{i}", "rule conv-backward") for i, n in enumerate(names)]
    page = render("synthetic.keras", rows, facts, parity or _parity(), "recal.keras" if compared else None,
                  _recalibrated(facts) if compared else None)
    return page, names


@pytest.fixture(scope="module")
def big_page():
    return _page()


def test_every_bn_name_is_on_the_per_bn_charts(big_page):
    page, names = big_page
    found = charts(page)
    assert set(found) == {"scale-histogram", "min-variance", "recalibration", "parity-histogram"}
    for kind in ("min-variance", "recalibration"):
        labels = [t.text for t in texts(found[kind])]
        for name in names:
            shown = chart_module.short_name(name)
            assert shown in labels, (kind, name)
        assert "hover" not in " ".join(labels)
    long_name = names[-2]
    assert len(long_name) > chart_module.NAME_CHARS and "…" in chart_module.short_name(long_name)
    assert long_name in page  # whole in the table


def _check_ticks(svg, where):
    rows = tick_rows(svg)
    assert rows, f"{where}: no tick labels"
    for row in rows:
        labels = [t.text for t in row]
        values = [value(label) for label in labels]
        assert len(values) >= 2, (where, labels)
        if all(POWER.fullmatch(label) for label in labels):
            exponents = [round(math.log10(v)) for v in values]
            steps = set(np.diff(exponents))
            assert len(steps) == 1 and steps.pop() > 0, (where, labels)  # 10ⁿ, evenly spaced decades
        else:
            steps = np.diff(values)
            assert np.allclose(steps, steps[0], rtol=1e-6) and steps[0] > 0, (where, labels)
            mantissa = steps[0] / 10.0 ** math.floor(math.log10(steps[0]) + 1e-9)
            assert round(mantissa, 6) in (1.0, 2.0, 5.0), (where, labels)  # a 1-2-5 step
            assert all(abs(v / steps[0] - round(v / steps[0])) < 1e-6 for v in values), (where, labels)
            assert len(set(labels)) == len(labels), (where, labels)  # enough decimals to tell them apart
        positions = [t.x for t in row] if row[0].anchor == "middle" else [t.y for t in row]
        gaps = np.abs(np.diff(positions))
        if not all(POWER.fullmatch(label) for label in labels):
            assert np.allclose(gaps, gaps[0], atol=0.05), (where, labels)  # linear axis: evenly placed


def test_ticks_are_1_2_5_or_powers_of_ten(big_page):
    page, _ = big_page
    for kind, svg in charts(page).items():
        _check_ticks(svg, kind)
    labels = " ".join(t.text for svg in charts(page).values() for t in texts(svg))
    assert not re.search(r"1e-?\d+\.\d", labels)  # no "1e-32.9"


@pytest.mark.parametrize("scale", [1e-7, 3e-3, 1.0, 4e2, 6e7])
def test_ticks_stay_nice_at_any_magnitude(scale):
    rng = np.random.default_rng(2)
    values = rng.normal(1.0, 0.37, 500) * scale
    svg = charts(chart_module.scale_histogram(values))["scale-histogram"]
    _check_ticks(svg, f"scale {scale}")
    shifts = rng.uniform(0, 1, 5) * scale
    svg = charts(chart_module.recalibration_bars(list("abcde"), shifts, rng.uniform(0.5, 2, 5)))["recalibration"]
    _check_ticks(svg, f"shift {scale}")


def _bars(svg, colour):
    """(x0, x1) of every bar (a filled rectangle clipped to the axes, unlike the legend's) in ``colour``."""
    out = []
    for node in svg.iter("{http://www.w3.org/2000/svg}path"):
        if f"fill: {colour}" in node.get("style", "") and node.get("clip-path"):
            xs = [float(x) for x in re.findall(r"[ML] (-?[\d.]+) ", node.get("d"))]
            out.append((min(xs), max(xs)))
    return out


def _tick_x(svg, label):
    found = [t.x for t in texts(svg) if t.text == label and t.anchor == "middle"]
    assert found, label
    return found[0]


def test_negative_scales_are_red_and_only_they(big_page):
    page, _ = big_page
    svg = charts(page)["scale-histogram"]
    zero = _tick_x(svg, "0")
    red, blue = _bars(svg, RED), _bars(svg, BLUE)
    assert red and blue
    assert all(x1 <= zero + 0.01 for _, x1 in red)
    assert all(x0 >= zero - 0.01 for x0, _ in blue)


def _vertical_lines(svg, colour):
    xs = []
    for node in svg.iter("{http://www.w3.org/2000/svg}path"):
        style = node.get("style", "")
        points = re.findall(r"[ML] (-?[\d.]+) (-?[\d.]+)", node.get("d", ""))
        if f"stroke: {colour}" in style and len(points) == 2:
            (x0, y0), (x1, y1) = [(float(a), float(b)) for a, b in points]
            if abs(x0 - x1) < 0.01 and abs(y0 - y1) > 20:
                xs.append(x0)
    return xs


def _log_position(svg, target):
    """x of ``target`` on the chart's log axis, from two of its 10ⁿ tick labels."""
    decades = [(round(math.log10(value(t.text))), t.x) for t in texts(svg)
               if POWER.fullmatch(t.text) and t.anchor == "middle"]
    (e0, x0), (e1, x1) = decades[0], decades[-1]
    return x0 + (x1 - x0) * (math.log10(target) - e0) / (e1 - e0)


def test_parity_histogram_marks_the_tolerance(big_page):
    page, _ = big_page
    svg = charts(page)["parity-histogram"]
    labels = [t.text for t in texts(svg)]
    assert "atol 1e-05" in labels
    assert any(label.startswith("rtol 0.0001 × largest |output| 12") for label in labels)
    atol_lines = _vertical_lines(svg, RED)
    assert len(atol_lines) == 1 and atol_lines[0] == pytest.approx(_log_position(svg, 1e-5), abs=0.5)
    rtol_lines = _vertical_lines(svg, chart_module.ORANGE)
    assert len(rtol_lines) == 1 and rtol_lines[0] == pytest.approx(_log_position(svg, 1.2e-3), abs=0.5)
    assert "passes" in page and "8 random samples (seed 0)" in page


def test_errors_beyond_the_tolerance_are_red():
    svg = charts(chart_module.error_histogram(10.0 ** np.linspace(-9, -3, 200), 1e-5, 1e-4, 1.0))["parity-histogram"]
    limit = _log_position(svg, 1e-4)  # rtol x peak = 1e-4 > atol
    red, blue = _bars(svg, RED), _bars(svg, BLUE)
    assert red and blue
    assert all(x0 >= limit - 0.01 for x0, _ in red) and all(x1 <= limit + 0.01 for _, x1 in blue)
    assert "beyond tolerance" in [t.text for t in texts(svg)]


def test_identical_outputs_still_show_the_tolerance():
    svg = charts(chart_module.error_histogram(np.zeros(50), 1e-5, 1e-4, 2.0))["parity-histogram"]
    assert "every output element is identical (|error| = 0)" in [t.text for t in texts(svg)]
    assert len(_vertical_lines(svg, RED)) == 1


def test_page_is_deterministic_self_contained_and_small(big_page):
    page, names = big_page
    assert _page()[0] == page  # two runs, the same bytes
    ids = re.findall(r'\sid="([^"]+)"', page)
    assert len(ids) == len(set(ids))  # four inline SVGs in one document: no id used twice
    for ref in re.findall(r'href="([^"]*)"', page):
        assert ref.startswith("#"), ref
    assert "<script" not in page and "url(http" not in page and "@font-face" not in page
    assert "DejaVuSans-" not in page  # text is text, not embedded glyph paths
    assert "<?xml" not in page and "<metadata" not in page
    assert len(page) < 700_000, len(page)  # 120 BNs, tables included


def test_describe_data_reads_naturally():
    assert describe_data(8, seed=0) == "8 random samples (seed 0)"
    assert describe_data(1, seed=3) == "1 random sample (seed 3)"
    assert describe_data(123, "data.npy") == "123 samples from data.npy"
    assert describe_data(1, "one.npz") == "1 sample from one.npz"


def test_compare_warning_names_the_expected_bns():
    facts = _facts(["bn1", "bn2", "bn3"])
    other = _facts(["conv_bn_a", "conv_bn_b"])
    none_shared = compare_warning("m.keras", "other.keras", match_bns(facts, other))
    assert "shares no BatchNormalization name with m.keras" in none_shared
    assert "expected bn1, bn2 and bn3" in none_shared and "conv_bn_a and conv_bn_b" in none_shared
    partial = compare_warning("m.keras", "r.keras", match_bns(facts, facts[:2]))
    assert "lacks 1 of the 3" in partial and "(bn3)" in partial
    assert compare_warning("m.keras", "r.keras", match_bns(facts, facts)) is None
    assert compare_warning("m.keras", "r.keras", Matching([], ["bn1"], [])).endswith(
        "it has no BatchNormalization layer (--compare takes a recalibrated copy of the model)")
    resized = _recalibrated(facts)
    resized[1] = _facts(["bn2"], seed=5)[0]
    assert resized[1].mean.shape != facts[1].mean.shape
    warning = compare_warning("m.keras", "r.keras", match_bns(facts, resized))
    assert "has 1 with another number of channels (bn2)" in warning and "only the 2 of the 3" in warning
    assert name_list([f"b{i}" for i in range(12)]) == "b0, b1, b2, b3, b4, b5, b6, b7 and 4 more"


def test_page_with_no_shared_names_says_so_without_an_empty_chart():
    names = ["bn1", "bn2", "bn3"]
    page = render("m.keras", [], _facts(names), _parity(), "other.keras", _facts(["x_bn"]))
    assert "Warning: other.keras shares no BatchNormalization name with m.keras: expected bn1, bn2 and bn3" in page
    assert "recalibration" not in charts(page)


@pytest.mark.parametrize("count", [3, 120])
def test_no_label_overlaps_in_chromium(count, tmp_path):
    page, names = _page(count)
    path = tmp_path / "page.html"
    path.write_text(page)
    measured = measure(path, tmp_path, width=1400)
    assert {c["chart"] for c in measured} == {"scale-histogram", "min-variance", "recalibration", "parity-histogram"}
    for chart in measured:
        assert chart["right"] - chart["left"] >= 1000, chart["chart"]  # as wide as the page, not 640 px
        assert overlaps(chart["texts"]) == [], chart["chart"]
        assert outside(chart) == [], chart["chart"]
        assert all(t["bottom"] - t["top"] >= 11 for t in chart["texts"]), chart["chart"]  # readable size
    bars = next(c for c in measured if c["chart"] == "min-variance")
    rows = sorted(t["top"] for t in bars["texts"] if t["text"] in {chart_module.short_name(n) for n in names})
    assert len(rows) == count and min(np.diff(rows)) >= 14  # one readable row per BN


def test_screenshot_of_many_bns_has_names_beside_bars(tmp_path):
    """A picture, not only the DOM: red bars for the near-zero BNs, blue for the others, down a tall chart."""
    import subprocess

    from PIL import Image

    names = _names(120)
    page = render("synthetic.keras", [], _facts(names), None)
    path = tmp_path / "page.html"
    path.write_text(page)
    shot = tmp_path / "shot.png"
    proc = subprocess.run([chromium_path(), *CHROME_FLAGS, f"--screenshot={shot}", "--window-size=1400,4200",
                           path.as_uri()], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0 and shot.exists(), proc.stderr[-2000:]
    pixels = np.asarray(Image.open(shot).convert("RGB")).astype(int)

    def near(colour):
        rgb = [int(colour[i:i + 2], 16) for i in (1, 3, 5)]
        return np.all(np.abs(pixels - rgb) < 12, axis=-1)

    blue_rows = np.nonzero(near(BLUE).sum(axis=1) > 200)[0]  # long horizontal bars
    red_rows = np.nonzero(near(RED).sum(axis=1) > 20)[0]
    assert blue_rows.max() - blue_rows.min() > 1500  # 120 rows, not squeezed into 260 px
    assert red_rows.size > 0
    dark = np.all(pixels < 90, axis=-1)
    left_of_bars = dark[blue_rows.min():blue_rows.max(), :300]
    assert left_of_bars.sum() > 5000  # the names, beside the bars


def _bar_heights(svg, colour):
    """The height (in SVG units) of every bar in ``colour``."""
    out = []
    for node in svg.iter("{http://www.w3.org/2000/svg}path"):
        if f"fill: {colour}" in node.get("style", "") and node.get("clip-path"):
            ys = [float(y) for y in re.findall(r"[ML] -?[\d.]+ (-?[\d.]+)", node.get("d"))]
            out.append(max(ys) - min(ys))
    return out


def test_a_few_negative_scales_among_many_are_visible():
    """2 negative channels among 736 (the case the chart is for): on a linear count axis a bar of 1 next to
    bars of ~100 is a pixel; here it is a bar a reader sees, and each is marked under the bars too."""
    rng = np.random.default_rng(3)
    scales = np.concatenate([rng.normal(1.0, 0.25, 734), [-0.4, -0.9]])
    svg = charts(chart_module.scale_histogram(scales))["scale-histogram"]
    red, blue = _bar_heights(svg, RED), _bar_heights(svg, BLUE)
    assert len([h for h in red if h > 0]) == 2 and max(blue) > 0
    assert min(h for h in red if h > 0) >= 0.1 * max(blue)  # linear: about 1/90 of the tallest
    labels = [t.text for t in texts(svg)]
    assert "negative: 2 channels" in labels and "positive or zero: 734 channels" in labels
    import xml.etree.ElementTree as ET

    assert f"stroke: {RED}" in ET.tostring(svg, encoding="unicode")  # the rug: a red mark per negative channel


def test_the_parity_histogram_spans_the_decades_around_the_tolerance():
    """A softmax model's errors reach 1e-44 (its tail is all but zero): the axis starts a few decades below
    the tolerance, and the smaller errors are counted in the legend, not drawn."""
    rng = np.random.default_rng(4)
    errors = np.concatenate([10.0 ** rng.uniform(-44, -30, 300), 10.0 ** rng.uniform(-9, -6.5, 700)])
    svg = charts(chart_module.error_histogram(errors, 1e-5, 1e-4, 1.0))["parity-histogram"]
    ticks = [value(t.text) for t in texts(svg) if POWER.fullmatch(t.text)]
    assert min(ticks) >= 1e-10 and max(ticks) <= 1e-2, ticks
    assert min(ticks) <= 1e-9  # the errors that are there (1e-9 and up) are on the axis
    labels = " ".join(t.text for t in texts(svg))
    assert "300 smaller errors (down to " in labels and "not drawn" in labels
    assert sum(_bar_heights(svg, BLUE)) > 0


def test_wording_counts_and_pooling(big_page):
    page, _ = big_page
    assert "cannot be moved forward through this model's max pooling" not in page  # no max pooling here
    assert "This model has no max pooling" in page
    names = _names(3)
    facts = _facts(names)
    one = render("one.keras", [Row(names[0], "batch", "keep", "", "it feeds an Add")], facts[:1], _parity(),
                 "recal.keras", _recalibrated(facts[:1]), max_pooling=True)
    assert "1 BN matched by name" in one and "1 BNs" not in one and "1 normalization layers" not in one
    assert "max pooling does not commute with a negative scale" in one
    assert "<th>how it folds (rule, layers crossed)</th><th>why it stays</th>" in one
    assert "<td>it feeds an Add</td>" in one
