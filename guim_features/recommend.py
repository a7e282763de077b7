"""``guim recommend USER_ID [-k 20] [--exclude ID ...] [--exclude-seen]`` and :class:`Recommender`: multi-interest retrieval.

One Feast online lookup reads the user's mixture (K interest vectors, K weights, model_version);
the HNSW index is searched once per interest (one batched call); the union of candidates is
re-scored exactly against all K interests and merged by the configured rule:

- ``max``: s(u, v) = max_k u_k . v  (Yang et al. 2022 sec. 3.3);
- ``lse``: s(u, v) = tau log sum_k w_k exp(u_k . v / tau)  (the weighted mixture; tau = the model's
  temperature, recorded in the index meta at publish time).

Each item is reported with the interest that gave it its score, that interest's weight and the
score. Vectors and index from different model versions are refused; a user the online store
lacks gets the popular items recorded at publish time, flagged as a fallback.

Items the caller names in ``exclude`` are never returned, fallback included: an interest whose
search meets too many of them searches again, deeper by their number, so ``k`` items still come
back. ``exclude_seen=True`` (the CLI's ``--exclude-seen``) also excludes the user's ``seen_items``,
read in the same online lookup: the items of their events before the snapshot (``guim embed``),
newest first, at most ``embed.seen_max``.
Events after the snapshot are not in it; a service passes those (the session's purchases) in
``exclude``. A repository published before the feature existed has no ``seen_items``: the API
raises; a snapshot exported before it existed holds none: ``seen_excluded`` is then None. In both
cases the CLI excludes the user's bronze events instead (:func:`seen_items`), and says so.

With a transition prior (a model trained with ``train.transition_window``; ``guim publish`` stores
it beside the index) and the ``lse`` rule, the ranking is the trainer's: each candidate's
probability ``log((1 - w) softmax(score / tau) + w P(item | history))``, the softmax over the
whole catalogue (one (N, d) x (d, K) product per request up to ``publish.normaliser_sample`` items;
above it, the candidates exactly and the rest estimated from a fixed sample) and w the weight
chosen on valid. The
history it follows is ``last_item`` (the newest event a service knows of) and then the user's
``seen_items``, newest first: the model's ``follow`` latest of them, their rows mixed with weights
``decay ** g`` from the newest (model/transitions.py); their likely successors join the HNSW
candidates. Each item then reports that log-probability as its score and ``prior`` = P(item |
history); ``prior=False`` (the CLI's ``--no-prior``) ranks by the model alone.
"""
from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from .errors import GuimError


@dataclass
class Recommendation:
    user_id: str
    model_version: str | None
    items: list[dict] = field(default_factory=list)   # {item_id, score, interest, weight}
    fallback: bool = False                              # True: popular items, the user is unknown
    seen_excluded: int | None = None                    # exclude_seen: how many seen items were excluded
                                                        # (None: the row has no seen_items)
    last_item: str | None = None                        # the newest item the transition prior followed (None: not applied)
    followed: list[str] | None = None                   # every item it followed, newest first
    transition_weight: float | None = None              # its blend weight when applied


