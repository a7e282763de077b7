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
search meets them searches deeper, so ``k`` items still come back. ``exclude_seen=True`` (the CLI's
``--exclude-seen``) also excludes the user's ``seen_items``, read in the same online lookup: the
items of their events before the snapshot (``guim embed``), newest first, at most ``embed.seen_max``.
Events after the snapshot are not in it; a service passes those (the session's purchases) in
``exclude``. A repository published before the feature existed has no ``seen_items``: the API
raises; a snapshot exported before it existed holds none: ``seen_excluded`` is then None. In both
cases the CLI excludes the user's bronze events instead (:func:`seen_items`), and says so.
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

    def recommend(self, user_id: str, k: int = 20, exclude=(), exclude_seen: bool = False) -> Recommendation:
        """The top ``k`` items for ``user_id``; item ids in ``exclude`` are never returned, nor, with
        ``exclude_seen``, the user's ``seen_items`` of the online store."""
        if k < 1:
            raise GuimError(f"-k {k}: ask for at least one item")
        if isinstance(exclude, str):
            raise GuimError("exclude takes a list of item ids, not one string")
        if exclude_seen and not self.has_seen:
            raise GuimError("the published user view has no seen_items (published before it existed): run "
                            "`guim embed` and `guim publish` again, or pass the items to exclude")
        banned = {str(i) for i in exclude}
        row = self.lookup(str(user_id), seen=exclude_seen)
        version = row["model_version"][0]
        seen = row["seen_items"][0] if exclude_seen else None      # None: unknown user or a snapshot without it
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
        rows = self._search(q, self.candidates or k, banned)                                 # (K, n)
        cand = np.unique(rows[rows >= 0])                                                    # (C,)
        if banned:
            cand = cand[~np.isin(self.index.item_ids[cand].astype(str), list(banned))]
        s = self.index.vectors[cand] @ q.T                                                   # (C, K)
        if self.rule == "max":
            score, best = s.max(1), s.argmax(1)                                              # (C,), (C,)
        else:
            z = s / self.tau + np.log(np.clip(w, 1e-9, None))                                # (C, K)
            m = z.max(1, keepdims=True)
            score, best = self.tau * (m[:, 0] + np.log(np.exp(z - m).sum(1))), z.argmax(1)
        top = np.argsort(-score, kind="stable")[:k]
        ids = self.index.item_ids[cand[top]].tolist()
        items = [{"item_id": i, "score": s_, "interest": b, "weight": w_} for i, s_, b, w_ in
                 zip(ids, score[top].tolist(), best[top].tolist(), w[best[top]].tolist())]
        return Recommendation(str(user_id), version, items, seen_excluded=n_seen)


    def _search(self, q: np.ndarray, need: int, banned: set) -> np.ndarray:
        """Index rows (K, n) holding each interest's ``need`` best items that are not ``banned``
        (banned rows included; -1 = none). Searching ``len(banned)`` deeper always would be enough,
        but it costs most when nothing banned is near: a user's 500 seen items make every interest
        search 500 + ``need`` deep. So the first search goes at most ``need`` deeper, and only an
        interest that met too many banned items makes the next search deeper (twice as deep, up
        to ``need + len(banned)``, which must hold enough)."""
        limit = min(need + len(banned), len(self.index.item_ids))
        depth = min(need + min(len(banned), need), limit)
        ban = np.fromiter(banned, dtype=object, count=len(banned)).astype(str) if banned else None
        while True:
            _, rows = self.index.search(q, depth)                                            # (K, depth)
            if ban is None or depth >= limit:
                return rows
            found = rows >= 0
            kept = found.copy()
            kept[found] = ~np.isin(self.index.item_ids[rows[found]], ban)
            if (kept.sum(1) >= need).all():
                return rows
            depth = min(2 * depth, limit)


def recommend(cfg, user_id: str, k: int = 20, exclude=(), exclude_seen: bool = False) -> Recommendation:
    """Python API: ``recommend(load_config(ws), "u42", k=20, exclude=["i7"], exclude_seen=True)``."""
    return Recommender(cfg).recommend(user_id, k, exclude, exclude_seen)


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
    lines = [f"top {len(rec.items)} for user {rec.user_id} (model version {rec.model_version}{seen})",
             f"{'rank':>4}  {'item_id':<16} {'score':>8}  {'interest':>8}  {'weight':>6}"]
    for r, it in enumerate(rec.items):
        lines.append(f"{r + 1:>4}  {it['item_id']:<16} {it['score']:>8.4f}  {it['interest']:>8}  {it['weight']:>6.3f}")
    return "\n".join(lines)


def run(cfg, args) -> int:
    """CLI entry: prints the recommendation table."""
    exclude = list(getattr(args, "exclude", None) or [])
    want = getattr(args, "exclude_seen", False)
    rec = Recommender(cfg)
    out = rec.recommend(args.user_id, args.k, exclude, exclude_seen=want and rec.has_seen)
    if want and out.seen_excluded is None:
        print(f"no seen_items online for user {args.user_id} (unknown, or exported before seen_items existed): "
              "excluding the items of their bronze events instead")
        out = rec.recommend(args.user_id, args.k, exclude + seen_items(cfg, args.user_id))
    print(format_table(out))
    return 0
