"""Two small chart types as inline SVG, so a report needs no plotting library and no network."""

from __future__ import annotations

import html
import math

import numpy as np

WIDTH, HEIGHT, PAD = 640, 260, 48
BLUE, RED, GREY = "#3b6ea8", "#c0392b", "#888"


def _frame(title: str, xlabel: str, ylabel: str, body: list[str], kind: str) -> str:
    head = (f'<svg xmlns="http://www.w3.org/2000/svg" class="plot" data-plot="{kind}" width="{WIDTH}" '
            f'height="{HEIGHT}" viewBox="0 0 {WIDTH} {HEIGHT}" role="img" aria-label="{html.escape(title)}">'
            f'<title>{html.escape(title)}</title>'
            f'<rect x="0" y="0" width="{WIDTH}" height="{HEIGHT}" fill="white"/>'
            f'<text x="{WIDTH / 2}" y="18" text-anchor="middle" font-size="14" font-weight="bold">{html.escape(title)}</text>'
            f'<line x1="{PAD}" y1="{HEIGHT - PAD}" x2="{WIDTH - 10}" y2="{HEIGHT - PAD}" stroke="black"/>'
            f'<line x1="{PAD}" y1="30" x2="{PAD}" y2="{HEIGHT - PAD}" stroke="black"/>'
            f'<text x="{WIDTH / 2}" y="{HEIGHT - 8}" text-anchor="middle" font-size="12">{html.escape(xlabel)}</text>'
            f'<text x="14" y="{HEIGHT / 2}" text-anchor="middle" font-size="12" '
            f'transform="rotate(-90 14 {HEIGHT / 2})">{html.escape(ylabel)}</text>')
    return head + "".join(body) + "</svg>"


def _ticks(lo: float, hi: float, x0: float, x1: float, y: float, fmt=lambda v: f"{v:.3g}") -> list[str]:
    out = []
    for i in range(5):
        value = lo + (hi - lo) * i / 4
        x = x0 + (x1 - x0) * i / 4
        out.append(f'<line x1="{x:.1f}" y1="{y}" x2="{x:.1f}" y2="{y + 4}" stroke="black"/>'
                   f'<text x="{x:.1f}" y="{y + 16}" text-anchor="middle" font-size="10">{fmt(value)}</text>')
    return out


def histogram(values, title: str, xlabel: str, bins: int = 40, split: float | None = None,
              tick_format=lambda v: f"{v:.3g}") -> str:
    """Histogram of ``values``; bars left of ``split`` are drawn red (e.g. negative BN scales)."""
    values = np.asarray(values, np.float64).ravel()
    values = values[np.isfinite(values)]
    if values.size == 0:
        return _frame(title, xlabel, "count", [f'<text x="{WIDTH / 2}" y="{HEIGHT / 2}" text-anchor="middle">no values</text>'],
                      "histogram")
    lo, hi = float(values.min()), float(values.max())
    if hi == lo:
        lo, hi = lo - 0.5, hi + 0.5
    counts, edges = np.histogram(values, bins=bins, range=(lo, hi))
    plot_w, plot_h = WIDTH - PAD - 30, HEIGHT - PAD - 34
    top = max(int(counts.max()), 1)
    body = []
    for count, left, right in zip(counts, edges[:-1], edges[1:]):
        if not count:
            continue
        x = PAD + (left - lo) / (hi - lo) * plot_w
        w = max((right - left) / (hi - lo) * plot_w - 1, 1)
        h = count / top * plot_h
        colour = RED if split is not None and (left + right) / 2 < split else BLUE
        body.append(f'<rect class="bar" x="{x:.1f}" y="{HEIGHT - PAD - h:.1f}" width="{w:.1f}" height="{h:.1f}" '
                    f'fill="{colour}"><title>{left:.3g} to {right:.3g}: {count}</title></rect>')
    body += _ticks(lo, hi, PAD, PAD + plot_w, HEIGHT - PAD, tick_format)
    body.append(f'<text x="{PAD - 4}" y="36" text-anchor="end" font-size="10">{top}</text>')
    return _frame(title, xlabel, "count", body, "histogram")


def bars(labels: list[str], values, title: str, ylabel: str, log: bool = False, line: float | None = None,
         line_label: str = "") -> str:
    """One bar per label (BN layers in model order); optional horizontal reference line."""
    values = np.asarray(values, np.float64)
    plot_w, plot_h = WIDTH - PAD - 10, HEIGHT - PAD - 34
    shown = np.log10(np.maximum(values, 1e-30)) if log else values
    reference = (math.log10(line) if log else line) if line is not None else None
    candidates = list(shown[np.isfinite(shown)]) + ([reference] if reference is not None else [])
    lo = min(min(candidates, default=0.0), 0.0 if not log else min(candidates, default=0.0))
    hi = max(candidates, default=1.0)
    if hi == lo:
        hi = lo + 1
    body = []
    n = max(len(values), 1)
    width = plot_w / n
    for i, (label, value, s) in enumerate(zip(labels, values, shown)):
        h = (s - lo) / (hi - lo) * plot_h
        x = PAD + i * width
        body.append(f'<rect class="bar" x="{x + 0.5:.1f}" y="{HEIGHT - PAD - h:.1f}" width="{max(width - 1, 0.5):.1f}" '
                    f'height="{max(h, 0.5):.1f}" fill="{BLUE}"><title>{html.escape(label)}: {value:.4g}</title></rect>')
    if reference is not None:
        y = HEIGHT - PAD - (reference - lo) / (hi - lo) * plot_h
        body.append(f'<line x1="{PAD}" y1="{y:.1f}" x2="{WIDTH - 10}" y2="{y:.1f}" stroke="{RED}" stroke-dasharray="4 3"/>'
                    f'<text x="{WIDTH - 12}" y="{y - 4:.1f}" text-anchor="end" font-size="10" fill="{RED}">'
                    f'{html.escape(line_label)}</text>')
    fmt = (lambda v: f"{10 ** v:.2g}") if log else (lambda v: f"{v:.3g}")
    for i in range(5):
        v = lo + (hi - lo) * i / 4
        y = HEIGHT - PAD - plot_h * i / 4
        body.append(f'<text x="{PAD - 4}" y="{y + 3:.1f}" text-anchor="end" font-size="10">{fmt(v)}</text>')
    body.append(f'<text x="{PAD + plot_w / 2}" y="{HEIGHT - PAD + 16}" text-anchor="middle" font-size="10" '
                f'fill="{GREY}">{len(values)} BN layers in model order (hover for names)</text>')
    return _frame(title, "", ylabel, body, "bars")
