"""The report's charts, drawn by matplotlib (Agg/SVG only) and embedded as inline SVG.

Every chart is a :class:`matplotlib.figure.Figure` built without pyplot (no global
state), saved as SVG with text kept as text (``svg.fonttype: none``: small, and
searchable), no date and a fixed hash salt per chart so that two reports of the
same model are byte-identical and the ids of two charts on one page differ.

Axes follow one rule: linear axes have ticks at multiples of 1, 2 or 5 x 10^k
(:class:`NiceFormatter` prints them with the decimals the step needs), log axes
have ticks at powers of ten printed as 10ⁿ and span whole decades. Per-BN charts
are horizontal bars with the BN names as tick labels, one row per BN, so a list
of 120 BNs grows the chart instead of crowding its labels.

matplotlib is imported inside the functions: ``bnfreeze --help`` never loads it.
"""

from __future__ import annotations

import io
import math
import re
from html import escape

import numpy as np

BLUE, RED, ORANGE, GREY = "#3b6ea8", "#c0392b", "#d68910", "#555555"
#: Figure width: 11 in at 96 px/in, the page's content width; the SVG scales down on narrow windows.
WIDTH_IN = 11.0
#: One horizontal bar per this many inches; with 9 pt names the labels keep 3 pt apart.
ROW_IN = 0.19
NAME_CHARS = 48  # longer BN names are shortened in the middle on the charts (the tables keep them whole)

_SUPERSCRIPT = str.maketrans("-0123456789", "⁻⁰¹²³⁴⁵⁶⁷⁸⁹")

RC = {
    "svg.fonttype": "none",
    "font.family": "sans-serif",
    "font.sans-serif": ["DejaVu Sans", "Arial", "Helvetica"],
    "font.size": 10,
    "figure.titlesize": 11,
    "figure.titleweight": "bold",
    "axes.labelsize": 10,
    "xtick.labelsize": 9,
    "ytick.labelsize": 9,
    "legend.fontsize": 9,
    "legend.frameon": False,
    "axes.spines.top": False,
    "axes.spines.right": False,
    "axes.axisbelow": True,
    "axes.grid": True,
    "grid.color": "#e4e4e4",
    "grid.linewidth": 0.8,
    "path.simplify": True,
}


def power_of_ten(exponent: int) -> str:
    """``10⁻⁵``: a log axis tick label, as plain text with Unicode superscripts."""
    return "10" + str(int(exponent)).translate(_SUPERSCRIPT)


