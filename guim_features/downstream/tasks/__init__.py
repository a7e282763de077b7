"""The GUIM-Bench downstream tasks, one module each with its protocol in the docstring.

A task module has ``NAME``, ``HEADLINE`` (the metric the promotion gate watches) and
``evaluate(data, emb, cfg) -> {metric: value}`` where ``cfg`` is the BenchConfig; every
metric is "higher is better" (next_item's count of repeat-target users, a fact about the data,
is the one exception). A task the data cannot support raises :class:`Skip` with the reason,
which the report prints instead of a number. Optional:

- ``CONTENT_LABELS = True``: the labels are item content (category, tags) that an item tower may
  read as input; a method whose item vectors read content is scored there by a content-blind fit,
  and its content-aware scores are reported as ``<metric>_content_aware``.
- ``view(data, cfg) -> BenchData``: the methods are fitted again on that view for this task
  (e.g. users held out of fitting).
"""
from __future__ import annotations

import importlib

import numpy as np

NAMES = ("next_item", "interest_coverage", "user_profile", "item_category", "similar_items",
         "purchase_propensity", "category_propensity", "item_demand", "multi_interest_retrieval")
CONTENT_AWARE = "_content_aware"   # suffix of a content-aware score on a CONTENT_LABELS task


def headline(task, metrics: dict) -> str:
    """The metric of ``metrics`` the gate watches: the task's HEADLINE (content-blind, else
    content-aware), else its first metric (content-blind first)."""
    for k in (task.HEADLINE, task.HEADLINE + CONTENT_AWARE):
        if k in metrics:
            return k
    return next((k for k in metrics if not k.endswith(CONTENT_AWARE)), next(iter(metrics)))


class Skip(Exception):
    """The data cannot support this task (or metric); the message says why."""


def load(name: str):
    """The task module ``name``; an unknown name raises GuimError listing the known ones."""
    from ...errors import GuimError

    if name not in NAMES:
        raise GuimError(f"unknown bench task {name!r} in bench.tasks (known: {', '.join(NAMES)})")
    return importlib.import_module(f"{__name__}.{name}")


def item_groups(data) -> list:
    """V sets of "categories" per item_idx: {category} where the item has one, else its tags."""
    cats = data.item_category
    return [frozenset([c]) if c is not None else t for c, t in zip(cats, data.item_tags)]


def scope_items(data, cfg) -> np.ndarray:
    """item_idx values the item tasks use: warm items (bench.item_scope=warm) or all real items."""
    from ...errors import GuimError
    from ...schemas import FIRST_ITEM_INDEX

    if cfg.item_scope == "warm":
        return data.warm_items
    if cfg.item_scope == "all":
        return np.arange(FIRST_ITEM_INDEX, data.n_items)
    raise GuimError(f"bench.item_scope must be warm or all, got {cfg.item_scope!r}")


def cv_predict(x: np.ndarray, y: np.ndarray, cfg, kind: str) -> np.ndarray:
    """Out-of-fold predictions of a standardised linear probe (``bench.probe_folds`` folds).

    kind: 'binary' -> decision scores (n,); 'multiclass' -> labels (n,);
    'multilabel' (y: (n, L) 0/1) -> 0/1 predictions (n, L); 'regression' -> values (n,).
    Logistic regressions use C = 0.1 and newton-cg (fast and stable on 10^3-10^4 examples).
    """
    from threadpoolctl import threadpool_limits

    with threadpool_limits(1):  # tiny problems: threads on shared cores only add contention
        return _cv_predict(x, y, cfg.probe_folds, kind)


def _cv_predict(x, y, folds: int, kind: str):
    from sklearn.linear_model import LogisticRegression, RidgeCV
    from sklearn.model_selection import KFold, StratifiedKFold, cross_val_predict
    from sklearn.multiclass import OneVsRestClassifier
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    if kind == "regression":
        model = make_pipeline(StandardScaler(), RidgeCV(alphas=np.logspace(-2, 3, 6)))
        return cross_val_predict(model, x, y, cv=KFold(folds, shuffle=True, random_state=0))
    lr = LogisticRegression(max_iter=300, C=0.1, tol=1e-3, solver="newton-cg")
    if kind == "multilabel":
        model = make_pipeline(StandardScaler(), OneVsRestClassifier(lr))
        return cross_val_predict(model, x, y, cv=KFold(folds, shuffle=True, random_state=0))
    model = make_pipeline(StandardScaler(), lr)
    cv = StratifiedKFold(folds, shuffle=True, random_state=0)
    method = "decision_function" if kind == "binary" else "predict"
    return cross_val_predict(model, x, y, cv=cv, method=method)
