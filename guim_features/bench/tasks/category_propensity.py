"""category_propensity: will this user act in this category in the test window? AUC.

Audience targeting: for every (user, category) pair, label 1 when one of the user's
test-window items (labels_future, split = test) is in the category (or carries the tag when
items have no category). The score of a pair is the user's best score over the category's
items in scope. AUC over all pairs.
"""
from __future__ import annotations

import numpy as np

from ...schemas import TEST
from ..metrics import auc
from . import Skip, item_groups, scope_items

NAME = "category_propensity"
HEADLINE = "auc"


def evaluate(data, emb, cfg) -> dict:
    groups = item_groups(data)
    cats = sorted(set().union(*groups))
    if len(cats) < 2:
        raise Skip("labels_items has fewer than two categories")
    scope = scope_items(data, cfg)
    members = [scope[[c in groups[i] for i in scope]] for c in cats]
    lf = data.labels_future
    lf = lf[(lf["split"] == TEST) & lf["item_idx"].notna()]
    future = {}
    for uid, i in zip(lf["user_id"].astype(str), lf["item_idx"].astype(int)):
        if uid in data.user_row:
            future.setdefault(data.user_row[uid], set()).update(groups[i])
    users = np.array(sorted(future))
    if len(users) == 0:
        raise Skip("no user has a test-window item")
    labels, scores = [], []
    for s in range(0, len(users), 512):
        rows = users[s:s + 512]
        sc = emb.score(rows)  # (B, V)
        for c, m in zip(cats, members):
            if len(m):
                scores.append(sc[:, m].max(1))
                labels.append([c in future[u] for u in rows])
    return {"auc": auc(np.concatenate(labels), np.concatenate(scores))}
