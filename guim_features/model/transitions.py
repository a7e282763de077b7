"""A count-based transition prior for next-item ranking: the memorising half of a wide & deep model.

GUIM's item tower gives items that share attributes near vectors and scores by cosine, which
generalises (a rare item borrows its category's vector) but blurs the exact pairs a catalogue
repeats: accessory B bought right after product A by many users. The prior counts those pairs in
the training parts, ``c(i -> j)`` = sum over users and over gaps g = 1..``window`` of
``decay ** (g - 1)`` for j bought g events after i, and reads them as

    P(j | last item i) = c(i -> j) / (sum_j' c(i -> j') + 1)

(the + 1 keeps a once-seen pair from claiming all of an item's mass). With ``follow`` = m > 1 the
prior follows the user's m latest items, newest first, each row weighted ``decay ** g`` (g = 0 for
the last item) and the mixture renormalised over the items the user has: what comes after the
item before last still says something when the last one was a one-off.

Ranking blends it with the model's softmax over the catalogue,
``log((1 - w) softmax(logits)_j + w P(j | history))``, ``w`` chosen on the valid split: items the
history never led to keep the model's order among themselves, and w = 0 is exactly the model's
ranking. The counts are as of the ranked event: valid is ranked with the pairs of the training
parts, test with those of the training and valid parts (every event a user's input holds), and
no ranked event is ever counted.
"""
from __future__ import annotations

import numpy as np

from ..schemas import FIRST_ITEM_INDEX


