"""The report page: fold plan, per-BN statistics, recalibration shifts and a parity histogram."""

from __future__ import annotations

import html
from dataclasses import dataclass, field

import numpy as np

NEAR_ZERO_VARIANCE = 1e-4  # below this a BN's scale 1/sqrt(var + eps) is dominated by eps

STYLE = """
body { font-family: system-ui, sans-serif; margin: 2em; color: #222; max-width: 1100px; }
table { border-collapse: collapse; margin: 1em 0; font-size: 13px; }
th, td { border: 1px solid #ccc; padding: 3px 8px; text-align: left; }
th { background: #f0f0f0; }
td.num { text-align: right; font-variant-numeric: tabular-nums; }
.kept { color: #a05a00; } .warn { color: #c0392b; }
figure.chart { margin: 1.2em 0; }
figure.chart figcaption { font-weight: bold; margin-bottom: 0.3em; }
svg.chart { display: block; width: 100%; height: auto; }
.notice { border-left: 4px solid #c0392b; padding: 0.4em 0.8em; background: #fdf2f0; }
.pass { color: #1e7e34; }
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
    """Every BatchNormalization layer inside ``model``, in model order, wherever it sits.

    Nested models, wrappers and custom layers are searched too; a
    ``TimeDistributed(BatchNormalization)`` is ``wrapper/bn``, as the fold plan
    names it.
    """
    from bnfreeze.fold.classes import is_batch_norm, is_exactly

    found = []
    for layer in model._flatten_layers(include_self=False, recursive=False):
        name = "/".join((*path, layer.name))
        if is_batch_norm(layer):
            found.append(_facts(name, layer))
        elif is_exactly(layer, "TimeDistributed") and is_batch_norm(layer.layer):
            found.append(_facts(f"{name}/{layer.layer.name}", layer.layer))
        else:
            found.extend(bn_facts(layer, (*path, layer.name)))
    return found


def _facts(name: str, layer) -> BnFacts:
    channels = layer.moving_mean.shape[0]

    def value(variable, default):
        return np.asarray(variable.numpy(), np.float64) if variable is not None else np.full(channels, default)

    return BnFacts(name, float(layer.epsilon), value(layer.gamma if layer.scale else None, 1.0),
                   value(layer.beta if layer.center else None, 0.0), value(layer.moving_mean, 0.0),
                   value(layer.moving_variance, 1.0))


@dataclass
class ParityFacts:
    """|folded - original| of every output element, and the tolerance the fold is held to."""

    errors: np.ndarray
    max_abs: float
    max_rel: float
    samples: int
    data: str  # what the samples are, e.g. "8 random samples (seed 0)"
    atol: float
    rtol: float
    peak: float  # the smallest of the outputs' largest |value|: rtol x peak is the strictest relative limit
    passed: bool
    dtype: str | None = None


def describe_data(samples: int, path=None, seed: int | None = None) -> str:
    """``8 random samples (seed 0)``, ``1 sample from data.npy``."""
    noun = "sample" if samples == 1 else "samples"
    if path is None:
        return f"{samples} random {noun} (seed {seed})"
    return f"{samples} {noun} from {path}"


def parity_facts(model, folded, feeds: list[list[np.ndarray]], data: str) -> ParityFacts:
    """Run ``model`` and ``folded`` on ``feeds`` (batches of input arrays); judge each output as fold does."""
    from bnfreeze.compare import Tolerance, compare_output
    from bnfreeze.parity import run_keras, run_original

    tolerance = Tolerance().resolved(model)
    reference, candidate, samples = [], [], 0
    for arrays in feeds:
        reference.append([np.asarray(a, np.float64) for a in run_original(model, arrays)])
        candidate.append([np.asarray(b, np.float64) for b in run_keras(folded, arrays)])
        samples += len(arrays[0])
    outputs = len(reference[0]) if reference else 0
    errors, peaks, passed, max_rel = [], [], True, 0.0
    for k in range(outputs):
        ref = np.concatenate([batch[k] for batch in reference])
        cand = np.concatenate([batch[k] for batch in candidate])
        result = compare_output(f"output {k}", ref, cand, tolerance)
        errors.append(np.abs(cand - ref).ravel())
        peaks.append(float(np.max(np.abs(ref))) if ref.size else 0.0)
        passed = passed and result.passed
        max_rel = max(max_rel, result.max_rel)
    errors = np.concatenate(errors) if errors else np.zeros(0)
    max_abs = float(errors.max()) if errors.size else 0.0
    return ParityFacts(errors, max_abs, max_rel, samples, data, tolerance.abs_limit, tolerance.rel_limit,
                       min(peaks, default=0.0), passed, tolerance.dtype)


@dataclass
class Matching:
    """The BNs of a model and of its recalibrated version, matched by name (and channel count)."""

    pairs: list[tuple[BnFacts, BnFacts]]
    missing: list[str]  # the model's BNs that the other model lacks
    extra: list[str]  # the other model's BNs that the model lacks
    resized: list[str] = field(default_factory=list)  # same name, another number of channels


def match_bns(facts: list[BnFacts], compared: list[BnFacts]) -> Matching:
    by_name = {f.name: f for f in compared}
    names = {f.name for f in facts}
    shared = [f for f in facts if f.name in by_name]
    return Matching([(f, by_name[f.name]) for f in shared if f.mean.shape == by_name[f.name].mean.shape],
                    [f.name for f in facts if f.name not in by_name],
                    [f.name for f in compared if f.name not in names],
                    [f.name for f in shared if f.mean.shape != by_name[f.name].mean.shape])


def name_list(names: list[str], limit: int = 8) -> str:
    """``bn1, bn2 and bn3``; ``a, b, ... and 40 more``."""
    if not names:
        return "none"
    if len(names) > limit:
        return ", ".join(names[:limit]) + f" and {len(names) - limit} more"
    return names[0] if len(names) == 1 else ", ".join(names[:-1]) + " and " + names[-1]


def compare_warning(model_label: str, compare_label: str, matching: Matching) -> str | None:
    """One line for stderr (and the page) when ``--compare`` misses some of the model's BNs; None if none."""
    if not matching.missing and not matching.resized:
        return None
    total = len(matching.pairs) + len(matching.missing) + len(matching.resized)
    if not matching.pairs and not matching.resized:
        found = f"it has {name_list(matching.extra)}" if matching.extra else "it has no BatchNormalization layer"
        return (f"{compare_label} shares no BatchNormalization name with {model_label}: expected "
                f"{name_list(matching.missing)}; {found} (--compare takes a recalibrated copy of the model)")
    problems = []
    if matching.missing:
        problems.append(f"lacks {len(matching.missing)} of the {total} BatchNormalization layers of {model_label} "
                        f"({name_list(matching.missing)})")
    if matching.resized:
        problems.append(f"has {len(matching.resized)} with another number of channels "
                        f"({name_list(matching.resized)})")
    return (f"{compare_label} {' and '.join(problems)}; only the {len(matching.pairs)} of the {total} with the same "
            "name and channels are compared")


