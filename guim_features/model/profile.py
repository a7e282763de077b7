"""The whole-history user vector (``Embedder.user_vector``): a set model beside the sequence encoder.

The K interests read a user's newest ``max_len`` events and are trained for the next item; a
downstream model joining one fixed-length vector per user wants the whole history summarised.
:class:`ProfileHead` is that summary, trained after the sequence model (:func:`fit_profile`) on
every user's distinct training items with Mult-DAE's objective (Liang et al. 2018):

    u = z + MLP(z),   z = mean of E_in[i] over a random share ``keep`` of the user's items,
    loss = -(1/|S|) sum_{j in S} log softmax(u E_outᵀ)_j      (S: all the user's items),

with tables of its own (E_in, E_out: V x d each). Its free tables are what carry it: the same
readout over GUIM's next-item vectors (the ALS fold-in, ``embedder.fold_in``, the user vector
before it) follows the last events, not the long-run co-occurrence that age, gender or occupation
follow. On ML-100K's user_profile it is level with ALS's user factors and above that fold-in
(guim_features/downstream/README.md, "User vector"). The softmax runs over the whole catalogue up
to :data:`FULL_MAX` items, above it over the batch's items and ``num_negatives`` uniform draws.
"""
from __future__ import annotations

import numpy as np
import torch
from torch import nn

from ..schemas import FIRST_ITEM_INDEX

FULL_MAX = 1 << 16   # largest catalogue the profile head's softmax spans in full


class ProfileHead(nn.Module):
    """Distinct item_idx per user (flat + offsets) -> (B, d); an empty set maps to MLP(0)."""

    def __init__(self, n_items: int, d: int):
        super().__init__()
        self.bag = nn.EmbeddingBag(n_items, d, mode="mean")
        self.out = nn.Embedding(n_items, d)
        self.mlp = nn.Sequential(nn.Linear(d, d), nn.Tanh(), nn.Linear(d, d))
        for t in (self.bag.weight, self.out.weight):
            nn.init.normal_(t, std=0.1)

    def forward(self, flat: torch.Tensor, offsets: torch.Tensor) -> torch.Tensor:
        z = self.bag(flat, offsets)                       # (B, d)
        return z + self.mlp(z)

    def encode(self, sets: list, batch_size: int = 4096) -> np.ndarray:
        """Per-user arrays of distinct item_idx -> (B, d) float32. Every chunk has at least
        ``embedder.MIN_ROWS`` rows (padded with empty sets), so a row's vector depends only on its
        own items, not on which rows share its batch: re-encoding a user gives the same bits."""
        from ..embedder import MIN_ROWS

        dev = self.out.weight.device
        out = np.zeros((len(sets), self.out.weight.shape[1]), np.float32)
        empty = np.zeros(0, np.int64)
        with torch.no_grad():
            for s in range(0, len(sets), batch_size):
                chunk = list(sets[s:s + batch_size])
                flat, off = _flat(chunk + [empty] * max(0, MIN_ROWS - len(chunk)))
                v = self(torch.as_tensor(flat, device=dev), torch.as_tensor(off, device=dev))   # (>= B, d)
                out[s:s + len(chunk)] = v[:len(chunk)].float().cpu().numpy()
        return out


def _flat(sets: list) -> tuple[np.ndarray, np.ndarray]:
    """Per-user arrays -> (flat int64 values, int64 start offsets)."""
    lens = np.fromiter((len(s) for s in sets), np.int64, len(sets))
    flat = np.concatenate([np.asarray(s, np.int64) for s in sets]) if len(sets) else np.zeros(0, np.int64)
    return flat, np.concatenate([[0], np.cumsum(lens)[:-1]]).astype(np.int64)


def fit_profile(head: ProfileHead, sets: list, steps: int, keep: float, lr: float = 1e-2, batch_size: int = 64,
                num_negatives: int = 1024, seed: int = 0, progress: bool = False) -> list:
    """Train ``head`` for ``steps`` steps on per-user arrays of distinct item_idx (users with none are
    skipped; every user is drawn once per pass, reshuffled each pass) -> the steps' losses."""
    from tqdm.auto import tqdm

    users = np.flatnonzero([len(s) > 0 for s in sets])
    if len(users) == 0 or steps <= 0:
        return []
    dev = head.out.weight.device
    n_items = head.out.weight.shape[0]
    rng = np.random.default_rng(seed)
    opt = torch.optim.Adam(head.parameters(), lr=lr)
    order, at, losses = rng.permutation(users), 0, []
    head.train()
    bar = tqdm(total=steps, desc="profile head", disable=not progress, leave=False)
    for _ in range(steps):
        if at >= len(order):
            order, at = rng.permutation(users), 0
        batch = [sets[u] for u in order[at:at + batch_size]]
        at += batch_size
        flat, off = _flat(batch)
        lens = np.diff(np.append(off, len(flat)))                                  # (B,)
        seg = np.repeat(np.arange(len(batch)), lens)                               # row of each value
        kept = rng.random(len(flat)) < keep
        kept[off + (rng.random(len(batch)) * lens).astype(np.int64)] = True        # at least one input each
        counts = np.bincount(seg[kept], minlength=len(batch))
        u = head(torch.as_tensor(flat[kept], device=dev),
                 torch.as_tensor(np.concatenate([[0], np.cumsum(counts)[:-1]]), device=dev))   # (B, d)
        if n_items <= FULL_MAX:
            cand = np.arange(FIRST_ITEM_INDEX, n_items)
        else:
            cand = np.unique(np.concatenate([flat, rng.integers(FIRST_ITEM_INDEX, n_items, num_negatives)]))
        logp = torch.log_softmax(u @ head.out(torch.as_tensor(cand, device=dev)).T, 1)   # (B, C)
        target = torch.zeros_like(logp)
        target[torch.as_tensor(seg, device=dev), torch.as_tensor(np.searchsorted(cand, flat), device=dev)] = 1.0
        loss = -((logp * target).sum(1) / torch.as_tensor(lens, device=dev, dtype=logp.dtype)).mean()
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        losses.append(float(loss.detach()))
        bar.set_postfix(loss=f"{losses[-1]:.3f}")
        bar.update()
    bar.close()
    head.eval()
    return losses