class TransitionPrior:
    """Row-normalised pair counts ``P(j | i)`` as CSR arrays over item_idx, plus the blend weight."""

    def __init__(self, indptr, indices, values, n_items: int, window: int, decay: float, weight: float = 0.0,
                 follow: int = 1):
        self.indptr = np.asarray(indptr, np.int64)         # (n_items + 1,)
        self.indices = np.asarray(indices, np.int64)       # (nnz,) the next items j
        self.values = np.asarray(values, np.float32)       # (nnz,) P(j | i)
        self.n_items, self.window, self.decay, self.weight = int(n_items), int(window), float(decay), float(weight)
        self.follow = int(follow)

    @classmethod
    def fit(cls, sequences, n_items: int, window: int, decay: float, follow: int = 1) -> "TransitionPrior":
        """Count the pairs of ``sequences`` (each a 1-D array of item_idx in time order; reserved and
        out-of-catalogue indices are skipped, and so are repeats of the same item). ``follow``: how
        many of a user's latest items :meth:`probs` reads."""
        seqs = [np.asarray(x, np.int64) for x in sequences]
        items = np.concatenate(seqs) if seqs else np.zeros(0, np.int64)
        users = np.repeat(np.arange(len(seqs)), [len(x) for x in seqs])
        return cls.fit_flat(items, users, n_items, window, decay, follow)

    @classmethod
    def fit_flat(cls, items: np.ndarray, users: np.ndarray, n_items: int, window: int, decay: float,
                 follow: int = 1) -> "TransitionPrior":
        """:meth:`fit` over every user's events laid end to end: ``items`` (item_idx) sorted by user and
        then time, ``users`` the user of each (any integer code; a pair never spans two users)."""
        if window < 1:
            raise ValueError(f"window {window}: count pairs at least one event apart")
        if not 0.0 < decay <= 1.0:
            raise ValueError(f"decay {decay}: expected a weight in (0, 1]")
        if follow < 1:
            raise ValueError(f"follow {follow}: follow at least the last item")
        x, u = np.asarray(items, np.int64), np.asarray(users)
        inside = (x >= FIRST_ITEM_INDEX) & (x < n_items)
        x, u = x[inside], u[inside]                        # the gap closes over a skipped event
        src, dst, w = [], [], []
        for g in range(1, min(window, len(x) - 1) + 1):
            a, b = x[:-g], x[g:]
            keep = (u[:-g] == u[g:]) & (a != b)
            src.append(a[keep]), dst.append(b[keep]), w.append(np.full(int(keep.sum()), decay ** (g - 1)))
        if not src or not sum(len(z) for z in src):
            return cls(np.zeros(n_items + 1), [], [], n_items, window, decay, follow=follow)
        a, b, w = np.concatenate(src), np.concatenate(dst), np.concatenate(w)
        code, inv = np.unique(a * n_items + b, return_inverse=True)           # sorted by (i, j)
        count = np.bincount(inv, weights=w)
        rows, cols = code // n_items, code % n_items
        total = np.bincount(rows, weights=count, minlength=n_items)
        indptr = np.concatenate([[0], np.cumsum(np.bincount(rows, minlength=n_items))])
        return cls(indptr, cols, count / (total[rows] + 1.0), n_items, window, decay, follow=follow)

    def probs(self, history: np.ndarray, n_cols: int | None = None) -> np.ndarray:
        """(B,) last item_idx, or (B, W) histories in time order (left-padded; 0 or any reserved
        index: no item) -> (B, n_cols) dense P(j | history): the rows of the ``follow`` latest items,
        weighted ``decay ** g`` from the newest and renormalised over the items present."""
        h = np.asarray(history, np.int64)
        h = h[:, None] if h.ndim == 1 else h
        h = h[:, ::-1][:, :self.follow]                               # newest first
        n_cols = self.n_items if n_cols is None else n_cols
        out = np.zeros((len(h), n_cols), np.float32)
        ok = (h >= FIRST_ITEM_INDEX) & (h < self.n_items)
        share = np.where(ok, self.decay ** np.arange(h.shape[1], dtype=np.float64)[None, :], 0.0)
        share /= np.maximum(share.sum(1, keepdims=True), 1e-12)
        for r, g in zip(*np.nonzero(ok)):
            lo, hi = self.indptr[h[r, g]], self.indptr[h[r, g] + 1]
            j = self.indices[lo:hi]
            inside = j < n_cols
            out[r, j[inside]] += np.float32(share[r, g]) * self.values[lo:hi][inside]
        return out

    def blend(self, logits: np.ndarray, history: np.ndarray, weight: float | None = None) -> np.ndarray:
        """(B, V) logits (-inf where an item cannot be ranked) and the users' histories (as
        :meth:`probs` reads them) -> (B, V) ``log((1 - w) softmax(logits) + w P(. | history))``,
        w = ``weight`` or the fitted one. w = 0 returns ``logits`` unchanged (the same ranking, no copy)."""
        w = self.weight if weight is None else float(weight)
        if w <= 0.0:
            return logits
        if not w < 1.0:
            raise ValueError(f"transition weight {w}: expected [0, 1)")
        return self.mix(self.parts(logits, history), w)

    def parts(self, logits: np.ndarray, history: np.ndarray, like: tuple | None = None) -> tuple:
        """What :meth:`blend` reads of a batch whatever the weight: the log softmax of ``logits`` and
        the items of P(. | history) > 0 with their probabilities. Computed once, it serves
        :meth:`mix` at every weight tried (the log softmax and P cost as much as the blend itself).
        ``like``: the parts of other logits of the same histories, whose P is taken as it is."""
        z = np.asarray(logits, np.float32)
        m = np.max(z, axis=1, keepdims=True)
        m = np.where(np.isfinite(m), m, np.float32(0.0))         # float32 throughout: float64 triples the cost
        log_p = z - m - np.log(np.sum(np.exp(z - m), axis=1, keepdims=True))      # log softmax
        if like is not None:
            return log_p, like[1], like[2]
        p = self.probs(history, z.shape[1])
        hit = np.nonzero(p > 0)
        return log_p, hit, p[hit]

    @staticmethod
    def mix(parts: tuple, weight: float) -> np.ndarray:
        """:meth:`parts` of a batch and a weight w in (0, 1) -> the (B, V) blend at w (a new array)."""
        w = float(weight)
        if not 0.0 < w < 1.0:
            raise ValueError(f"transition weight {w}: expected (0, 1)")
        log_p, hit, p = parts
        out = log_p + np.float32(np.log1p(-w))
        out[hit] = np.logaddexp(out[hit], np.log(w * p))
        return out

    # -- the checkpoint ----------------------------------------------------------------------
    def state(self) -> dict:
        """Tensors and numbers only: what ``torch.load(weights_only=True)`` reads back."""
        import torch

        return {"indptr": torch.from_numpy(self.indptr), "indices": torch.from_numpy(self.indices),
                "values": torch.from_numpy(self.values), "n_items": self.n_items, "window": self.window,
                "decay": self.decay, "weight": self.weight, "follow": self.follow}

    @classmethod
    def from_state(cls, s: dict) -> "TransitionPrior":
        return cls(s["indptr"].cpu().numpy(), s["indices"].cpu().numpy(), s["values"].cpu().numpy(), s["n_items"],
                   s["window"], s["decay"], s["weight"], follow=s.get("follow", 1))
