"""SASRec baseline (Kang & McAuley 2018) trained with full cross-entropy at every position.

Causal self-attention over the train part; at every position the next item is predicted by a
softmax over the whole vocabulary (Klenitskiy & Vasilev 2023, arXiv 2309.07602, found this
much stronger than the paper's sampled BCE). The user vector is the last position's state over
the test input, the item vector the (tied) input embedding, so score = logit.

Trained on the same examples as GUIM: every window of each user's train part, cut exactly as
GUIM's trainer cuts them (``guim_features.data`` windows of ``max_len + 1`` = ``train.max_len``
unless ``bench.sasrec_max_len`` is set), in batches grouped by length. Padding never changes a
result: attention never reads a pad (key-padding mask, :func:`guim_features.model.guim.attention_bias`),
pads are not training positions, and positions are counted from the right, so the last real
item always has the last position embedding whatever the padding. Early stopping on the valid
split's full-ranking Recall@20 (``guim_features.data.rank_metrics``, as GUIM's validation).
NOTE: departs from the paper in the loss (full CE, not one sampled negative), uses pre-LN blocks
(GUIM's, 4d feed-forward) and sums item and position embeddings after scaling the item by sqrt(d).
"""
from __future__ import annotations

import copy

import numpy as np

from ...schemas import FIRST_ITEM_INDEX, VALID
from . import Embeddings, Method


def _build(n_items: int, d: int, max_len: int, layers: int, heads: int, dropout: float):
    import torch
    from torch import nn

    from ...model.guim import Block, attention_bias

    class Net(nn.Module):
        def __init__(self):
            super().__init__()
            self.max_len = max_len
            self.item = nn.Embedding(n_items, d, padding_idx=0)
            self.pos = nn.Embedding(max_len, d)
            self.drop = nn.Dropout(dropout)
            self.blocks = nn.ModuleList(Block(d, heads, dropout) for _ in range(layers))
            self.norm = nn.LayerNorm(d)
            nn.init.normal_(self.item.weight, std=0.05)

        def forward(self, x):  # x: (B, W) item_idx left-padded with 0, W <= max_len
            W = x.shape[1]
            pos = torch.arange(self.max_len - W, self.max_len, device=x.device)  # right-aligned
            h = self.drop(self.item(x) * d ** 0.5 + self.pos(pos)[None])         # (B, W, d)
            bias = attention_bias(x > 0, causal=True, dtype=h.dtype)            # (B, 1, W, W)
            for blk in self.blocks:
                h = blk(h, bias)
            return self.norm(h)  # (B, W, d)

        def logits(self, h):  # h: (..., d) -> (..., V)
            z = h @ self.item.weight.T
            z[..., :FIRST_ITEM_INDEX] = float("-inf")
            return z

    return Net()


def training_windows(data, max_len: int) -> list:
    """Item windows (1-D arrays of length 2..max_len + 1) of every user's train part, cut as GUIM's
    trainer cuts them."""
    from ...data import _windows

    return [w[0] for u in range(data.n_users) for w in _windows(data.seqs[u], max_len, "all")]


def length_batches(lengths: np.ndarray, batch: int, rng) -> list:
    """Index batches of a shuffled epoch, each of similar lengths (stable sort of the shuffled order),
    in random order: a batch is padded only to its own longest window."""
    order = rng.permutation(len(lengths))
    order = order[np.argsort(lengths[order], kind="stable")]
    batches = [order[s:s + batch] for s in range(0, len(order), batch)]
    return [batches[i] for i in rng.permutation(len(batches))]


