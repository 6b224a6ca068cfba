"""The report page: fold plan, per-BN statistics, recalibration shifts and a parity histogram."""

from __future__ import annotations

import html
import time
from dataclasses import dataclass

import numpy as np

from bnfreeze.html import svg

NEAR_ZERO_VARIANCE = 1e-4  # below this a BN's scale 1/sqrt(var + eps) is dominated by eps

STYLE = """
body { font-family: system-ui, sans-serif; margin: 2em; color: #222; max-width: 1100px; }
table { border-collapse: collapse; margin: 1em 0; font-size: 13px; }
th, td { border: 1px solid #ccc; padding: 3px 8px; text-align: left; }
th { background: #f0f0f0; }
td.num { text-align: right; font-variant-numeric: tabular-nums; }
.kept { color: #a05a00; } .warn { color: #c0392b; }
svg.plot { display: block; margin: 1em 0; border: 1px solid #ddd; }
"""


@dataclass
class BnFacts:
    name: str
    epsilon: float
    gamma: np.ndarray
    beta: np.ndarray
    mean: np.ndarray
    variance: np.ndarray

    @property
    def scale(self) -> np.ndarray:
        return self.gamma / np.sqrt(self.variance + self.epsilon)


def bn_facts(model, path: tuple[str, ...] = ()) -> list[BnFacts]:
    """Every BatchNormalization layer of ``model`` (nested models too), in model order."""
    import keras

    found = []
    for layer in model.layers:
        if isinstance(layer, keras.layers.BatchNormalization):
            channels = layer.moving_mean.shape[0]
            value = lambda v, default: np.asarray(v.numpy(), np.float64) if v is not None else np.full(channels, default)
            found.append(BnFacts("/".join((*path, layer.name)), float(layer.epsilon),
                                 value(layer.gamma if layer.scale else None, 1.0),
                                 value(layer.beta if layer.center else None, 0.0),
                                 value(layer.moving_mean, 0.0), value(layer.moving_variance, 1.0)))
        elif hasattr(layer, "layers"):
            found.extend(bn_facts(layer, (*path, layer.name)))
    return found


@dataclass
class ParityFacts:
    errors: np.ndarray
    max_abs: float
    max_rel: float
    samples: int
    source: str


def parity_facts(model, folded, feeds: list[list[np.ndarray]], source: str) -> ParityFacts:
    from bnfreeze.parity import run_keras

    errors, peak, samples = [], 0.0, 0
    for arrays in feeds:
        for a, b in zip(run_keras(model, arrays), run_keras(folded, arrays)):
            a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
            errors.append(np.abs(a - b).ravel())
            peak = max(peak, float(np.max(np.abs(a))))
        samples += len(arrays[0])
    errors = np.concatenate(errors) if errors else np.zeros(0)
    max_abs = float(errors.max()) if errors.size else 0.0
    return ParityFacts(errors, max_abs, max_abs / peak if peak else 0.0, samples, source)


def _table(headers: list[str], rows: list[list[str]], numeric: set[int] = frozenset()) -> str:
    head = "".join(f"<th>{html.escape(h)}</th>" for h in headers)
    body = "".join(
        "<tr>" + "".join(f'<td class="num">{c}</td>' if i in numeric else f"<td>{c}</td>" for i, c in enumerate(r)) + "</tr>"
        for r in rows)
    return f"<table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>"


def _g(v: float) -> str:
    return f"{v:.4g}"


def render(model_label: str, rows, facts: list[BnFacts], parity: ParityFacts | None,
           compare_label: str | None = None, compared: list[BnFacts] | None = None) -> str:
    e = html.escape
    folded = [r for r in rows if r.action.startswith("fold")]
    parts = [f"<!DOCTYPE html><html lang='en'><head><meta charset='utf-8'><title>bnfreeze report: {e(model_label)}</title>"
             f"<style>{STYLE}</style></head><body>",
             f"<h1>bnfreeze report: {e(model_label)}</h1>",
             f"<p>{len(facts)} BatchNormalization layers; {len(folded)} of {len(rows)} normalization layers fold. "
             f"Generated {time.strftime('%Y-%m-%d %H:%M')}.</p>",
             "<h2>Fold plan</h2>",
             _table(["layer", "kind", "plan", "detail"],
                    [[e(r.layer), e(r.kind), e(r.action) if r.action.startswith("fold") else f"<span class='kept'>{e(r.action)}</span>",
                      e(r.detail)] for r in rows])]
    if facts:
        scales = np.concatenate([f.scale for f in facts])
        negative = int(np.sum(scales < 0))
        parts += ["<h2>BN statistics</h2>",
                  f"<p>The effective scale of a BN channel is gamma / sqrt(variance + epsilon). "
                  f"{negative} of {scales.size} channels have a negative scale (red): max pooling does not commute "
                  f"with them, so a BN before a MaxPooling cannot fold forward through it.</p>",
                  svg.histogram(scales, "Effective BN scale, all channels", "gamma / sqrt(var + eps)", split=0.0),
                  svg.bars([f.name for f in facts], [float(f.variance.min()) for f in facts],
                           "Smallest moving variance per BN", "min variance (log)", log=True,
                           line=NEAR_ZERO_VARIANCE, line_label=f"near zero ({NEAR_ZERO_VARIANCE:g})")]
        table_rows = []
        for f in facts:
            near = int(np.sum(f.variance < NEAR_ZERO_VARIANCE))
            table_rows.append([e(f.name), str(f.scale.size), _g(f.scale.min()), _g(np.median(f.scale)), _g(f.scale.max()),
                               str(int(np.sum(f.scale < 0))), _g(f.variance.min()),
                               f"<span class='warn'>{near}</span>" if near else "0", _g(f.epsilon)])
        parts.append(_table(["BN", "channels", "scale min", "scale median", "scale max", "negative scales",
                             "variance min", "variance near zero", "epsilon"], table_rows, set(range(1, 9))))
    if compared is not None:
        by_name = {f.name: f for f in compared}
        pairs = [(f, by_name[f.name]) for f in facts if f.name in by_name]
        shifts = [float(np.max(np.abs(n.mean - o.mean) / np.sqrt(o.variance + o.epsilon))) for o, n in pairs]
        ratios = [float(np.median((n.variance + n.epsilon) / (o.variance + o.epsilon))) for o, n in pairs]
        parts += [f"<h2>Recalibration: {e(compare_label or '')}</h2>",
                  f"<p>{len(pairs)} BNs matched by name. Mean shift = max over channels of |new mean - old mean| / "
                  "old standard deviation.</p>",
                  svg.bars([o.name for o, _ in pairs], shifts, "Mean shift after recalibration per BN", "max shift (σ)"),
                  _table(["BN", "mean shift max (σ)", "variance ratio median"],
                         [[e(o.name), _g(s), _g(r)] for (o, _), s, r in zip(pairs, shifts, ratios)], {1, 2})]
    if parity is not None:
        nonzero = parity.errors[parity.errors > 0]
        parts += ["<h2>Parity: original vs folded</h2>",
                  f"<p>{parity.samples} samples ({e(parity.source)}), {parity.errors.size} output elements: "
                  f"max_abs {parity.max_abs:.3g}, max_rel {parity.max_rel:.3g}; "
                  f"{parity.errors.size - nonzero.size} elements identical.</p>",
                  svg.histogram(np.log10(nonzero) if nonzero.size else nonzero,
                                "Folded vs original: |error| per output element", "log10 |error|",
                                tick_format=lambda v: f"1e{v:.1f}")]
    parts.append("</body></html>")
    return "\n".join(parts)
