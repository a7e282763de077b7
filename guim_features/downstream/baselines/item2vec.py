"""item2vec baseline (Barkan & Koenigstein 2016): gensim skip-gram over the train sequences.

A user is the mean of the L2-normalised vectors of their ``bench.item2vec_recent`` most recent
test-input items; an item never seen in training gets a zero vector (no content model).
"""
from __future__ import annotations

import numpy as np

from ...errors import GuimError
from . import SCALED_LOGITS, Embeddings, Method, recent_mean


class Item2Vec(Method):
    name = "item2vec"

    def embed(self, data, seed: int) -> Embeddings:
        try:
            from gensim.models import Word2Vec
        except ImportError:
            raise GuimError("item2vec needs gensim, an optional dependency: "
                            "pip install 'guim-features[bench]'") from None

        b = self.cfg.bench
        sentences = [[str(i) for i in data.train_items(u)] for u in range(data.n_users)]
        model = Word2Vec(sentences, vector_size=b.dim, window=b.item2vec_window, sg=1, negative=10,
                         min_count=1, epochs=b.item2vec_epochs, workers=1, seed=seed + 1,
                         sample=b.item2vec_sample, ns_exponent=b.item2vec_ns_exponent)
        items = np.zeros((data.n_items, b.dim), dtype=np.float32)  # (V, d)
        keys = np.array([int(k) for k in model.wv.index_to_key])
        items[keys] = model.wv.get_normed_vectors()
        def recent(part) -> np.ndarray:              # (U, d) each user's recent part(u) items
            return np.stack([recent_mean(items, part(u), b.item2vec_recent) for u in range(data.n_users)])

        # the train-part users only when the prior is chosen; cosines, not logits
        return Embeddings(items, recent(data.test_input), valid_users=lambda: recent(data.train_items),
                          logit_scales=SCALED_LOGITS)
