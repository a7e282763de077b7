"""user_profile: linear probes from the user vector to each user attribute (labels_users).

The user vector is the method's fixed-length profile vector (``Embeddings.user_matrix``: GUIM's
``Embedder.user_vector``, else the weight-averaged mixture) over the test input. Per attribute, a
standardised logistic regression is cross-validated (``bench.probe_folds`` stratified folds):
AUC for a binary attribute, macro-F1 for a multi-class one (classes with fewer than
``bench.min_class_size`` users dropped). ``planted_interests`` (synthetic ground truth) is
probed per interest as a binary attribute, reported as the mean AUC. ML-100K: gender,
age_bucket, occupation. The headline ``mean`` averages the attributes' scores.

The probe has no valid split of its own, so a choice between candidate user vectors
(:func:`choose_on_valid`) is made on a held-out part of the users: the probes cross-validated
within the given user rows only, the others never read.
"""
from __future__ import annotations

import numpy as np

from ..metrics import auc, f1
from . import Skip, cv_predict

NAME = "user_profile"
HEADLINE = "mean"
ATTRIBUTES = ("gender", "age_bucket", "occupation", "purchase_power")


def _probe(x, y, cfg, name):
    keep = np.isin(y, [c for c, n in zip(*np.unique(y, return_counts=True)) if n >= cfg.min_class_size])
    x, y = x[keep], y[keep]
    classes = np.unique(y)
    if len(classes) < 2:
        return None
    if len(classes) == 2:
        return f"{name}_auc", auc(y == classes[1], cv_predict(x, y, cfg, "binary"))
    return f"{name}_macro_f1", f1(y, cv_predict(x, y, cfg, "multiclass"), "macro")


def evaluate(data, emb, cfg) -> dict:
    return score(emb.user_matrix(), data, cfg)


def score(x: np.ndarray, data, cfg, users: np.ndarray | None = None) -> dict:
    """Probe scores of the user vectors ``x`` (U, p), rows in ``data.user_ids`` order. ``users``:
    the user rows the probes may read (None = every labelled user); other rows of ``x`` are never
    read, so a choice made on these scores never sees the rest."""
    lu = data.labels_users
    rows = lu["user_id"].astype(str).map(data.user_row)
    lu, rows = lu[rows.notna()], rows[rows.notna()].astype(int).to_numpy()
    if users is not None:
        keep = np.isin(rows, users)
        lu, rows = lu[keep], rows[keep]
    x = x[rows]  # (n, p)
    out = {}
    for a in ATTRIBUTES:
        if a in lu.columns:
            m = lu[a].notna().to_numpy()
            r = _probe(x[m], lu[a][m].astype(str).to_numpy(), cfg, a)
            if r:
                out[r[0]] = r[1]
    if "planted_interests" in lu.columns:
        sets = [set(v) if v is not None else set() for v in lu["planted_interests"]]
        aucs = []
        for label in sorted(set().union(*sets)):
            y = np.array([label in s for s in sets])
            if cfg.min_class_size <= y.sum() <= len(y) - cfg.min_class_size:
                aucs.append(auc(y, cv_predict(x, y, cfg, "binary")))
        if aucs:
            out["planted_interests_auc"] = float(np.mean(aucs))
    if not out:
        if len(lu) == 0:
            raise Skip("no user attributes: this workspace ingested no users table (guim ingest --users FILE)")
        raise Skip("labels_users has no attribute with two classes of at least bench.min_class_size users")
    out["mean"] = float(np.mean(list(out.values())))
    return out


def choose_on_valid(candidates: dict, data, cfg, users: np.ndarray) -> tuple[str, dict]:
    """The candidate user vector with the best headline ``mean`` on the user rows ``users`` (the
    probes cross-validated within them), and every candidate's valid mean. ``candidates``: name ->
    (U, p) in ``data.user_ids`` order; rows outside ``users`` are never read. Ties keep the first."""
    valid = {name: score(x, data, cfg, users)[HEADLINE] for name, x in candidates.items()}
    return max(valid, key=valid.get), valid
