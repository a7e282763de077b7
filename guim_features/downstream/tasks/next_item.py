"""next_item: full-ranking next-item prediction on the test split (the published leaderboards' protocol).

Each user is represented from their test input (train + valid events); ALL items are ranked,
none sampled, excluding the reserved indices and the user's earlier items. Targets are the
user's distinct test items; a target that repeats an earlier item cannot be ranked, so it is a
miss and stays in the denominator, as in the published protocol (every user with a test event
counts). ``repeat_target_users`` is how many users have such a target (a fact about the data,
the same for every method). Recall@K (= HitRate@K with one target), NDCG@K and HitRate@K
averaged over users.
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
    repeats = 0
    for u in range(data.n_users):
        t = np.unique(data.test_targets(u))
        if len(t) == 0:
            continue
        repeats += bool(np.isin(t, data.test_input(u)).any())
        for k in (10, 20, 50):
            out[f"recall@{k}"].append(recall_at_k(top[u], t, k))
        for k in (10, 20):
            out[f"ndcg@{k}"].append(ndcg_at_k(top[u], t, k))
        out["hit_rate@50"].append(hit_rate_at_k(top[u], t, 50))
    if not out["recall@20"]:
        raise Skip("no user has a test item")
    return {**{k: float(np.mean(v)) for k, v in out.items()}, "repeat_target_users": float(repeats)}
