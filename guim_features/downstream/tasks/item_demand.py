"""item_demand: an item's next-window interaction count from its vector. Spearman.

The count is the item's interactions in the valid + test windows (labels_future). A ridge
regression from the item vector to log(1 + count) is cross-validated over the items in scope
(``bench.probe_folds`` folds); the score is the Spearman correlation between out-of-fold
predictions and the counts.
"""
from __future__ import annotations

import numpy as np

from ..metrics import spearman
from . import Skip, cv_predict, scope_items

NAME = "item_demand"
HEADLINE = "spearman"


def evaluate(data, emb, cfg) -> dict:
    items = scope_items(data, cfg)
    lf = data.labels_future.dropna(subset=["item_idx"])
    counts = np.bincount(lf["item_idx"].astype(int), minlength=data.n_items)[items]  # (n,)
    if len(items) < 2 * cfg.probe_folds or counts.std() == 0:
        raise Skip("too few items in scope, or every item has the same next-window count")
    pred = cv_predict(emb.items[items], np.log1p(counts), cfg, "regression")
    return {"spearman": spearman(pred, counts)}
