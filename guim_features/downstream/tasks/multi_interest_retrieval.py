"""multi_interest_retrieval: users never trained on, each interest retrieving its own items.

The multi-interest literature's protocol (ComiRec, Cen et al. 2020; REMI, 2023): a share
``bench.holdout_users`` of the users (fixed seed) is held out entirely, and every method is
fitted again without them (:meth:`BenchData.user_holdout_view`; the suite does the second fit).
A held-out user is encoded from the first 80 % of their events; the targets are the distinct
items of the remaining 20 %. Each of the user's K interests retrieves its own top N over ALL
items (the reserved indices excluded; earlier items are not, as in ComiRec) by that interest's
own score, and the K lists are merged into the top N by ``bench.mi_merge``:

- ``max`` (ComiRec's merge): an item found by several interests keeps its best single-interest
  score. That merged list is exactly the top N of max_k s_k(item), which is what is computed.
- ``model``: the union of the K lists is ranked by the method's own user-item score (GUIM's
  weighted ``lse`` mixture), as ``guim recommend`` merges its per-interest ANN candidates. An
  interest the model gives almost no weight still retrieves its N items, but they rank by the
  mixture, so a dead interest cannot flood the list with its own high cosines.

A single-vector method retrieves with its one vector: both merges give the same list. Under
``model`` the max merge's Recall@50 is reported beside it (``recall@50_max_merge``).
Recall@N = distinct targets found / distinct targets, HitRate@N = 1 if any; averaged over the
held-out users. Headline Recall@50. ``bench.holdout_scored=valid`` scores a disjoint draw of
users instead, with the test draw kept out of the fit too: settings are chosen there.
"""
from __future__ import annotations

import numpy as np

from ...errors import GuimError
from ...schemas import FIRST_ITEM_INDEX
from ..metrics import hit_rate_at_k, recall_at_k
from . import Skip

NAME = "multi_interest_retrieval"
HEADLINE = "recall@50"
INPUT_SHARE = 0.8


def view(data, cfg):
    """The data this task's methods are fitted on: the user-holdout view."""
    return data.user_holdout_view(cfg.holdout_users, INPUT_SHARE, scored=cfg.holdout_scored)


def each_interest_scores(emb, rows: np.ndarray):
    """Yields, for k = 0 .. K-1, interest k's own (B, V) scores: the method's scorer applied to
    that interest alone, else the dot product."""
    users = emb.users[rows]                                        # (B, K, d)
    one = np.ones((len(rows), 1), np.float32)
    for k in range(users.shape[1]):
        u = users[:, k:k + 1]                                      # (B, 1, d)
        yield (np.asarray(emb.scorer(u, one, emb.items), np.float32) if emb.scorer is not None
               else u[:, 0] @ emb.items.T)                         # (B, V)


MERGES = ("max", "model")


def _top(sc: np.ndarray, n: int) -> np.ndarray:
    """(B, n) column indices of the n highest scores per row, best first (ties: lower index)."""
    part = np.argpartition(-sc, n - 1, axis=1)[:, :n]
    order = np.lexsort((part, -np.take_along_axis(sc, part, 1)), axis=1)
    return np.take_along_axis(part, order, 1)


def merged_tops(emb, rows: np.ndarray, n: int, merges=MERGES) -> dict:
    """{merge: (B, n) item_idx of the merged per-interest retrieval, best first} for each of
    ``merges`` (see the module), the K interests scored once for all of them."""
    bad = [m for m in merges if m not in MERGES]
    if bad:
        raise GuimError(f"bench.mi_merge must be one of {', '.join(MERGES)}, got {bad[0]!r}")
    union = "model" in merges and emb.users.shape[1] > 1
    n = min(n, len(emb.items) - FIRST_ITEM_INDEX)
    best = found = None                         # (B, V) max_k s_k; True where in some interest's top n
    for s in each_interest_scores(emb, rows):
        s[:, :FIRST_ITEM_INDEX] = -np.inf
        best = s if best is None else np.maximum(best, s)
        if union:
            found = np.zeros(s.shape, dtype=bool) if found is None else found
            np.put_along_axis(found, _top(s, n), True, axis=1)
    top_max = _top(best, n)
    out = {"max": top_max, "model": top_max}    # one interest: both merges are its own ranking
    if union:
        out["model"] = _top(np.where(found, emb.score(rows), -np.inf), n)   # the model's score on the union
    return {m: out[m] for m in merges}


def merged_top(emb, rows: np.ndarray, n: int, merge: str = "max") -> np.ndarray:
    """(B, n) item_idx of the merged per-interest retrieval under ``merge``, best first."""
    return merged_tops(emb, rows, n, (merge,))[merge]


def evaluate(data, emb, cfg) -> dict:
    rows = data.holdout_rows
    if len(rows) == 0:
        raise Skip("needs methods fitted without held-out users (the suite's user-holdout fit); "
                   "a method fitted on every user cannot be scored")
    merges = tuple(dict.fromkeys([cfg.mi_merge, "max"]))   # ComiRec's merge beside the configured one
    out = {"recall@20": [], "recall@50": [], "hit_rate@50": []}
    if len(merges) > 1:
        out["recall@50_max_merge"] = []
    for s in range(0, len(rows), 512):
        chunk = rows[s:s + 512]
        tops = merged_tops(emb, chunk, 50, merges)
        top = tops[cfg.mi_merge]
        for j, u in enumerate(chunk):
            t = np.unique(data.test_targets(u))
            out["recall@20"].append(recall_at_k(top[j], t, 20))
            out["recall@50"].append(recall_at_k(top[j], t, 50))
            out["hit_rate@50"].append(hit_rate_at_k(top[j], t, 50))
            if len(merges) > 1:
                out["recall@50_max_merge"].append(recall_at_k(tops["max"][j], t, 50))
    return {k: float(np.mean(v)) for k, v in out.items()}