def _table(headers: list[str], rows: list[list[str]], numeric: set[int] = frozenset()) -> str:
    head = "".join(f"<th>{html.escape(h)}</th>" for h in headers)
    body = "".join(
        "<tr>" + "".join(f'<td class="num">{c}</td>' if i in numeric else f"<td>{c}</td>" for i, c in enumerate(r)) + "</tr>"
        for r in rows)
    return f"<table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>"


def _g(v: float) -> str:
    return f"{v:.4g}"


def plural(count: int, noun: str) -> str:
    """``1 BN``, ``3 BNs``, ``1 channel``, ``0 channels``."""
    return f"{count} {noun}" if count == 1 else f"{count} {noun}s"


def has_max_pooling(model) -> bool:
    """Whether ``model`` (nested models and wrappers included) holds a max pooling layer: the one place a
    negative BN scale changes what fold can do."""
    return any("MaxPool" in type(layer).__name__ for layer in model._flatten_layers(include_self=False, recursive=True))


def render(model_label: str, rows, facts: list[BnFacts], parity: ParityFacts | None,
           compare_label: str | None = None, compared: list[BnFacts] | None = None,
           max_pooling: bool = False) -> str:
    """The whole page. Deterministic: the same model and options give the same bytes.

    ``max_pooling``: the model holds a max pooling layer (:func:`has_max_pooling`), so its negative BN
    scales matter to the fold plan, and the page says why."""
    from bnfreeze.html import charts

    e = html.escape
    structure = [r for r in rows if r.kind == "structure"]
    rows = [r for r in rows if r.kind != "structure"]
    folded = [r for r in rows if r.action.startswith("fold")]
    noun = "layer" if len(facts) == 1 else "layers"
    parts = [f"<!DOCTYPE html><html lang='en'><head><meta charset='utf-8'><title>bnfreeze report: {e(model_label)}</title>"
             f"<style>{STYLE}</style></head><body>",
             f"<h1>bnfreeze report: {e(model_label)}</h1>",
             f"<p>{len(facts)} BatchNormalization {noun}; {len(folded)} of {plural(len(rows), 'normalization layer')} "
             f"fold.</p>",
             "<h2>Fold plan</h2>",
             # how a BN folds and why one stays are two kinds of fact: two columns
             _table(["layer", "kind", "action", "how it folds (rule, layers crossed)", "why it stays"],
                    [[e(r.layer), e(r.kind), e(r.action) if r.action.startswith("fold") else f"<span class='kept'>{e(r.action)}</span>",
                      e(r.how), e(r.reason or "")] for r in rows])]
    if structure:
        parts += ["<h2>How bnfreeze read the model</h2>",
                  _table(["layer", "action", "detail"], [[e(r.layer), e(r.action), e(r.detail)] for r in structure])]
    if facts:
        scales = np.concatenate([f.scale for f in facts])
        negative = int(np.sum(scales < 0))
        near = sum(int(np.any(f.variance < NEAR_ZERO_VARIANCE)) for f in facts)
        if not negative:
            why = "."
        elif max_pooling:
            why = (": max pooling does not commute with a negative scale, so a BN with one cannot be moved "
                   "forward through this model's max pooling.")
        else:
            why = (": each flips the sign of its channel. This model has no max pooling, the one layer a "
                   "negative scale keeps a BN from crossing, so they change nothing in its fold plan.")
        verb = "has" if negative == 1 else "have"
        parts += ["<h2>BN statistics</h2>",
                  f"<p>The effective scale of a BN channel is gamma / sqrt(variance + epsilon). "
                  f"{negative} of {plural(scales.size, 'channel')} {verb} a negative scale (red){why}</p>",
                  charts.scale_histogram(scales, "max pooling cannot take them forward" if max_pooling else None),
                  f"<p>BNs with a channel whose moving variance is below {NEAR_ZERO_VARIANCE:g} (red), where the "
                  f"scale 1 / sqrt(variance + epsilon) is set by epsilon rather than by the data: {near} of "
                  f"{len(facts)}.</p>",
                  charts.min_variance_bars([f.name for f in facts], [float(f.variance.min()) for f in facts],
                                           NEAR_ZERO_VARIANCE)]
        table_rows = []
        for f in facts:
            near = int(np.sum(f.variance < NEAR_ZERO_VARIANCE))
            table_rows.append([e(f.name), str(f.scale.size), _g(f.scale.min()), _g(np.median(f.scale)), _g(f.scale.max()),
                               str(int(np.sum(f.scale < 0))), _g(f.variance.min()),
                               f"<span class='warn'>{near}</span>" if near else "0", _g(f.epsilon)])
        parts.append(_table(["BN", "channels", "scale min", "scale median", "scale max", "negative scales",
                             "variance min", "variance near zero", "epsilon"], table_rows, set(range(1, 9))))
    if compared is not None:
        matching = match_bns(facts, compared)
        pairs = matching.pairs
        shifts = [float(np.max(np.abs(n.mean - o.mean) / np.sqrt(o.variance + o.epsilon))) for o, n in pairs]
        ratios = [float(np.median((n.variance + n.epsilon) / (o.variance + o.epsilon))) for o, n in pairs]
        parts.append(f"<h2>Recalibration: {e(compare_label or '')}</h2>")
        warning = compare_warning(model_label, compare_label or "the compared model", matching)
        if warning:
            parts.append(f"<p class='warn notice'>Warning: {e(warning)}</p>")
        if pairs:
            parts += [f"<p>{plural(len(pairs), 'BN')} matched by name. Mean shift = largest over channels of "
                      "|new mean − old mean| / old standard deviation; variance ratio = median over channels of "
                      "new / old variance (1 = unchanged).</p>",
                      charts.recalibration_bars([o.name for o, _ in pairs], shifts, ratios),
                      _table(["BN", "mean shift max (σ)", "variance ratio median"],
                             [[e(o.name), _g(s), _g(r)] for (o, _), s, r in zip(pairs, shifts, ratios)], {1, 2})]
    if parity is not None:
        zero = int(np.sum(parity.errors == 0))
        dtype = f" ({parity.dtype} defaults)" if parity.dtype else ""
        verdict = ("<span class='pass'>passes</span>" if parity.passed
                   else "<span class='warn'>fails</span>")
        parts += ["<h2>Parity: original vs folded</h2>",
                  f"<p>{e(parity.data)}, {parity.errors.size} output elements: max_abs {parity.max_abs:.3g}, "
                  f"max_rel {parity.max_rel:.3g}; {zero} elements identical. "
                  f"An output passes when its largest |error| is within atol {parity.atol:g} or within "
                  f"rtol {parity.rtol:g} × its largest |value|{e(dtype)}: the fold {verdict}.</p>",
                  charts.error_histogram(parity.errors, parity.atol, parity.rtol, parity.peak)]
    parts.append("</body></html>")
    return "\n".join(parts)
