"""interest_coverage: how many of a user's future interests the top 50 reaches.

Per user: the distinct categories (item category, else tags) of their test-window items; the
score is the share of them that at least one item of the user's top ``bench.coverage_k``
recommendations (next_item's ranking) belongs to; averaged over users with a labelled
future item. A mixture of K interests should cover more than one vector (paper, Sec. 3).
"""
from __future__ import annotations

import numpy as np

from ..metrics import coverage
from . import Skip, item_groups

NAME = "interest_coverage"
HEADLINE = "coverage"
CONTENT_LABELS = True   # categories/tags are labels here and inputs of GUIM's item tower


def evaluate(data, emb, cfg) -> dict:
    groups = item_groups(data)
    k = cfg.coverage_k
    top = emb.top_items(data, k)  # (U, k)
    vals = []
    for u in range(data.n_users):
        future = set().union(*(groups[i] for i in data.test_targets(u)))
        if future:
            vals.append(coverage(set().union(*(groups[i] for i in top[u] if i >= 0)), future))
    if not vals:
        raise Skip("no test item has a category or tag in labels_items")
    return {"coverage": float(np.mean(vals))}
