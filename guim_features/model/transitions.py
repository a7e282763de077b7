"""A count-based transition prior for next-item ranking: the memorising half of a wide & deep model.

GUIM's item tower gives items that share attributes near vectors and scores by cosine, which
generalises (a rare item borrows its category's vector) but blurs the exact pairs a catalogue
repeats: accessory B bought right after product A by many users. The prior counts those pairs in
the training parts, ``c(i -> j)`` = sum over users and over gaps g = 1..``window`` of
``decay ** (g - 1)`` for j bought g events after i, and reads them as

    P(j | last item i) = c(i -> j) / (sum_j' c(i -> j') + 1)

(the + 1 keeps a once-seen pair from claiming all of an item's mass). Ranking blends it with the
model's softmax over the catalogue, ``log((1 - w) softmax(logits)_j + w P(j | i))``, ``w`` chosen
on the valid split: items the last item never led to keep the model's order among themselves, and
w = 0 is exactly the model's ranking. Valid and test events never enter the counts.
"""
from __future__ import annotations

import numpy as np

from ..schemas import FIRST_ITEM_INDEX


class TransitionPrior:
    """Row-normalised pair counts ``P(j | i)`` as CSR arrays over item_idx, plus the blend weight."""

    def __init__(self, indptr, indices, values, n_items: int, window: int, decay: float, weight: float = 0.0):
        self.indptr = np.asarray(indptr, np.int64)         # (n_items + 1,)
        self.indices = np.asarray(indices, np.int64)       # (nnz,) the next items j
        self.values = np.asarray(values, np.float32)       # (nnz,) P(j | i)
        self.n_items, self.window, self.decay, self.weight = int(n_items), int(window), float(decay), float(weight)

    @classmethod
    def fit(cls, sequences, n_items: int, window: int, decay: float) -> "TransitionPrior":
        """Count the pairs of ``sequences`` (each a 1-D array of item_idx in time order; reserved and
        out-of-catalogue indices are skipped, and so are repeats of the same item)."""
        if window < 1:
            raise ValueError(f"window {window}: count pairs at least one event apart")
        if not 0.0 < decay <= 1.0:
            raise ValueError(f"decay {decay}: expected a weight in (0, 1]")
        src, dst, w = [], [], []
        for seq in sequences:
            x = np.asarray(seq, np.int64)
            x = x[(x >= FIRST_ITEM_INDEX) & (x < n_items)]
            for g in range(1, min(window, len(x) - 1) + 1):
                a, b = x[:-g], x[g:]
                keep = a != b
                src.append(a[keep]), dst.append(b[keep]), w.append(np.full(int(keep.sum()), decay ** (g - 1)))
        if not src:
            return cls(np.zeros(n_items + 1), [], [], n_items, window, decay)
        a, b, w = np.concatenate(src), np.concatenate(dst), np.concatenate(w)
        code, inv = np.unique(a * n_items + b, return_inverse=True)           # sorted by (i, j)
        count = np.bincount(inv, weights=w)
        rows, cols = code // n_items, code % n_items
        total = np.bincount(rows, weights=count, minlength=n_items)
        indptr = np.concatenate([[0], np.cumsum(np.bincount(rows, minlength=n_items))])
        return cls(indptr, cols, count / (total[rows] + 1.0), n_items, window, decay)

    def probs(self, last: np.ndarray, n_cols: int | None = None) -> np.ndarray:
        """(B,) last item_idx (0 or any reserved index: no history) -> (B, n_cols) dense P(j | last)."""
        last = np.asarray(last, np.int64)
        n_cols = self.n_items if n_cols is None else n_cols
        out = np.zeros((len(last), n_cols), np.float32)
        ok = (last >= FIRST_ITEM_INDEX) & (last < self.n_items)
        for r in np.flatnonzero(ok):
            lo, hi = self.indptr[last[r]], self.indptr[last[r] + 1]
            j = self.indices[lo:hi]
            inside = j < n_cols
            out[r, j[inside]] = self.values[lo:hi][inside]
        return out

    def blend(self, logits: np.ndarray, last: np.ndarray, weight: float | None = None) -> np.ndarray:
        """(B, V) logits (-inf where an item cannot be ranked) and (B,) last items -> (B, V)
        ``log((1 - w) softmax(logits) + w P(. | last))``, w = ``weight`` or the fitted one. w = 0
        returns ``logits`` unchanged (the same ranking, no copy)."""
        w = self.weight if weight is None else float(weight)
        if w <= 0.0:
            return logits
        if not w < 1.0:
            raise ValueError(f"transition weight {w}: expected [0, 1)")
        z = np.asarray(logits, np.float32)
        m = np.max(z, axis=1, keepdims=True)
        m = np.where(np.isfinite(m), m, 0.0)
        log_p = z - m - np.log(np.sum(np.exp(z - m), axis=1, keepdims=True))      # log softmax
        p = self.probs(last, z.shape[1])
        out = log_p + np.float32(np.log1p(-w))
        hit = p > 0
        out[hit] = np.logaddexp(out[hit], np.log(w * p[hit]))
        return out

    # -- the checkpoint ----------------------------------------------------------------------
    def state(self) -> dict:
        """Tensors and numbers only: what ``torch.load(weights_only=True)`` reads back."""
        import torch

        return {"indptr": torch.from_numpy(self.indptr), "indices": torch.from_numpy(self.indices),
                "values": torch.from_numpy(self.values), "n_items": self.n_items, "window": self.window,
                "decay": self.decay, "weight": self.weight}

    @classmethod
    def from_state(cls, s: dict) -> "TransitionPrior":
        return cls(s["indptr"].cpu().numpy(), s["indices"].cpu().numpy(), s["values"].cpu().numpy(), s["n_items"],
                   s["window"], s["decay"], s["weight"])
