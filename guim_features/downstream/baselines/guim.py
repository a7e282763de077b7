"""GUIM itself in the benchmark: a registered model, or K = 1 / K = 4 trained here.

Both go through the model's public interface (docs/CONTRACTS.md "Model API"): item vectors from
``encode_items(item_features)``, user mixtures from ``encode_users`` over each user's test input
(train + valid events), the model's own ``score`` (the ``lse`` mixture by default), and the
fixed-length ``user_vector`` over the same input for the probes (user_profile).
NOTE: gold ``user_embeddings`` are not read: they encode each user's latest sequence, which
includes the test events, so benchmarking them would leak the targets.
"""
from __future__ import annotations

import tempfile
from pathlib import Path

import numpy as np

from ...errors import GuimError
from . import Embeddings, Method, Unavailable, latest_items_rerank


def embed_with(embedder, data) -> Embeddings:
    """Embeddings of ``data`` from a loaded GUIM embedder."""
    if data.item_features is None:
        raise GuimError("silver table 'item_features' is missing; run `guim sequences` first")
    feats = data.item_features.sort_values("item_idx").reset_index(drop=True)
    vecs = np.asarray(embedder.encode_items(feats), dtype=np.float32)  # (N, d)
    items = np.zeros((data.n_items, vecs.shape[1]), dtype=np.float32)  # (V, d)
    items[feats["item_idx"].to_numpy()] = vecs
    key = ("item_idx", "behavior", "gaps")
    interests, weights, profile = [], [], []
    for s in range(0, data.n_users, 256):
        rows = range(s, min(s + 256, data.n_users))
        seqs = {k: [data.test_input(u, k) for u in rows] for k in key}
        z, w = embedder.encode_users(seqs["item_idx"], seqs["behavior"], seqs["gaps"])  # (B, K, d), (B, K)
        interests.append(np.asarray(z, dtype=np.float32))
        weights.append(np.asarray(w, dtype=np.float32))
        profile.append(embedder.user_vector(seqs["item_idx"]))                   # (B, d)

    def scorer(u, w, it):
        return np.asarray(embedder.score(u, w, it), dtype=np.float32)  # (B, V)

    rerank = None
    prior = getattr(embedder, "transitions", None)
    if prior is not None and prior.weight > 0:       # the transition prior, given each user's latest input items
        rerank = latest_items_rerank(data, embedder.rank_scores, prior.follow)

    return Embeddings(items, np.concatenate(interests), np.concatenate(weights), scorer=scorer,
                      profile=np.concatenate(profile), rerank=rerank,
                      transition_weight=None if prior is None else prior.weight)


class GuimTrained(Method):
    """GUIM trained in the bench run with ``train_model`` and K interests, nothing registered;
    ``item_fields`` (None = train.item_fields) selects the item tower's content fields."""

    reads_content = True

    def __init__(self, cfg, k: int, item_fields: list | None = None):
        super().__init__(cfg)
        self.k, self.item_fields = k, item_fields
        self.name = f"guim_k{k}"
        self.reads_content = item_fields != [] and bool(item_fields or cfg.train.item_fields)

    def content_blind(self) -> "GuimTrained":
        """The same K with an id-only item tower (``train.item_fields=[]``)."""
        return GuimTrained(self.cfg, self.k, item_fields=[])

    def embed(self, data, seed: int) -> Embeddings:
        from ...train import train_model

        overrides = {"K": self.k, **({"item_fields": self.item_fields} if self.item_fields is not None else {})}
        # a checkpoint folder of its own: a `guim train` (or another bench) in the same workspace
        # keeps its checkpoints/last.pt, which --resume would otherwise read
        root = Path(self.cfg.resolve(self.cfg.train.checkpoint_dir))
        root.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryDirectory(prefix="bench-", dir=root) as ck:
            result = train_model(self.cfg, seed=seed, overrides={**overrides, "checkpoint_dir": ck},
                                 mlflow_log=False, register=False, exclude_users=data.holdout)
        return embed_with(result.embedder, data)


class GuimModel(Method):
    """A registered GUIM model (``--model-uri``, default ``models:/guim@challenger``); the seed is
    irrelevant (the model is fixed)."""

    name = "model"
    seeded = False  # a fixed model: one run whatever --seeds says
    reads_content = True
    refits = False

    def __init__(self, cfg, uri: str | None = None):
        super().__init__(cfg)
        self.uri = uri or cfg.bench.model_uri

    def embed(self, data, seed: int) -> Embeddings:
        from ...embedder import load_embedder

        try:
            embedder = load_embedder(self.uri, tracking_uri=self.cfg.mlflow_uri)
        except GuimError as e:   # e.g. nothing registered yet: nothing to benchmark, not a failure
            raise Unavailable(str(e)) from None
        return embed_with(embedder, data)