class SASRec(Method):
    name = "sasrec"

    def __init__(self, cfg):
        super().__init__(cfg)
        self.best_valid, self.epochs_run = float("nan"), 0   # of the last fit (bench/tune_baselines.py)

    @property
    def max_len(self) -> int:
        return self.cfg.bench.sasrec_max_len or self.cfg.train.max_len

    def last_states(self, net, seqs: list, device) -> np.ndarray:
        """(N, d) last-position states of the newest ``max_len`` items of each sequence; rows are
        encoded in batches of similar length (the result does not depend on the padding)."""
        import torch

        from ...data import left_pad

        L = self.max_len
        out = np.zeros((len(seqs), net.item.weight.shape[1]), np.float32)
        order = np.argsort([min(len(s), L) for s in seqs], kind="stable")
        net.eval()
        with torch.no_grad():
            for s in range(0, len(order), 512):
                rows = order[s:s + 512]
                width = max(1, min(L, max(len(seqs[r]) for r in rows)))
                x = torch.from_numpy(left_pad([seqs[r] for r in rows], width)).to(device)  # (B, W)
                out[rows] = net(x)[:, -1].float().cpu().numpy()
        return out

    def valid_recall(self, net, data, device, k: int = 20) -> float:
        """Recall@k of each user's first valid event from their train part (users with both)."""
        from ...data import rank_metrics

        users = [u for u in range(data.n_users)
                 if len(data.train_items(u)) and len(data.part(u, (VALID,)))]
        if not users:
            return 0.0
        seqs = [data.train_items(u) for u in users]
        states = self.last_states(net, seqs, device)  # (U', d)
        items = net.item.weight.detach().float().cpu().numpy()  # (V, d)
        hits = 0.0
        for s in range(0, len(users), 512):
            target = np.array([data.part(u, (VALID,))[0] for u in users[s:s + 512]])
            hits += rank_metrics(states[s:s + 512] @ items.T, target, seqs[s:s + 512], ks=(k,))[f"recall@{k}"]
        return hits / len(users)

    def embed(self, data, seed: int) -> Embeddings:
        import torch
        from tqdm import tqdm

        from ...data import left_pad

        b = self.cfg.bench
        torch.manual_seed(seed)
        rng = np.random.default_rng(seed)
        device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
        net = _build(data.n_items, b.dim, self.max_len, b.sasrec_layers, b.sasrec_heads, b.sasrec_dropout).to(device)
        wins = training_windows(data, self.max_len)
        lengths = np.array([len(w) for w in wins])
        opt = torch.optim.AdamW(net.parameters(), lr=b.sasrec_lr, weight_decay=0.0)
        best, best_state, bad, self.epochs_run = -1.0, copy.deepcopy(net.state_dict()), 0, 0
        bar = tqdm(range(b.sasrec_epochs or self.cfg.train.epochs), desc="sasrec", leave=False)
        for _ in bar:
            net.train()
            for idx in length_batches(lengths, b.sasrec_batch, rng):
                batch = torch.from_numpy(left_pad([wins[i] for i in idx], int(lengths[idx].max()))).to(device)
                x, y = batch[:, :-1], batch[:, 1:]  # (B, W), (B, W)
                y = y.masked_fill(x == 0, 0)        # a pad is no training position
                with torch.autocast(device.type, dtype=torch.bfloat16, enabled=device.type == "cuda"):
                    z = net.logits(net(x))  # (B, W, V)
                loss = torch.nn.functional.cross_entropy(z.float().flatten(0, 1), y.flatten(), ignore_index=0)
                opt.zero_grad()
                loss.backward()
                opt.step()
            rec = self.valid_recall(net, data, device)
            self.epochs_run += 1
            bar.set_postfix(loss=f"{loss.item():.3f}", valid_r20=f"{rec:.3f}")
            if rec > best:
                best, best_state, bad = rec, copy.deepcopy(net.state_dict()), 0
            else:
                bad += 1
                if bad >= b.sasrec_patience:
                    break
        net.load_state_dict(best_state)
        self.best_valid = best
        users = self.last_states(net, [data.test_input(u) for u in range(data.n_users)], device)  # (U, d)
        def valid() -> np.ndarray:                   # from the train part alone: the prior's weight is chosen on valid
            out = np.zeros_like(users)
            rows = [u for u in range(data.n_users) if len(data.train_items(u))]
            if rows:
                out[rows] = self.last_states(net, [data.train_items(u) for u in rows], device)
            return out

        return Embeddings(net.item.weight.detach().float().cpu().numpy(), users, valid_users=valid)
