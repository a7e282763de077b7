"""Methods compared by GUIM-Bench: baselines and GUIM, one small class each.

A method learns from the train part of the silver tables and returns :class:`Embeddings`:
one vector per item (rows by item_idx) and K vectors + K weights per user, computed from the
user's test input (train + valid events). Every task reads only these, so a new baseline is
one class::

    class MyMethod(Method):
        name = "mine"
        def embed(self, data, seed):
            items = ...                     # (V, d)
            users = ...                     # (U, K, d) from data.test_input(u)
            return Embeddings(items, users)

and one line in :data:`METHODS` (or ``bench.run_suite(..., methods=[MyMethod(cfg)])``).
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable

import numpy as np

from ...schemas import FIRST_ITEM_INDEX, VALID


SCALED_LOGITS = (1.0, 10.0, 30.0, 100.0)   # logit_scales of a method whose scores are not a softmax's logits


@dataclass
class Embeddings:
    """What a method hands to the tasks."""

    items: np.ndarray                    # (V, d) item vectors by item_idx (rows 0..2 unused)
    users: np.ndarray                    # (U, K, d) user interests, in BenchData.user_ids order
    weights: np.ndarray | None = None    # (U, K) interest weights (uniform if None)
    scorer: Callable | None = None       # (users (B,K,d), weights (B,K), items (V,d)) -> (B,V); default max over K
    profile: np.ndarray | None = None    # (U, p) the method's fixed-length user vector for probes (None: user_matrix's mean)
    rerank: Callable | None = None       # (rows (B,), scores (B,V)) -> (B,V) ranking scores (the transition prior)
    valid_users: np.ndarray | Callable | None = None  # (U, K, d) interests from the train part alone (the valid
                                           # input), or a function computing them, called only when the transition
                                           # prior's weight is chosen on valid (add_transition_prior)
    logit_scales: tuple = (1.0,)         # factors that turn score into softmax logits, tried on valid with the prior
                                         # ((1,): the scores are a softmax's logits already)
    transition_weight: float | None = None   # the prior's weight in rerank (None: no prior fitted)
    transition_scale: float | None = None    # the logit scale chosen with it
    _top: dict = field(default_factory=dict, repr=False)

    def __post_init__(self):
        self.items = np.asarray(self.items, dtype=np.float32)
        self.users = np.asarray(self.users, dtype=np.float32)
        if self.users.ndim == 2:
            self.users = self.users[:, None, :]  # (U, 1, d)
        if self.weights is None:
            self.weights = np.full(self.users.shape[:2], 1.0 / self.users.shape[1], dtype=np.float32)
        if self.users.shape[-1] != self.items.shape[-1]:
            raise ValueError(f"user dim {self.users.shape[-1]} != item dim {self.items.shape[-1]}")

    def score(self, rows: np.ndarray) -> np.ndarray:
        """(B, V) user-item scores for user rows ``rows``: max over interests unless a scorer is set,
        then ``rerank`` if the method has one."""
        s = self.model_score(self.users[rows], self.weights[rows])
        return s if self.rerank is None else np.asarray(self.rerank(rows, s), dtype=np.float32)

    def model_score(self, users: np.ndarray, weights: np.ndarray) -> np.ndarray:
        """(B, K, d) interests and (B, K) weights -> (B, V) the method's own scores (no rerank)."""
        if self.scorer is not None:
            return np.asarray(self.scorer(users, weights, self.items), dtype=np.float32)
        return np.einsum("bkd,vd->bkv", users, self.items).max(axis=1)  # (B, V)

    def train_part_users(self) -> np.ndarray:
        """(U, K, d) ``valid_users``, computed if given as a function."""
        v = self.valid_users() if callable(self.valid_users) else self.valid_users
        v = np.asarray(v, dtype=np.float32)
        return v[:, None, :] if v.ndim == 2 else v

    def user_matrix(self) -> np.ndarray:
        """(U, p) one vector per user for probes: ``profile`` when the method has one (GUIM's
        ``Embedder.user_vector``), else the weight-averaged interests (p = d)."""
        if self.profile is not None:
            return np.asarray(self.profile, dtype=np.float32)
        return np.einsum("uk,ukd->ud", self.weights, self.users)

    def top_items(self, data, k: int, chunk: int = 512) -> np.ndarray:
        """(U, k) item_idx ranked best first over ALL items, excluding reserved indices and the
        user's earlier (test-input) items (the published leaderboards' protocol); -1 pads a list when fewer than k
        items are left. Cached per k."""
        k = min(k, data.n_items)
        if k not in self._top:
            out = np.zeros((data.n_users, k), dtype=np.int64)
            for s in range(0, data.n_users, chunk):
                rows = np.arange(s, min(s + chunk, data.n_users))
                sc = self.score(rows)  # (B, V)
                sc[:, :FIRST_ITEM_INDEX] = -np.inf
                for j, u in enumerate(rows):
                    sc[j, data.test_input(u)] = -np.inf
                part = np.argpartition(-sc, k - 1, axis=1)[:, :k]  # (B, k) unordered
                order = np.argsort(-np.take_along_axis(sc, part, 1), axis=1, kind="stable")
                top = np.take_along_axis(part, order, 1)  # (B, k)
                out[rows] = np.where(np.isneginf(np.take_along_axis(sc, top, 1)), -1, top)
            self._top[k] = out
        return self._top[k]


