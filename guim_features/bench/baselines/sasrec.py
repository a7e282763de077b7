"""SASRec baseline (Kang & McAuley 2018) trained with full cross-entropy at every position.

Causal self-attention over the train part; at every position the next item is predicted by a
softmax over the whole vocabulary (Klenitskiy & Vasilev 2023, arXiv 2309.07602, found this
much stronger than the paper's sampled BCE). Early stopping on the valid split's full-ranking
Recall@20. The user vector is the last position's state over the test input, the item vector
the (tied) input embedding, so score = logit.
NOTE: departs from the paper in the loss (full CE, not one sampled negative) and uses pre-LN.
"""
from __future__ import annotations

import copy

import numpy as np

from ...schemas import FIRST_ITEM_INDEX
from . import Embeddings, Method


def _left_pad(seqs: list, length: int) -> np.ndarray:
    """(N, length) int64, each sequence's last ``length`` items right-aligned, 0 = pad."""
    out = np.zeros((len(seqs), length), dtype=np.int64)
    for j, s in enumerate(seqs):
        s = s[-length:]
        if len(s):
            out[j, -len(s):] = s
    return out


def _build(n_items: int, d: int, max_len: int, layers: int, heads: int, dropout: float):
    import torch
    from torch import nn

    class Net(nn.Module):
        def __init__(self):
            super().__init__()
            self.item = nn.Embedding(n_items, d, padding_idx=0)
            self.pos = nn.Embedding(max_len, d)
            self.drop = nn.Dropout(dropout)
            layer = nn.TransformerEncoderLayer(d, heads, d * 2, dropout, activation="gelu",
                                               batch_first=True, norm_first=True)
            self.enc = nn.TransformerEncoder(layer, layers, enable_nested_tensor=False)
            self.norm = nn.LayerNorm(d)
            nn.init.normal_(self.item.weight, std=0.05)

        def forward(self, x):  # x: (B, L) item_idx, 0 = pad
            L = x.shape[1]
            h = self.item(x) * d ** 0.5 + self.pos.weight[None, :L]  # (B, L, d)
            causal = torch.triu(torch.ones(L, L, dtype=torch.bool, device=x.device), 1)  # (L, L)
            h = self.enc(self.drop(h), mask=causal)  # (B, L, d); pads are left, masked by causality
            return self.norm(h)  # (B, L, d)

        def logits(self, h):  # h: (..., d) -> (..., V)
            z = h @ self.item.weight.T
            z[..., :FIRST_ITEM_INDEX] = float("-inf")
            return z

    return Net()


class SASRec(Method):
    name = "sasrec"

    def _last_states(self, net, seqs: list, device) -> np.ndarray:
        import torch

        L = self.cfg.bench.sasrec_max_len
        out = []
        net.eval()
        with torch.no_grad():
            for s in range(0, len(seqs), 512):
                x = torch.from_numpy(_left_pad(seqs[s:s + 512], L)).to(device)  # (B, L)
                out.append(net(x)[:, -1].float().cpu().numpy())  # (B, d)
        return np.concatenate(out)

    def _valid_recall(self, net, data, device, k: int = 20) -> float:
        from ..metrics import recall_at_k
        from ...schemas import VALID

        seqs = [data.train_items(u) for u in range(data.n_users)]
        users = self._last_states(net, seqs, device)  # (U, d)
        items = net.item.weight.detach().float().cpu().numpy()  # (V, d)
        sc = users @ items.T  # (U, V)
        sc[:, :FIRST_ITEM_INDEX] = -np.inf
        rec = []
        for u in range(data.n_users):
            tgt = data.part(u, (VALID,))
            if len(tgt):
                sc[u, seqs[u]] = -np.inf
                rec.append(recall_at_k(np.argsort(-sc[u])[:k], tgt, k))
        return float(np.mean(rec)) if rec else 0.0

    def embed(self, data, seed: int) -> Embeddings:
        import torch
        from tqdm import tqdm

        b = self.cfg.bench
        torch.manual_seed(seed)
        rng = np.random.default_rng(seed)
        device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
        net = _build(data.n_items, b.dim, b.sasrec_max_len, b.sasrec_layers, b.sasrec_heads,
                     b.sasrec_dropout).to(device)
        seqs = _left_pad([data.train_items(u) for u in range(data.n_users)], b.sasrec_max_len + 1)
        seqs = seqs[(seqs > 0).sum(1) >= 2]  # (N, L + 1) users with at least one target
        opt = torch.optim.AdamW(net.parameters(), lr=b.sasrec_lr, weight_decay=0.0)
        best, best_state, bad = -1.0, None, 0
        bar = tqdm(range(b.sasrec_epochs), desc="sasrec", leave=False)
        for _ in bar:
            net.train()
            perm = rng.permutation(len(seqs))
            for s in range(0, len(seqs), b.sasrec_batch):
                batch = torch.from_numpy(seqs[perm[s:s + b.sasrec_batch]]).to(device)
                x, y = batch[:, :-1], batch[:, 1:]  # (B, L), (B, L)
                with torch.autocast(device.type, dtype=torch.bfloat16, enabled=device.type == "cuda"):
                    z = net.logits(net(x))  # (B, L, V)
                loss = torch.nn.functional.cross_entropy(z.float().flatten(0, 1), y.flatten(), ignore_index=0)
                opt.zero_grad()
                loss.backward()
                opt.step()
            rec = self._valid_recall(net, data, device)
            bar.set_postfix(loss=f"{loss.item():.3f}", valid_r20=f"{rec:.3f}")
            if rec > best:
                best, best_state, bad = rec, copy.deepcopy(net.state_dict()), 0
            else:
                bad += 1
                if bad >= b.sasrec_patience:
                    break
        net.load_state_dict(best_state)
        users = self._last_states(net, [data.test_input(u) for u in range(data.n_users)], device)  # (U, d)
        return Embeddings(net.item.weight.detach().float().cpu().numpy(), users)
