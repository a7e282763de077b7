"""category_propensity: will this user act in this category in the test window? AUC.

Audience targeting: for a category, rank the users. Label 1 when one of the user's test-window
items (labels_future, split = test) is in the category (or carries the tag when items have no
category); the user's score for the category is their best score over its items in scope.
AUC per category over the users, averaged over categories with both labels (macro): pooling
all pairs would reward a category-size prior (a random vector's max over a big category is
high, and big categories are bought more), which says nothing about the users.
"""
from __future__ import annotations

import numpy as np

from ...schemas import TEST
from ..metrics import auc
from . import Skip, item_groups, scope_items

NAME = "category_propensity"
HEADLINE = "auc"
CONTENT_LABELS = True   # categories/tags are labels here and inputs of GUIM's item tower


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
    labels, scores = np.zeros((len(users), len(cats)), bool), np.zeros((len(users), len(cats)))
    for s in range(0, len(users), 512):
        rows = users[s:s + 512]
        sc = emb.score(rows)  # (B, V)
        for j, (c, m) in enumerate(zip(cats, members)):
            if len(m):
                scores[s:s + len(rows), j] = sc[:, m].max(1)
                labels[s:s + len(rows), j] = [c in future[u] for u in rows]
    aucs = [auc(labels[:, j], scores[:, j]) for j in range(len(cats))
            if len(members[j]) and 0 < labels[:, j].sum() < len(users)]
    if not aucs:
        raise Skip("no category has both users who act in it and users who do not")
    return {"auc": float(np.mean(aucs))}