class Unavailable(Exception):
    """The method cannot run in this workspace (e.g. no registered model); the message says why.
    Reported as skipped, unlike any other exception, which is a failure."""


class Method:
    """A representation learner: ``embed(data, seed)`` -> :class:`Embeddings`."""

    name = "method"
    seeded = True  # False: deterministic, run once whatever --seeds says
    reads_content = False  # True: the item vectors read item content (category, tags, ...)
    refits = True  # False: a fixed model that cannot be fitted again on another view of the data

    def __init__(self, cfg):
        self.cfg = cfg            # the whole Config; bench settings in cfg.bench

    def embed(self, data, seed: int) -> Embeddings:
        """Fit on ``data``'s train part (never on a user in ``data.holdout``) and embed."""
        raise NotImplementedError

    def content_blind(self) -> "Method | None":
        """The same method with item content withheld from its item vectors, for the tasks whose
        labels are that content; None when it reads none or cannot be refitted without it."""
        return None


def add_transition_prior(emb: Embeddings, data, tc, batch: int = 512) -> None:
    """Give a method the transition prior GUIM's trainer gives GUIM (``train.transition_window`` > 0;
    model/transitions.py), chosen the same way, so a gain from it is not GUIM's alone.

    The pairs are counted with ``tc.transition_window``, ``tc.transition_decay`` and
    ``tc.transition_follow``, as of the ranked split as the trainer counts them. The weight
    (``tc.transition_weights``, and 0: the method alone) and the factor turning the method's scores
    into logits (``emb.logit_scales``) are chosen by NDCG@20 of each user's first valid event,
    ranked from their train part (``emb.valid_users``) with the train parts' pairs over the whole
    catalogue, the train items excluded (a tie goes to the smaller weight). ``emb`` then ranks with
    ``rerank`` from each user's test input, the pairs of the train and valid parts, and records the
    weight in ``transition_weight``. Nothing happens when the prior is off, when the method reranks
    already (GUIM's checkpoint carries its own prior), or when it has no ``valid_users``."""
    from ...data import rank_metrics

    if tc.transition_window <= 0 or emb.rerank is not None or emb.valid_users is None:
        return
    prior = bench_prior(data, tc, data.train_items)
    valid = emb.train_part_users()                                     # (U, K, d)
    users = [u for u in range(data.n_users) if len(data.train_items(u)) and len(data.part(u, (VALID,)))]
    choices = [(0.0, 1.0)] + [(float(w), float(c)) for w in sorted(set(map(float, tc.transition_weights)) - {0.0})
                              for c in emb.logit_scales]
    ndcg = dict.fromkeys(choices, 0.0)
    for s in range(0, len(users), batch):
        rows = np.array(users[s:s + batch])
        seen = [data.train_items(u) for u in rows]
        target = np.array([data.part(u, (VALID,))[0] for u in rows])
        history = latest_items(seen, prior.follow)
        z = emb.model_score(valid[rows], emb.weights[rows])  # (B, V)
        z[:, :FIRST_ITEM_INDEX] = -np.inf
        parts = None                       # the factor's log softmax (P is the same for every factor)
        for w, c in sorted(choices, key=lambda k: (k[1], k[0])):            # factor by factor
            if w > 0 and (parts is None or parts[0] != c):
                parts = c, prior.parts(z * np.float32(c), history, like=parts and parts[1])
            ranked = prior.mix(parts[1], w) if w > 0 else z
            ndcg[(w, c)] += rank_metrics(ranked, target, seen, ks=(20,))["ndcg@20"]
    w, c = max(choices, key=lambda k: (ndcg[k], -k[0], -k[1]))
    emb.transition_weight, emb.transition_scale = w, c
    if w <= 0:
        return
    prior = bench_prior(data, tc, data.test_input)   # the test ranking counts every event before the test split
    prior.weight = w
    emb.rerank = latest_items_rerank(data, lambda s, history: prior.blend(s * np.float32(c), history), prior.follow)


