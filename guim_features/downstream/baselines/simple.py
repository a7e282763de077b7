"""The floor baselines of GUIM-Bench: random vectors and popularity."""
from __future__ import annotations

import numpy as np

from . import Embeddings, Method


class RandomVectors(Method):
    """Gaussian vectors for every item and user: what every task scores by chance."""

    name = "random"

    def embed(self, data, seed: int) -> Embeddings:
        rng = np.random.default_rng(seed)
        d = self.cfg.bench.dim
        return Embeddings(rng.standard_normal((data.n_items, d)),      # (V, d)
                          rng.standard_normal((data.n_users, 1, d)))   # (U, 1, d)


class Popularity(Method):
    """Items ranked by train-part interaction count; a 1-d item vector log(1 + count) and the
    same unit user vector for everyone (so user probes score at chance, by construction)."""

    name = "popularity"
    seeded = False  # deterministic: one run whatever --seeds says

    def embed(self, data, seed: int) -> Embeddings:
        items = np.log1p(data.train_counts.astype(np.float32))[:, None]  # (V, 1)
        ones = np.ones((data.n_users, 1, 1))                              # (U, 1, 1)
        # softmax(log(1 + count)) is the smoothed popularity distribution: logits as they are
        return Embeddings(items, ones, valid_users=ones)
