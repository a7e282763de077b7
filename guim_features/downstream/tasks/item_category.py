"""item_category: linear probes from item vectors to item categories (labels_items).

Items in scope (``bench.item_scope``: warm items by default). Multi-class: the ``category``
field, cross-validated logistic regression, macro-F1 (categories with fewer than
``bench.min_class_size`` items dropped). Multi-label, where items carry several genres or
tags: one-vs-rest logistic regressions, micro-F1 over the tags held by at least
``bench.min_class_size`` items. Headline: the multi-label score when there is one, else the multi-class one.
NOTE: GUIM's item tower reads category and tags as input, so the suite scores it here with a
content-blind tower and reports the content-aware score separately (``CONTENT_LABELS``).
"""
from __future__ import annotations

import numpy as np

from ..metrics import f1
from . import Skip, cv_predict, scope_items

NAME = "item_category"
HEADLINE = "tags_micro_f1"  # else category_macro_f1 (the first metric)
CONTENT_LABELS = True   # categories/tags are labels here and inputs of GUIM's item tower


def evaluate(data, emb, cfg) -> dict:
    items = scope_items(data, cfg)
    out = {}
    cats = data.item_category[items]
    has = np.array([c is not None for c in cats])
    if has.any():
        y = cats[has].astype(str)
        labels, counts = np.unique(y, return_counts=True)
        keep = np.isin(y, labels[counts >= cfg.min_class_size])
        if len(labels[counts >= cfg.min_class_size]) >= 2:
            x = emb.items[items[has][keep]]  # (n, d)
            out["category_macro_f1"] = f1(y[keep], cv_predict(x, y[keep], cfg, "multiclass"), "macro")
    tags = [data.item_tags[i] for i in items]
    if np.mean([len(t) >= 2 for t in tags]) > 0.05:
        vocab, counts = np.unique([t for ts in tags for t in ts], return_counts=True)
        vocab = vocab[counts >= cfg.min_class_size]
        m = np.array([len(t) > 0 for t in tags])
        y = np.array([[v in t for v in vocab] for t, k in zip(tags, m) if k], dtype=int)  # (n, L)
        y = y[:, (y.sum(0) >= cfg.min_class_size) & (y.sum(0) <= len(y) - cfg.min_class_size)]
        if y.shape[1]:
            out["tags_micro_f1"] = f1(y, cv_predict(emb.items[items[m]], y, cfg, "multilabel"), "micro")
    if not out:
        raise Skip("labels_items has neither two categories nor multi-valued tags with enough items")
    return out
