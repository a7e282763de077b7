"""similar_items: precision@N of same-category items among each item's nearest neighbours.

Items in scope (warm by default) that have a category (else tags); neighbours by cosine
similarity among those items, the item itself excluded; precision@``bench.neighbours`` = share
of neighbours sharing a category/tag with the item, averaged over (at most 5,000 sampled,
fixed seed) query items. A zero vector (an item a method cannot represent) has no neighbours
better than chance.
"""
from __future__ import annotations

import numpy as np

from ..metrics import precision_at_k
from . import Skip, item_groups, scope_items

NAME = "similar_items"
HEADLINE = "precision@10"
CONTENT_LABELS = True   # categories/tags are labels here and inputs of GUIM's item tower
MAX_QUERIES = 5000


def evaluate(data, emb, cfg) -> dict:
    groups = item_groups(data)
    items = np.array([i for i in scope_items(data, cfg) if groups[i]])
    n = cfg.neighbours
    if len(items) <= n:
        raise Skip(f"fewer than {n + 1} items in scope have a category or tags")
    v = emb.items[items].astype(np.float64)  # (n_items, d)
    v /= np.maximum(np.linalg.norm(v, axis=1, keepdims=True), 1e-12)
    q = np.random.default_rng(0).permutation(len(items))[:MAX_QUERIES]
    vals = []
    for s in range(0, len(q), 1024):
        rows = q[s:s + 1024]
        sim = v[rows] @ v.T  # (B, n_items)
        sim[np.arange(len(rows)), rows] = -np.inf
        nn = np.argsort(-sim, axis=1, kind="stable")[:, :n]  # (B, n)
        for r, nb in zip(rows, nn):
            vals.append(precision_at_k([groups[items[j]] for j in nb], groups[items[r]], n))
    return {f"precision@{n}": float(np.mean(vals))}