class Recommender:
    """Holds the Feast store and the item index; ``recommend(user_id, k)`` per request."""

    def __init__(self, cfg, store=None, index=None):
        from .ann import ItemIndex
        from .publish import USER_VIEW, ann_dir, repo_dir

        self.index = index or ItemIndex.load(ann_dir(cfg))
        if store is None:
            repo = repo_dir(cfg)
            if not (repo / "feature_store.yaml").exists():
                raise GuimError(f"no Feast repository at {repo}: run `guim publish` first")
            from feast import FeatureStore

            store = FeatureStore(repo_path=str(repo))
        self.store = store
        self.K = int(self.index.meta["K"])
        # an explicit --set publish.score=max|lse wins over the rule recorded at publish time
        self.rule = cfg.publish.score if cfg.publish.score != "model" else self.index.meta.get("score", "max")
        if self.rule not in ("max", "lse"):
            raise GuimError(f"unknown score rule {self.rule!r} in the index meta (expected max or lse)")
        self.tau = float(self.index.meta.get("temperature", 1.0))
        self.candidates = int(cfg.publish.candidates)
        self.has_seen = "seen_items" in {f.name for f in store.get_feature_view(USER_VIEW).features}
        self.features = [f"{USER_VIEW}:interest_{k}" for k in range(self.K)] + [
            f"{USER_VIEW}:weights", f"{USER_VIEW}:model_version"]
        self.seen_feature = f"{USER_VIEW}:seen_items"
        self.redis = cfg.publish.redis if cfg.publish.online_store == "redis" else None
        # the transition prior blends with the lse mixture's softmax, the form its weight was chosen for
        prior = self.index.meta.get("transitions") or {}
        self.prior_weight = (float(prior["weight"]) if self.index.transitions is not None and self.rule == "lse"
                             else None)
        self.follow, self.decay = int(prior.get("follow", 1)), float(prior.get("decay", 0.5))
        self._order = self._sorted = None                        # item ids sorted, built on the first exclusion
        self.normaliser = Normaliser(self.index.vectors, self.tau, int(cfg.publish.normaliser_sample))

    def lookup(self, user_id: str, seen: bool = False) -> dict:
        """The user's row from the online store (values None when unknown); ``seen``: with seen_items
        (up to embed.seen_max ids, so only read when asked for)."""
        features = self.features + ([self.seen_feature] if seen else [])
        try:
            return self.store.get_online_features(features=features,
                                                  entity_rows=[{"user_id": user_id}]).to_dict()
        except Exception as e:
            if self.redis is None:
                raise
            from .redis_store import redis_error

            raise redis_error(self.redis, e) from None

    def recommend(self, user_id: str, k: int = 20, exclude=(), exclude_seen: bool = False,
                  last_item: str | None = None, prior: bool = True) -> Recommendation:
        """The top ``k`` items for ``user_id``; item ids in ``exclude`` are never returned, nor, with
        ``exclude_seen``, the user's ``seen_items`` of the online store. With a published transition
        prior (and ``prior``), ranked by its blend from ``last_item`` and then the seen items (default:
        the seen items alone)."""
        if k < 1:
            raise GuimError(f"-k {k}: ask for at least one item")
        if isinstance(exclude, str):
            raise GuimError("exclude takes a list of item ids, not one string")
        if exclude_seen and not self.has_seen:
            raise GuimError("the published user view has no seen_items (published before it existed): run "
                            "`guim embed` and `guim publish` again, or pass the items to exclude")
        banned = {str(i) for i in exclude}
        follow = prior and self.prior_weight is not None and self.prior_weight > 0
        row = self.lookup(str(user_id), seen=exclude_seen or (follow and self.has_seen
                                                              and (last_item is None or self.follow > 1)))
        version = row["model_version"][0]
        seen = row["seen_items"][0] if "seen_items" in row else None   # None: unknown user or a snapshot without it
        history = [str(last_item)] if last_item is not None else []
        history += [i for i in (seen or []) if not history or i != history[0]]   # seen_items are newest first
        if not exclude_seen:
            seen = None
        banned.update(seen or [])
        n_seen = None if seen is None else len(seen)
        if version is None:
            popular = [i for i in self.index.meta.get("popular") or [] if i not in banned]
            if not popular:
                raise GuimError(f"user {user_id!r} is not in the online store (model version "
                                f"{self.index.model_version}) and no popular items were recorded")
            return Recommendation(str(user_id), None, [{"item_id": i, "score": None, "interest": None,
                                                         "weight": None} for i in popular[:k]], fallback=True,
                                  seen_excluded=n_seen)
        if version != self.index.model_version:
            raise GuimError(f"user {user_id!r} has vectors of model version {version} but the item index is of "
                            f"version {self.index.model_version}: run `guim publish --model-version "
                            f"{self.index.model_version}` (or publish {version} again) so both match")
        q = np.asarray([row[f"interest_{i}"][0] for i in range(self.K)], dtype=np.float32)   # (K, d)
        w = np.asarray(row["weights"][0], dtype=np.float32)                                  # (K,)
        ban = self._rows_of(banned)                                                          # (B,) sorted
        rows = self._search(q, self.candidates or k, ban)                                    # (K, n)
        cand = rows[rows >= 0]
        followed = [(i, r) for i, r in ((i, self._row_of(i)) for i in history[:self.follow]) if r is not None]
        follow = follow and len(followed) > 0
        if follow:
            succ, p_succ = self._successors([r for _, r in followed])
            cand = np.concatenate([cand, succ])                   # the likely next items are candidates too
        cand = np.unique(cand)                                                               # (C,)
        head = cand                                 # before exclusions: the softmax is over every item
        if len(ban):
            cand = cand[~np.isin(cand, ban, assume_unique=True)]
        score, best = self._merge(self.index.vectors[cand] @ q.T, w)                        # (C,), (C,)
        if follow:
            p = np.zeros(len(cand), np.float32)                                              # P(cand | last)
            inside = np.isin(succ, cand)
            p[np.searchsorted(cand, succ[inside])] = p_succ[inside]
            log_softmax = score / self.tau - self.normaliser(q, w, head)
            wt = self.prior_weight
            score = np.log1p(-wt) + log_softmax
            score[p > 0] = np.logaddexp(score[p > 0], np.log(wt * p[p > 0]))
        top = np.argsort(-score, kind="stable")[:k]
        ids = self.index.item_ids[cand[top]].tolist()
        items = [{"item_id": i, "score": s_, "interest": b, "weight": w_} for i, s_, b, w_ in
                 zip(ids, score[top].tolist(), best[top].tolist(), w[best[top]].tolist())]
        if follow:
            for it, x in zip(items, p[top].tolist()):
                it["prior"] = x
        return Recommendation(str(user_id), version, items, seen_excluded=n_seen,
                              last_item=followed[0][0] if follow else None,
                              followed=[i for i, _ in followed] if follow else None,
                              transition_weight=self.prior_weight if follow else None)

    def _row_of(self, item_id: str) -> int | None:
        """The index row of one item id, None when the index lacks it."""
        r = self._rows_of([item_id])
        return int(r[0]) if len(r) else None

    def _successors(self, rows: list) -> tuple[np.ndarray, np.ndarray]:
        """Index rows of the items followed, newest first -> (sorted rows, P(row | history)): their
        successor rows mixed with weights ``decay ** g``, renormalised over the rows given."""
        share = self.decay ** np.arange(len(rows), dtype=np.float64)
        share /= share.sum()
        parts = [self.index.successors(r) for r in rows]
        succ = np.concatenate([j for j, _ in parts])
        p = np.concatenate([v * np.float32(sh) for (_, v), sh in zip(parts, share)])
        out, inv = np.unique(succ, return_inverse=True)
        return out, np.bincount(inv, weights=p, minlength=len(out)).astype(np.float32)

    def _merge(self, s: np.ndarray, w: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """(C, K) interest scores and (K,) weights -> (C,) the rule's score and (C,) the interest behind it."""
        if self.rule == "max":
            return s.max(1), s.argmax(1)
        z = s / self.tau + np.log(np.clip(w, 1e-9, None))                                    # (C, K)
        m = z.max(1, keepdims=True)
        return self.tau * (m[:, 0] + np.log(np.exp(z - m).sum(1))), z.argmax(1)

    def _rows_of(self, ids) -> np.ndarray:
        """Sorted index rows of the item ids in ``ids`` (ids the index lacks are dropped): integer
        rows make the exclusion tests cheap (500 seen ids as strings cost ~0.5 ms per test)."""
        if not ids:
            return np.empty(0, dtype=np.int64)
        if self._order is None:                                  # once: a sorted view of the index's ids
            self._order = np.argsort(self.index.item_ids, kind="stable")
            self._sorted = self.index.item_ids[self._order]
        a = np.asarray(list(ids), dtype=str)
        pos = np.searchsorted(self._sorted, a).clip(0, len(self._sorted) - 1)
        return np.unique(self._order[pos[self._sorted[pos] == a]])

    def _search(self, q: np.ndarray, need: int, ban: np.ndarray) -> np.ndarray:
        """Index rows (K, n) holding each interest's ``need`` best items whose rows are not in ``ban``
        (sorted; banned rows included in the result, -1 = none). Searching ``len(ban)`` deeper
        always is enough, but the depth is what an HNSW search costs, and most of it is wasted when
        nothing banned is near: 500 seen items would make every interest search 520 deep for
        k = 20. So the first search goes ``need`` deeper, or as deep as the search explores anyway
        (HNSW's efSearch) when that is more, and only the interests left with fewer than ``need``
        allowed items search again, ``need + len(ban)`` deep (at most two searches)."""
        limit = min(need + len(ban), len(self.index.item_ids))
        depth = min(max(need + min(len(ban), need), int(self.index.meta.get("ef_search", 0))), limit)
        _, rows = self.index.search(q, depth)                                                # (K, depth)
        if not len(ban) or depth >= limit:
            return rows
        kept = (rows >= 0) & ~np.isin(rows, ban)
        short = np.flatnonzero(kept.sum(1) < need)
        if not len(short):
            return rows
        out = np.full((len(q), limit), -1, dtype=rows.dtype)
        out[:, :depth] = rows
        out[short] = self.index.search(q[short], limit)[1]
        return out


class Normaliser:
    """log sum_j exp(s(u, j) / tau) over a catalogue, s the ``lse`` mixture score: the normaliser of the
    softmax the transition prior's weight was chosen with, log sum_j sum_k w_k exp(u_k . v_j / tau).

    Up to ``sample_size`` items (or with ``sample_size`` 0) every item is scored. Above it that cost
    grows with the catalogue (d 64, K 4: ~0.12 s a request at a million items), so the ``head`` rows
    (the request's candidates: the interests' nearest items and the prior's successors, where the
    softmax's mass concentrates) count exactly, and the other items' sum is estimated from a fixed
    uniform sample of rows (drawn once, seeded), scaled to their number: unbiased for that sum, at
    a cost that does not grow with the catalogue (``bench/prior_normaliser.py``)."""

    def __init__(self, vectors: np.ndarray, tau: float, sample_size: int, seed: int = 0):
        if sample_size < 0:
            raise GuimError(f"publish.normaliser_sample={sample_size}: expected 0 (score every item) or a "
                            "number of items")
        self.vectors, self.tau, self.sample_size, self.seed = vectors, float(tau), int(sample_size), seed
        self.sample = None                     # (rows, their vectors contiguous), drawn on first use

    @property
    def exact(self) -> bool:
        return not self.sample_size or len(self.vectors) <= self.sample_size

    def __call__(self, q: np.ndarray, w: np.ndarray, head: np.ndarray) -> float:
        """(K, d) interests, (K,) weights and the head's (sorted, distinct) rows -> log normaliser."""
        log_w = np.log(np.clip(np.asarray(w, np.float32), 1e-9, None))
        if self.exact:
            return _logsumexp(self.vectors @ q.T / self.tau + log_w)
        if self.sample is None:
            n = len(self.vectors)
            rows = np.sort(np.random.default_rng(self.seed).choice(n, self.sample_size, replace=False))
            self.sample = rows, np.ascontiguousarray(self.vectors[rows])
        rows, vectors = self.sample
        tail = ~np.isin(rows, head)
        head_z = _logsumexp(self.vectors[head] @ q.T / self.tau + log_w) if len(head) else -np.inf
        if not tail.any():
            return head_z
        scale = np.log((len(self.vectors) - len(head)) / tail.sum())
        return float(np.logaddexp(head_z, _logsumexp(vectors[tail] @ q.T / self.tau + log_w) + scale))


def _logsumexp(x: np.ndarray) -> float:
    m = float(x.max())
    return m + float(np.log(np.exp(x - m).sum()))


def recommend(cfg, user_id: str, k: int = 20, exclude=(), exclude_seen: bool = False,
              last_item: str | None = None, prior: bool = True) -> Recommendation:
    """Python API: ``recommend(load_config(ws), "u42", k=20, exclude=["i7"], exclude_seen=True)``."""
    return Recommender(cfg).recommend(user_id, k, exclude, exclude_seen, last_item, prior)


def seen_items(cfg, user_id: str) -> list[str]:
    """Distinct item ids of ``user_id``'s events in bronze ``events`` (every behaviour), sorted;
    empty when the user has none."""
    from .publish import is_remote

    path = cfg.table("events")
    if is_remote(path):
        from pyspark.sql import functions as F

        from . import delta
        from .spark import get_spark

        rows = delta.read(get_spark(cfg.spark), path, "events").where(F.col("user_id") == str(user_id))
        rows = rows.select("item_id").distinct()
        return sorted(r["item_id"] for r in rows.collect())
    import pyarrow.compute as pc
    from deltalake import DeltaTable
    from deltalake.exceptions import TableNotFoundError

    try:
        ds = DeltaTable(path).to_pyarrow_dataset()
    except TableNotFoundError:
        raise GuimError(f"no bronze events table at {path}: --exclude-seen reads the user's events "
                        f"from it (run `guim ingest` first)") from None
    items = ds.to_table(columns=["item_id"], filter=pc.field("user_id") == str(user_id)).column("item_id")
    return sorted(set(items.to_pylist()))


def format_table(rec: Recommendation) -> str:
    if rec.fallback:
        head = (f"user {rec.user_id} is not in the online store: FALLBACK to the {len(rec.items)} most popular "
                f"items (not personalised)")
        return "\n".join([head] + [f"{r + 1:>3}  {it['item_id']}" for r, it in enumerate(rec.items)])
    seen = "" if rec.seen_excluded is None else f"; {rec.seen_excluded} seen items excluded"
    follow = rec.last_item is not None
    after = ", ".join((rec.followed or [rec.last_item])[1:])
    prior = (f"; transition prior from {rec.last_item}{f' (then {after})' if after else ''}, weight "
             f"{rec.transition_weight:g}: score = log-probability" if follow else "")
    lines = [f"top {len(rec.items)} for user {rec.user_id} (model version {rec.model_version}{seen}{prior})",
             f"{'rank':>4}  {'item_id':<16} {'score':>8}  {'interest':>8}  {'weight':>6}"
             + (f"  {'prior':>6}" if follow else "")]
    for r, it in enumerate(rec.items):
        lines.append(f"{r + 1:>4}  {it['item_id']:<16} {it['score']:>8.4f}  {it['interest']:>8}  {it['weight']:>6.3f}"
                     + (f"  {it['prior']:>6.3f}" if follow else ""))
    return "\n".join(lines)


def run(cfg, args) -> int:
    """CLI entry: prints the recommendation table."""
    exclude = list(getattr(args, "exclude", None) or [])
    want = getattr(args, "exclude_seen", False)
    more = {"last_item": getattr(args, "last_item", None), "prior": not getattr(args, "no_prior", False)}
    rec = Recommender(cfg)
    out = rec.recommend(args.user_id, args.k, exclude, exclude_seen=want and rec.has_seen, **more)
    if want and out.seen_excluded is None:
        print(f"no seen_items online for user {args.user_id} (unknown, or exported before seen_items existed): "
              "excluding the items of their bronze events instead")
        out = rec.recommend(args.user_id, args.k, exclude + seen_items(cfg, args.user_id), **more)
    print(format_table(out))
    return 0
