"""next_item: full-ranking next-item prediction on the test split (the published leaderboards' protocol).

Each user is represented from their test input (train + valid events); ALL items are ranked,
none sampled, excluding the reserved indices and the user's earlier items. Targets are the
user's test items that are not among those earlier items (with repeat behaviours an earlier
item cannot be recommended again); users left without a target are not counted.
Recall@K (= HitRate@K with one target), NDCG@K and HitRate@K averaged over users.
"""
from __future__ import annotations

import numpy as np

from ..metrics import hit_rate_at_k, ndcg_at_k, recall_at_k
from . import Skip

NAME = "next_item"
HEADLINE = "recall@20"


def evaluate(data, emb, cfg) -> dict:
    top = emb.top_items(data, 50)  # (U, 50)
    out = {"recall@10": [], "recall@20": [], "recall@50": [], "ndcg@10": [], "ndcg@20": [], "hit_rate@50": []}
    for u in range(data.n_users):
        t = np.setdiff1d(data.test_targets(u), data.test_input(u))
        if len(t) == 0:
            continue
        for k in (10, 20, 50):
            out[f"recall@{k}"].append(recall_at_k(top[u], t, k))
        for k in (10, 20):
            out[f"ndcg@{k}"].append(ndcg_at_k(top[u], t, k))
        out["hit_rate@50"].append(hit_rate_at_k(top[u], t, 50))
    if not out["recall@20"]:
        raise Skip("no user has a test item outside their earlier items")
    return {k: float(np.mean(v)) for k, v in out.items()}
