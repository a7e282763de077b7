"""Metrics of GUIM-Bench, pure numpy/scipy, each tested against hand-computed values.

Ranking metrics take one user's ranked list (best first) and that user's set of targets:
Recall@K = hits in the top K / number of targets (= HitRate@K with one target, as in
the published leaderboards); NDCG@K uses binary gains and the ideal DCG of min(K, |targets|) hits.
"""
from __future__ import annotations

import numpy as np


def recall_at_k(ranked, targets, k: int) -> float:
    """Share of ``targets`` found in the first ``k`` entries of ``ranked``."""
    t = set(np.asarray(targets).tolist())
    if not t:
        raise ValueError("recall_at_k: no targets")
    return len(t.intersection(np.asarray(ranked)[:k].tolist())) / len(t)


def hit_rate_at_k(ranked, targets, k: int) -> float:
    """1.0 when at least one target is in the first ``k`` entries, else 0.0."""
    return float(bool(set(np.asarray(targets).tolist()).intersection(np.asarray(ranked)[:k].tolist())))


def ndcg_at_k(ranked, targets, k: int) -> float:
    """Binary-gain NDCG@k: sum of 1/log2(rank+1) over hits (rank from 1) / the ideal sum."""
    t = set(np.asarray(targets).tolist())
    if not t:
        raise ValueError("ndcg_at_k: no targets")
    top = np.asarray(ranked)[:k].tolist()
    dcg = sum(1.0 / np.log2(r + 2) for r, item in enumerate(top) if item in t)
    idcg = sum(1.0 / np.log2(r + 2) for r in range(min(k, len(t))))
    return dcg / idcg


def coverage(covered_labels, future_labels) -> float:
    """Share of the distinct ``future_labels`` that appear among ``covered_labels``."""
    f = set(future_labels)
    if not f:
        raise ValueError("coverage: no future labels")
    return len(f.intersection(covered_labels)) / len(f)


def auc(labels, scores) -> float:
    """Area under the ROC curve (Mann-Whitney U with average ranks for ties)."""
    from scipy.stats import rankdata

    y = np.asarray(labels).astype(bool)
    n_pos, n_neg = int(y.sum()), int((~y).sum())
    if n_pos == 0 or n_neg == 0:
        raise ValueError("auc: needs both positive and negative labels")
    r = rankdata(np.asarray(scores, dtype=np.float64))
    return float((r[y].sum() - n_pos * (n_pos + 1) / 2) / (n_pos * n_neg))


def f1(y_true, y_pred, average: str) -> float:
    """F1 for class labels ('macro': mean of per-class F1 over classes in y_true or y_pred) or
    for (n, L) 0/1 indicator matrices ('micro': pooled TP/FP/FN over every label)."""
    if average == "micro":
        t, p = np.asarray(y_true).astype(bool), np.asarray(y_pred).astype(bool)
        tp, fp, fn = (t & p).sum(), (~t & p).sum(), (t & ~p).sum()
        return float(2 * tp / (2 * tp + fp + fn)) if tp + fp + fn else 0.0
    if average != "macro":
        raise ValueError(f"f1: unknown average {average!r} (macro | micro)")
    t, p = np.asarray(y_true), np.asarray(y_pred)
    out = []
    for c in np.union1d(t, p):
        tp, fp, fn = ((t == c) & (p == c)).sum(), ((t != c) & (p == c)).sum(), ((t == c) & (p != c)).sum()
        out.append(2 * tp / (2 * tp + fp + fn))
    return float(np.mean(out))


def spearman(x, y) -> float:
    """Spearman rank correlation (Pearson correlation of average ranks); 0.0 if either is constant."""
    from scipy.stats import rankdata

    rx, ry = rankdata(x), rankdata(y)
    if rx.std() == 0 or ry.std() == 0:
        return 0.0
    return float(np.corrcoef(rx, ry)[0, 1])


def precision_at_k(neighbour_labels, own_labels, k: int) -> float:
    """Share of the first ``k`` neighbours that share at least one label with the item."""
    own = set(own_labels)
    top = list(neighbour_labels)[:k]
    return sum(bool(own.intersection(n if isinstance(n, (set, frozenset)) else {n})) for n in top) / k


def spread(values) -> dict:
    """Mean, sample standard deviation (ddof = 1) and the half-width of the 95 % t-interval of the
    mean (t quantile with n - 1 degrees of freedom) of per-seed values; one value has no spread (0)."""
    from scipy.stats import t as student

    v = np.asarray(values, dtype=np.float64)
    n = len(v)
    sd = float(v.std(ddof=1)) if n > 1 else 0.0
    half = float(student.ppf(0.975, n - 1) * sd / np.sqrt(n)) if n > 1 else 0.0
    return {"mean": float(v.mean()), "std": sd, "ci95": half, "values": [float(x) for x in v]}


def level(a: dict, b: dict) -> bool:
    """True when the 95 % intervals of two :func:`spread` results overlap: neither beats the other."""
    return a["mean"] - a["ci95"] <= b["mean"] + b["ci95"] and b["mean"] - b["ci95"] <= a["mean"] + a["ci95"]