def bench_prior(data, tc, part: Callable):
    """The transition prior of ``part(u)`` (``data.train_items`` or ``data.test_input``) over every user
    row but the held-out ones (``data.holdout``: no method learns from them, as GUIM's trainer skips
    them), with the trainer's ``transition_window``, ``transition_decay`` and ``transition_follow``."""
    from ...model.transitions import TransitionPrior

    held = {data.user_row[u] for u in data.holdout}
    return TransitionPrior.fit([part(u) for u in range(data.n_users) if u not in held], data.n_items,
                               tc.transition_window, tc.transition_decay, tc.transition_follow)


def latest_items(histories, n: int) -> np.ndarray:
    """Item sequences in time order -> (B, n) their ``n`` latest items, left-padded with 0 (no item)."""
    out = np.zeros((len(histories), n), np.int64)
    for r, x in enumerate(histories):
        x = np.asarray(x)[-n:]
        if len(x):
            out[r, n - len(x):] = x
    return out


def latest_items_rerank(data, ranked: Callable, follow: int = 1) -> Callable:
    """An :attr:`Embeddings.rerank` that calls ``ranked(scores, history)`` with the reserved columns at
    -inf (they are not items: out of any softmax) and each user's ``follow`` latest test-input items
    (:func:`latest_items`)."""
    history = latest_items([data.test_input(u) for u in range(data.n_users)], follow)

    def rerank(rows, s):
        s = np.array(s, dtype=np.float32)
        s[:, :FIRST_ITEM_INDEX] = -np.inf
        return ranked(s, history[rows])

    return rerank


def recent_mean(vectors: np.ndarray, items: np.ndarray, last: int) -> np.ndarray:
    """(d,) mean of the vectors of the ``last`` most recent ``items`` (zeros if none)."""
    items = items[-last:]
    return vectors[items].mean(0) if len(items) else np.zeros(vectors.shape[1], np.float32)


def methods_by_name() -> dict:
    """Method name -> class, for ``bench.methods``."""
    from .als import ALS
    from .guim import GuimModel, GuimTrained
    from .item2vec import Item2Vec
    from .sasrec import SASRec
    from .simple import Popularity, RandomVectors

    out = {c.name: c for c in (RandomVectors, Popularity, Item2Vec, ALS, SASRec, GuimModel)}
    out["guim_k1"] = lambda cfg: GuimTrained(cfg, k=1)
    out["guim_k4"] = lambda cfg: GuimTrained(cfg, k=4)
    return out
