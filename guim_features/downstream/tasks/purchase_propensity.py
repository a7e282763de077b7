"""purchase_propensity: will this user buy (or rate highly) this item in the test window? AUC.

Pairs, the same for every method (fixed seed): each test-window interaction of a user
(labels_future, split = test), positive when its behaviour is in
``bench.positive_behaviors`` (buy; ML-100K: rating 4 or 5), negative otherwise; plus, per such
interaction, one random item the user never touched, negative. The score is the method's
user-item score from the test input (no probe), so the AUC asks whether the embedding ranks
what a user will buy above what they will not.
"""
from __future__ import annotations

import numpy as np

from ...schemas import FIRST_ITEM_INDEX, TEST
from ..metrics import auc
from . import Skip

NAME = "purchase_propensity"
HEADLINE = "auc"


def pairs(data, cfg):
    """(rows, items, labels) of the task, built from labels_future with a fixed seed."""
    lf = data.labels_future
    lf = lf[(lf["split"] == TEST) & lf["item_idx"].notna()]
    rows = lf["user_id"].astype(str).map(data.user_row)
    lf, rows = lf[rows.notna()], rows[rows.notna()].astype(int).to_numpy()
    items = lf["item_idx"].astype(int).to_numpy()
    labels = lf["behavior"].isin(cfg.positive_behaviors).to_numpy()
    rng = np.random.default_rng(0)
    neg = rng.integers(FIRST_ITEM_INDEX, data.n_items, size=len(rows))
    for j, u in enumerate(rows):
        seen = set(data.seqs[u]["item_idx"].tolist())
        while neg[j] in seen:
            neg[j] = rng.integers(FIRST_ITEM_INDEX, data.n_items)
    return (np.concatenate([rows, rows]), np.concatenate([items, neg]),
            np.concatenate([labels, np.zeros(len(rows), bool)]))


def evaluate(data, emb, cfg) -> dict:
    rows, items, labels = pairs(data, cfg)
    if labels.sum() == 0:
        raise Skip(f"no test-window behaviour in bench.positive_behaviors {cfg.positive_behaviors}")
    scores = np.empty(len(rows))
    for u in np.unique(rows):
        m = rows == u
        scores[m] = emb.score(np.array([u]))[0, items[m]]
    return {"auc": auc(labels, scores)}