def short_name(name: str, limit: int = NAME_CHARS) -> str:
    if len(name) <= limit:
        return name
    keep = limit - 1
    return name[: keep - keep // 2] + "…" + name[len(name) - keep // 2:]


def _formatters():
    from matplotlib.ticker import Formatter

    class NiceFormatter(Formatter):
        """Labels for 1-2-5 ticks: every label with the decimals the step needs, no offset text."""

        def __init__(self):
            self.decimals, self.scale_exp = 0, None

        def set_locs(self, locs):
            super().set_locs(locs)
            locs = np.asarray(locs, np.float64)
            step = float(np.min(np.diff(locs))) if locs.size > 1 else (abs(float(locs[0])) if locs.size else 1.0)
            step = step or 1.0
            top = float(np.max(np.abs(locs))) if locs.size else 1.0
            step_exp = math.floor(math.log10(step) + 1e-9)
            if step_exp < -4 or top >= 1e6:
                self.scale_exp = step_exp  # tiny or huge: "3×10⁻⁵"
            else:
                self.scale_exp, self.decimals = None, max(0, -step_exp)

        def __call__(self, x, pos=None):
            if self.scale_exp is None:
                text = f"{x:.{self.decimals}f}"
                return "0" if float(text) == 0 else text.replace("-", "−")
            mantissa = round(x / 10.0 ** self.scale_exp)
            return "0" if mantissa == 0 else f"{mantissa}×{power_of_ten(self.scale_exp)}".replace("-", "−", 1)

    class DecadeFormatter(Formatter):
        """Major ticks of a log axis are powers of ten: ``10ⁿ``."""

        def __call__(self, x, pos=None):
            if x <= 0:
                return ""
            exponent = math.log10(x)
            return power_of_ten(round(exponent)) if abs(exponent - round(exponent)) < 1e-6 else ""

    return NiceFormatter, DecadeFormatter


def _linear(axis, integer: bool = False) -> None:
    from matplotlib.ticker import MaxNLocator

    nice, _ = _formatters()
    axis.set_major_locator(MaxNLocator(nbins="auto", steps=[1, 2, 5, 10], integer=integer,
                                       min_n_ticks=2 if integer else 3))
    axis.set_major_formatter(nice())


def _log_x(ax, lo: float, hi: float) -> None:
    """Log x axis from a power of ten below ``lo`` to one above ``hi``, ticks at powers of ten."""
    from matplotlib.ticker import LogLocator, NullFormatter

    _, decade = _formatters()
    lo_exp = math.floor(math.log10(lo) - 0.5)  # half a decade of room at least: a mark at 10ⁿ stays visible
    hi_exp = math.ceil(math.log10(hi) + 0.25)
    ax.set_xscale("log")
    axis = ax.xaxis
    axis.set_major_locator(LogLocator(base=10, numticks=12))
    axis.set_minor_locator(LogLocator(base=10, subs=np.arange(2, 10), numticks=12))
    axis.set_major_formatter(decade())
    axis.set_minor_formatter(NullFormatter())
    ax.set_xlim(10.0 ** lo_exp, 10.0 ** hi_exp)


def _figure(height_in: float):
    from matplotlib.figure import Figure

    return Figure(figsize=(WIDTH_IN, height_in), layout="constrained")


def _svg(fig, kind: str, title: str) -> str:
    """The figure as a ``<figure>`` holding an inline ``<svg>`` that scales to the page width."""
    import matplotlib

    out = io.StringIO()
    with matplotlib.rc_context({"svg.hashsalt": f"bnfreeze-{kind}", **RC}):
        fig.savefig(out, format="svg", metadata={"Date": None, "Creator": None})
    text = _compact(out.getvalue())
    head = text[: text.index(">") + 1]
    new_head = re.sub(r'\s(width|height)="[^"]*"', "", head).replace(
        "<svg", f'<svg class="chart" data-chart="{kind}" role="img" aria-label="{escape(title)}" '
                f'style="max-width: {fig.get_figwidth() * 96:.0f}px; font-family: {FONT_FAMILY}"', 1)
    svg = new_head + f"<title>{escape(title)}</title>" + text[len(head):]
    return f'<figure class="chart"><figcaption>{escape(title)}</figcaption>{svg}</figure>'


FONT_FAMILY = "'DejaVu Sans', Arial, Helvetica, sans-serif"


def _compact(text: str) -> str:
    """matplotlib's SVG, smaller: no XML prologue or metadata, no ids nothing refers to, coordinates
    to 0.01 pt, no no-op rotations, the font family once on the root instead of on every text."""
    text = text[text.index("<svg"):].strip()
    text = re.sub(r"<metadata>.*?</metadata>", "", text, count=1, flags=re.S)
    referenced = set(re.findall(r'#([^\s"()]+)', text))
    text = re.sub(r'\sid="([^"]+)"', lambda m: m.group(0) if m.group(1) in referenced else "", text)
    text = re.sub(r'\stransform="rotate\(-?0 [^)]*\)"', "", text)
    text = re.sub(r"font-family: [^;\"]*(; )?", "", text)
    text = text.replace("<style type=\"text/css\">*{", "<style type=\"text/css\">svg.chart *{")  # not the page's

    def tag(match):  # numbers inside tags only: the text between them stays as written
        return re.sub(r"(\d+\.\d\d)\d+", r"\1", re.sub(r"\s+", " ", match.group(0)))

    text = re.sub(r"<[^>]+>", tag, text)
    return re.sub(r">\s+<", "><", text)


def _render(build, kind: str, title: str, height_in: float) -> str:
    import matplotlib

    with matplotlib.rc_context(RC):
        fig = _figure(height_in)
        build(fig)
    return _svg(fig, kind, title)


def _bars_height(count: int) -> float:
    return 1.3 + ROW_IN * max(count, 1)


def _name_axis(ax, names: list[str]) -> None:
    ax.set_yticks(range(len(names)), [short_name(n) for n in names])
    ax.set_ylim(len(names) - 0.5, -0.5)  # model order from the top
    ax.tick_params(axis="y", length=0)
    ax.grid(False, axis="y")


def _histogram_range(values: np.ndarray) -> tuple[float, float, bool]:
    """The x range of a histogram: all values, or the central 99 % when a few outliers would squash it."""
    lo, hi = float(values.min()), float(values.max())
    if hi - lo < 1e-12:
        return lo - 0.5, hi + 0.5, False
    q_lo, q_hi = (float(q) for q in np.percentile(values, [0.5, 99.5]))
    pad = 0.1 * (q_hi - q_lo)
    if q_hi > q_lo and hi - lo > 3 * (q_hi - q_lo + 2 * pad):
        return max(lo, q_lo - pad), min(hi, q_hi + pad), True
    return lo, hi, False


# -- the report's charts --------------------------------------------------------------------
def scale_histogram(scales, negative_note: str | None = None) -> str:
    """Effective scales gamma/sqrt(var+eps) of every channel; negative ones red.

    The counts are on a log axis, so that the two negative channels among 700 (the ones this chart is
    there to show) stand a visible bar high instead of a pixel, and where they are few (up to
    :data:`RUG_MAX`) each is also marked in red under the bars at its own scale. ``negative_note`` is what the legend says about negative scales
    (the page says why they matter for this model, if they do).
    """
    scales = np.asarray(scales, np.float64).ravel()
    scales = scales[np.isfinite(scales)]
    title = "Effective BN scale gamma / sqrt(var + eps), all channels"

    def build(fig):
        from matplotlib.patches import Patch

        ax = fig.add_subplot()
        ax.set_xlabel("effective scale")
        ax.set_ylabel("channels (log scale)")
        _linear(ax.xaxis)
        if scales.size == 0:
            ax.text(0.5, 0.5, "no channels", transform=ax.transAxes, ha="center")
            return
        lo, hi, clipped = _histogram_range(scales)
        width = (hi - lo) / 40
        first = math.floor(lo / width)  # 0 is a bin edge: no bin holds both signs
        edges = width * np.arange(first, math.ceil(hi / width) + 1)
        shown = np.clip(scales, edges[0], edges[-1])  # outliers counted in the end bins
        counts, edges = np.histogram(shown, bins=edges)
        centres = (edges[:-1] + edges[1:]) / 2
        colours = [RED if c < 0 else BLUE for c in centres]
        _log_counts(ax, int(counts.max()))
        heights = np.where(counts > 0, counts - _LOG_FLOOR, 0.0)  # from the floor up to the count; empty: nothing
        bars = ax.bar(edges[:-1], heights, width=np.diff(edges), align="edge", color=colours, edgecolor="white",
                      linewidth=0.5, bottom=_LOG_FLOOR)
        ax.grid(False, axis="x")
        ax.set_xlim(edges[0] - width, edges[-1] + width)
        negative = int((scales < 0).sum())
        if negative:
            ax.axvline(0, color=GREY, linewidth=0.8)
            if negative <= RUG_MAX:  # a few: a red mark under the bars at each one's own scale, too
                marks = np.unique(np.round(np.clip(scales[scales < 0], edges[0], edges[-1]), 4))
                ax.plot(marks, np.full(marks.shape, _LOG_FLOOR), linestyle="none", marker="|", markersize=9,
                        markeredgewidth=1.2, color=RED, clip_on=False, zorder=3)
        handles = [Patch(color=BLUE, label=f"positive or zero: {_channels(int((scales >= 0).sum()))}")]
        if negative:
            note = f" ({negative_note})" if negative_note else ""
            handles.append(Patch(color=RED, label=f"negative: {_channels(negative)}{note}"))
        if clipped:
            low, high = int(np.sum(scales < edges[0])), int(np.sum(scales > edges[-1]))
            for index, count, text in ((0, low, f"← {low}"), (len(bars) - 1, high, f"{high} →")):
                if count:
                    bars[index].set_hatch("////")
                    bar = bars[index]
                    ax.annotate(text, (bar.get_x() + bar.get_width() / 2, counts[index]), xytext=(0, 10),
                                textcoords="offset points", ha="center", va="bottom", fontsize=8, color=GREY)
            handles.append(Patch(facecolor=GREY, edgecolor="white", hatch="////",
                                 label=f"end bins also hold {_channels(low + high)} beyond the axis "
                                       f"(min {scales.min():.3g}, max {scales.max():.3g})"))
        fig.legend(handles=handles, loc="outside upper left", ncols=min(len(handles), 2))

    return _render(build, "scale-histogram", title, 3.4)


#: where the bars of a log count axis start: below 1, so that a bin of one channel is a visible bar
_LOG_FLOOR = 0.5
#: up to this many negative channels are also marked one by one under the scale histogram's bars
RUG_MAX = 200


def _channels(count: int) -> str:
    return f"{count} channel" if count == 1 else f"{count} channels"


def _log_counts(ax, top: int) -> None:
    """A log y axis for counts, from below 1 to a power of ten above ``top``, ticks at powers of ten (10ⁿ)."""
    from matplotlib.ticker import FixedLocator, NullFormatter, NullLocator

    _, decade = _formatters()
    ax.set_yscale("log")
    exponent = max(1, math.ceil(math.log10(max(top, 1)) + 0.15))
    ax.set_ylim(_LOG_FLOOR, 10.0 ** exponent)
    ax.yaxis.set_major_locator(FixedLocator([10.0 ** k for k in range(exponent + 1)]))
    ax.yaxis.set_major_formatter(decade())
    ax.yaxis.set_minor_locator(NullLocator())
    ax.yaxis.set_minor_formatter(NullFormatter())


def min_variance_bars(names: list[str], values, near_zero: float) -> str:
    """Smallest moving variance of every BN, log axis, red when below ``near_zero``."""
    values = np.asarray(values, np.float64)
    title = "Smallest moving variance per BN"

    def build(fig):
        from matplotlib.lines import Line2D
        from matplotlib.patches import Patch

        ax = fig.add_subplot()
        ax.set_xlabel("smallest moving variance over the BN's channels (log scale)")
        positive = values[np.isfinite(values) & (values > 0)]
        _log_x(ax, min(float(positive.min()) if positive.size else near_zero, near_zero),
               max(float(positive.max()) if positive.size else 1.0, near_zero * 10))
        lo = ax.get_xlim()[0]
        shown = np.where(np.isfinite(values) & (values > 0), values, lo)
        colours = [RED if not v >= near_zero else BLUE for v in values]
        ax.barh(range(len(values)), shown - lo, left=lo, height=0.7, color=colours)
        for i, v in enumerate(values):
            if not (np.isfinite(v) and v > 0):
                ax.annotate("0" if v == 0 else f"{v}", (lo, i), xytext=(3, 0), textcoords="offset points",
                            va="center", fontsize=8, color=RED)
        ax.axvline(near_zero, color=RED, linestyle="--", linewidth=1)
        _name_axis(ax, names)
        exponent = math.log10(near_zero)
        handles = [Patch(color=BLUE, label="above near zero")]
        if not (values >= near_zero).all():
            handles.append(Patch(color=RED, label="near zero: the scale is dominated by epsilon"))
        handles.append(Line2D([], [], color=RED, linestyle="--", label="near zero = " + (
            power_of_ten(round(exponent)) if exponent == round(exponent) else f"{near_zero:g}")))
        fig.legend(handles=handles, loc="outside upper left", ncols=len(handles))

    return _render(build, "min-variance", title, _bars_height(len(names)))


def recalibration_bars(names: list[str], shifts, ratios) -> str:
    """Per BN after recalibration: the largest mean shift (in old sigmas) and the median variance ratio."""
    shifts = np.asarray(shifts, np.float64)
    ratios = np.asarray(ratios, np.float64)
    title = "Recalibration: change of each BN's statistics"

    def build(fig):
        fig.get_layout_engine().set(wspace=0.06)  # the panels' end tick labels keep apart
        left, right = fig.subplots(1, 2, sharey=True)
        left.barh(range(len(shifts)), np.nan_to_num(shifts), height=0.7, color=BLUE)
        left.set_xlabel("largest mean shift (old σ)")
        _linear(left.xaxis)
        left.set_xlim(0, None)
        _name_axis(left, names)
        finite = ratios[np.isfinite(ratios) & (ratios > 0)]
        _log_x(right, min(float(finite.min()) if finite.size else 1.0, 1.0),
               max(float(finite.max()) if finite.size else 1.0, 1.0))
        lo, hi = right.get_xlim()
        shown = np.clip(np.nan_to_num(ratios, nan=1.0, posinf=hi), lo, hi)  # 0 and inf at the axis' ends
        right.scatter(shown, range(len(ratios)), color=BLUE, s=14, zorder=3)
        right.hlines(range(len(ratios)), 1.0, shown, color=BLUE, linewidth=1)
        right.axvline(1.0, color=GREY, linewidth=0.8)
        right.set_xlabel("median variance ratio new / old (log)")
        right.tick_params(axis="y", length=0, labelleft=False)
        right.grid(False, axis="y")

    return _render(build, "recalibration", title, _bars_height(len(names)))


#: decades of |error| shown below the smaller tolerance mark: smaller errors (1e-44 in a softmax's tail)
#: say nothing about a pass or a fail; the legend counts them instead
DECADES_BELOW_TOLERANCE = 4


def error_histogram(errors, atol: float, rtol: float, peak: float) -> str:
    """Nonzero |folded − original| per output element on a log axis, with the tolerance marked.

    An output passes when its largest |error| is within ``atol`` or within ``rtol × peak``
    (``peak``: the largest |value| of the original's output; of several outputs, give the smallest
    peak, the strictest limit); bars beyond both are red. The axis spans the decades that matter:
    from :data:`DECADES_BELOW_TOLERANCE` below the smaller tolerance mark (or the smallest error, if
    larger) to above the largest error and the tolerance. Smaller errors are not drawn (a softmax's
    thousands of 1e-30 errors would dwarf the ones that matter) but counted in the legend.
    """
    errors = np.asarray(errors, np.float64).ravel()
    nonzero = errors[np.isfinite(errors) & (errors > 0)]
    rel_limit = rtol * peak
    limit = max(atol, rel_limit)
    title = "|folded − original| per output element"
    marks = [m for m in (atol, rel_limit) if m > 0]
    top = max(marks + ([float(nonzero.max())] if nonzero.size else []), default=1e-7)
    floor = (min(marks) if marks else top) * 10.0 ** -DECADES_BELOW_TOLERANCE

    def build(fig):
        from matplotlib.lines import Line2D
        from matplotlib.patches import Patch

        ax = fig.add_subplot()
        ax.set_xlabel("|error| (log scale; elements with error 0 are not shown)")
        ax.set_ylabel("output elements")
        smallest = max(float(nonzero.min()), floor) if nonzero.size else min(marks, default=1e-8)
        _log_x(ax, min(marks + [smallest], default=1e-8), top)
        lo, hi = ax.get_xlim()
        below = int(np.sum(nonzero < lo))  # beyond the axis' left end: counted, not drawn
        _linear(ax.yaxis, integer=True)
        handles = []
        if nonzero.size:
            decades = math.log10(hi / lo)
            per_decade = max(1, min(10, round(40 / decades)))
            edges = 10.0 ** (np.arange(round(math.log10(lo) * per_decade), round(math.log10(hi) * per_decade) + 1)
                             / per_decade)
            edges = np.union1d(edges, [limit])  # no bin holds errors on both sides of the tolerance
            counts, edges = np.histogram(np.minimum(nonzero[nonzero >= lo], edges[-1]), bins=edges)
            colours = [RED if left >= limit else BLUE for left in edges[:-1]]
            ax.bar(edges[:-1], counts, width=np.diff(edges), align="edge", color=colours, edgecolor="white",
                   linewidth=0.5)
            handles.append(Patch(color=BLUE, label="within tolerance"))
            if (nonzero > limit).any():
                handles.append(Patch(color=RED, label="beyond tolerance"))
            if below:
                handles.append(Patch(facecolor="none", edgecolor="none",
                                     label=f"{below:,} smaller errors (down to {float(nonzero.min()):.2g}) not drawn"))
        else:
            ax.text(0.5, 0.5, "every output element is identical (|error| = 0)", transform=ax.transAxes,
                    ha="center", va="center")
            ax.set_ylim(0, 1)
        ax.grid(False, axis="x")
        ax.axvline(atol, color=RED, linestyle="--", linewidth=1.2)
        handles.append(Line2D([], [], color=RED, linestyle="--", label=f"atol {atol:g}"))
        if rel_limit > 0:
            ax.axvline(rel_limit, color=ORANGE, linestyle=":", linewidth=1.6)
            handles.append(Line2D([], [], color=ORANGE, linestyle=":",
                                  label=f"rtol {rtol:g} × largest |output| {peak:.3g} = {rel_limit:.2g}"))
        fig.legend(handles=handles, loc="outside upper left", ncols=min(len(handles), 3))

    return _render(build, "parity-histogram", title, 3.6)
