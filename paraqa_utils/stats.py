"""Scores and their uncertainty: micro/macro means, relative improvement, paired bootstrap and permutation tests."""
from __future__ import annotations

from typing import Any, Mapping, Sequence

import numpy as np


def relative_improvement(score: float, baseline: float) -> float:
    """(score - baseline) / baseline in percent, as the paper reports (+38.41 % = 56.75 over 41.00)."""
    if baseline == 0:
        raise ZeroDivisionError("relative improvement over a baseline score of 0 is undefined")
    return 100.0 * (score - baseline) / baseline


def micro_mean(scores: Sequence[float]) -> float:
    """Mean over QA pairs: what the paper calls the overall score."""
    return float(np.mean(scores)) if len(scores) else float("nan")


def macro_mean(scores_by_type: Mapping[str, Sequence[float]]) -> float:
    """Mean of the per-type means: every question type weighs the same, however many items it has."""
    means = [np.mean(v) for v in scores_by_type.values() if len(v)]
    return float(np.mean(means)) if means else float("nan")


def micro_from_types(means: Mapping[str, float], counts: Mapping[str, int]) -> float:
    """The overall micro mean implied by per-type means and item counts."""
    n = sum(counts.values())
    return sum(means[t] * counts[t] for t in means) / n


def type_shares(systems: Mapping[str, tuple[float, Mapping[str, float]]]) -> dict[str, float]:
    """Item shares per question type that make each system's overall score the micro mean of its type means.

    `systems` maps a name to (overall, {type: mean}). With as many systems as types minus one, plus the
    constraint that shares sum to 1, the shares are determined (least squares if over-determined). Used to
    check the paper's table: S10 and S30 together imply about 16 % C, 65 % CE, 19 % CG.
    """
    keys = list(next(iter(systems.values()))[1])
    rows = [[means[k] for k in keys] for _, means in systems.values()] + [[1.0] * len(keys)]
    rhs = [overall for overall, _ in systems.values()] + [1.0]
    shares, *_ = np.linalg.lstsq(np.array(rows), np.array(rhs), rcond=None)
    return dict(zip(keys, (float(x) for x in shares)))


def bootstrap_mean_ci(values: Sequence[float], n_resamples: int = 2000, seed: int = 0,
                      alpha: float = 0.05) -> tuple[float | None, float | None]:
    """95 % bootstrap CI of a mean over items; (None, None) below two items."""
    v = np.asarray(values, float)
    if len(v) < 2:
        return None, None
    means = v[np.random.default_rng(seed).integers(0, len(v), size=(n_resamples, len(v)))].mean(axis=1)
    lo, hi = np.quantile(means, [alpha / 2, 1 - alpha / 2])
    return float(lo), float(hi)


def paired_bootstrap(base: Sequence[float], other: Sequence[float], n_resamples: int = 2000,
                     seed: int = 0, alpha: float = 0.05) -> dict[str, float | int | None]:
    """95 % CI of the relative improvement of `other` over `base`, resampling test items (paired).

    With fewer than two items there is no interval: the bounds are None and `note` says so.
    """
    a, b = np.asarray(base, float), np.asarray(other, float)
    if a.shape != b.shape:
        raise ValueError(f"paired scores need the same items: {a.shape} vs {b.shape}")
    point = relative_improvement(b.mean(), a.mean()) if len(a) and a.mean() != 0 else float("nan")
    out: dict[str, float | int | None] = {"rel_improvement_pct": point, "n_items": int(len(a)),
                                          "ci_low": None, "ci_high": None, "n_resamples": n_resamples}
    if len(a) < 2:
        out["note"] = "fewer than 2 paired items: no confidence interval"
        return out
    rng = np.random.default_rng(seed)
    idx = rng.integers(0, len(a), size=(n_resamples, len(a)))
    ma, mb = a[idx].mean(axis=1), b[idx].mean(axis=1)
    ok = ma != 0
    rel = 100.0 * (mb[ok] - ma[ok]) / ma[ok]
    if len(rel) == 0:
        out["note"] = "baseline mean is 0 in every resample: no interval"
        return out
    out["ci_low"], out["ci_high"] = (float(x) for x in np.quantile(rel, [alpha / 2, 1 - alpha / 2]))
    return out


def paired_permutation_p(base: Sequence[float], other: Sequence[float], n_resamples: int = 10000,
                         seed: int = 0) -> float | None:
    """Two-sided p-value of the mean paired difference under random sign flips (None below 2 items)."""
    d = np.asarray(other, float) - np.asarray(base, float)
    if len(d) < 2:
        return None
    observed = abs(d.mean())
    if observed == 0:
        return 1.0
    rng = np.random.default_rng(seed)
    signs = rng.choice([-1.0, 1.0], size=(n_resamples, len(d)))
    null = np.abs((signs * d).mean(axis=1))
    return float((1 + np.sum(null >= observed - 1e-12)) / (n_resamples + 1))


def classification_scores(labels: Sequence[str], predictions: Sequence[str | None]) -> dict[str, float]:
    """Weighted accuracy (plain), unweighted accuracy (mean per-class recall) and macro-F1 over true classes.

    A prediction of None (unmappable answer) counts as wrong, never dropped.
    """
    y = list(labels)
    p = [x if x is not None else "__none__" for x in predictions]
    if not y:
        return {"wa": float("nan"), "ua": float("nan"), "macro_f1": float("nan"), "n": 0}
    classes = sorted(set(y))
    wa = float(np.mean([a == b for a, b in zip(y, p)]))
    recalls, f1s = [], []
    for c in classes:
        tp = sum(1 for a, b in zip(y, p) if a == c and b == c)
        fn = sum(1 for a, b in zip(y, p) if a == c and b != c)
        fp = sum(1 for a, b in zip(y, p) if a != c and b == c)
        recalls.append(tp / (tp + fn) if tp + fn else 0.0)
        f1s.append(2 * tp / (2 * tp + fp + fn) if tp else 0.0)
    return {"wa": wa, "ua": float(np.mean(recalls)), "macro_f1": float(np.mean(f1s)), "n": len(y)}


def paired_bootstrap_ua(labels: Sequence[str], base: Sequence[str | None], other: Sequence[str | None],
                        n_resamples: int = 2000, seed: int = 0, alpha: float = 0.05) -> dict[str, Any]:
    """95 % CI of UA(other) - UA(base) in UA points (0-1), resampling the same items for both (paired).

    UA is a mean of per-class recalls, not a mean over items, so each resample recomputes both UAs. With fewer
    than two items there is no interval (bounds None, `note` says so).
    """
    y, a, b = list(labels), list(base), list(other)
    if not len(y) == len(a) == len(b):
        raise ValueError(f"paired predictions need the same items: {len(y)} labels, {len(a)} and {len(b)} predictions")
    def ua(idx: Sequence[int], p: list[str | None]) -> float:
        return classification_scores([y[i] for i in idx], [p[i] for i in idx])["ua"]

    every = range(len(y))
    out: dict[str, Any] = {"diff": ua(every, b) - ua(every, a) if y else float("nan"), "n_items": len(y),
                           "ci_low": None, "ci_high": None, "n_resamples": n_resamples}
    if len(y) < 2:
        out["note"] = "fewer than 2 paired items: no confidence interval"
        return out
    rng = np.random.default_rng(seed)
    diffs = [ua(idx, b) - ua(idx, a) for idx in rng.integers(0, len(y), size=(n_resamples, len(y)))]
    out["ci_low"], out["ci_high"] = (float(x) for x in np.quantile(diffs, [alpha / 2, 1 - alpha / 2]))
    return out
