"""Item tower: one vector per item from its id and its multi-modal content (GUIM, arXiv 2207.00750, §3.1).

An item's vector is the sum of an id embedding, one embedding per categorical field, a
projection of the numeric fields, a mean bag of hashed title tokens, a mean bag of tags and a
projection of the optional dense (image) vector, then a LayerNorm. With ``item_graph`` > 0 the
sum also takes that weight times the mean id embedding of the item's neighbours in the training
sequences (the items bought right before or after it, :func:`guim_features.data.item_neighbours`,
weighted by how often), so a rarely bought item borrows from the items it is bought with. Items never seen in
training (item_idx >= n_items) use a hashed id bucket instead of their own id row; the
buckets are trained by *id dropout* (an item's id is swapped for its bucket with a small
probability), so an unseen item's vector is "generic id + its content".

The tower holds the training catalogue's content as buffers (the *feature bank*), so that
sequences of item indices can be embedded without passing content around; the buffers are
saved with the weights.

``item_fields`` lists the content fields the tower reads (default: all of :data:`ITEM_FIELDS`); a
field left out contributes nothing, so ``[]`` gives a content-blind tower (id embedding only),
whose item vectors cannot copy an item label (category, tags) from the input.
"""
from __future__ import annotations

import torch
import torch.nn as nn

from ..schemas import OOV

BANK_KEYS = ("cat", "num", "title", "tags", "image", "has_image")
CAT_FIELDS, NUM_FIELDS = ("category", "brand", "shop"), ("price", "year")   # bank columns of "cat", "num"
ITEM_FIELDS = (*CAT_FIELDS, *NUM_FIELDS, "title", "tags", "image")


def hash_bucket(idx: torch.Tensor, buckets: int) -> torch.Tensor:
    """A fixed multiplicative hash of item indices into [0, buckets)."""
    return ((idx.long() * 2654435761) % 4294967296) % buckets


class ItemTower(nn.Module):
    def __init__(self, a: dict):
        super().__init__()
        d = a["d"]
        self.n_items, self.id_buckets, self.id_dropout = a["n_items"], a["id_buckets"], a["id_dropout"]
        self.cat_sizes = list(a["cat_sizes"])              # vocabulary size per categorical field
        fields = set(a["item_fields"])
        unknown = sorted(fields - set(ITEM_FIELDS))
        if unknown:
            raise ValueError(f"train.item_fields: unknown {unknown} (known: {', '.join(ITEM_FIELDS)})")
        self.use = {f: f in fields for f in ITEM_FIELDS}
        keep = [float(self.use[f]) for f in NUM_FIELDS[:a["n_num"]]]
        self.read_num = any(keep)
        self.register_buffer("num_keep", torch.tensor(keep), persistent=False)  # (M,) 1 = numeric field read
        # sampled negatives (large catalogues): sparse gradients, so a step touches only the rows it uses
        sparse = a["negatives"] == "sampled" or (a["negatives"] == "auto" and self.n_items > a["full_catalogue_max"])
        self.id_emb = nn.Embedding(self.n_items + self.id_buckets, d, padding_idx=0, sparse=sparse)
        self.cat_emb = nn.ModuleList(nn.Embedding(n, d, padding_idx=0) for n in self.cat_sizes)
        self.num_proj = nn.Linear(a["n_num"], d) if a["n_num"] else None
        self.title_bag = nn.EmbeddingBag(a["title_buckets"], d, mode="mean", padding_idx=0)
        self.tag_bag = nn.EmbeddingBag(a["tag_size"], d, mode="mean", padding_idx=0)
        self.image_proj = nn.Linear(a["image_dim"], d) if a["image_dim"] else None
        self.norm = nn.LayerNorm(d)
        self.item_graph = float(a["item_graph"])
        if self.item_graph > 0:   # the neighbour table, filled by set_neighbours() and saved with the weights
            self.register_buffer("nbr", torch.zeros(self.n_items, a["graph_neighbours"], dtype=torch.long))
            self.register_buffer("nbr_w", torch.zeros(self.n_items, a["graph_neighbours"]))
        nn.init.normal_(self.id_emb.weight, std=0.02)
        for e in [*self.cat_emb, self.title_bag, self.tag_bag]:
            nn.init.normal_(e.weight, std=0.02)
        with torch.no_grad():
            self.id_emb.weight[0].zero_()
        # feature bank of the training catalogue (row = item_idx); filled by set_bank()
        V, T, G = self.n_items, a["title_len"], a["tags_len"]
        self.register_buffer("cat", torch.zeros(V, len(self.cat_sizes), dtype=torch.long))   # (V, F)
        self.register_buffer("num", torch.zeros(V, a["n_num"]))                               # (V, M)
        self.register_buffer("title", torch.zeros(V, T, dtype=torch.long))                   # (V, T)
        self.register_buffer("tags", torch.zeros(V, G, dtype=torch.long))                    # (V, G)
        self.register_buffer("image", torch.zeros(V, a["image_dim"]))                         # (V, D)
        self.register_buffer("has_image", torch.zeros(V))                                     # (V,)

    def set_bank(self, bank: dict) -> None:
        """Copy the catalogue's content (numpy arrays from data.ItemBank.arrays()) into the buffers."""
        for k in BANK_KEYS:
            getattr(self, k).copy_(torch.as_tensor(bank[k]))

    def set_neighbours(self, nbr, weights) -> None:
        """Copy the item graph ((V, M) neighbour item_idx and weights, data.item_neighbours) into the buffers."""
        self.nbr.copy_(torch.as_tensor(nbr))
        self.nbr_w.copy_(torch.as_tensor(weights))

    def _bank_rows(self, idx: torch.Tensor):
        """(known, row): whether each index is in the bank, and its bank row (0 where it is not)."""
        known = idx < self.n_items
        return known, torch.where(known, idx, torch.zeros_like(idx))

    def gather(self, idx: torch.Tensor) -> dict:
        """Content of items by index from the bank; indices beyond it get empty content."""
        flat = idx.reshape(-1)
        known, safe = self._bank_rows(flat)
        out = {"item_idx": flat}
        for k in BANK_KEYS:
            v = getattr(self, k)[safe]
            mask = known.view(-1, *([1] * (v.dim() - 1)))
            out[k] = v * mask.to(v.dtype)
        return out

    def id_rows(self, idx: torch.Tensor) -> torch.Tensor:
        """Row of the id table: the item's own below n_items, else (or under id dropout) a hash bucket."""
        bucket = self.n_items + hash_bucket(idx, self.id_buckets)
        unseen = idx >= self.n_items
        if self.training and self.id_dropout > 0:
            unseen = unseen | ((torch.rand(idx.shape, device=idx.device) < self.id_dropout) & (idx > 2))
        return torch.where(unseen, bucket, idx.long())

    def forward(self, f: dict) -> torch.Tensor:
        """Item vectors from a content dict (keys item_idx + BANK_KEYS, first dim N) -> (N, d)."""
        x = self.id_emb(self.id_rows(f["item_idx"]))                                   # (N, d)
        if self.item_graph > 0:
            known, safe = self._bank_rows(f["item_idx"])
            w = self.nbr_w[safe] * known[:, None]                                         # (N, M)
            x = x + self.item_graph * (w[..., None] * self.id_emb(self.nbr[safe])).sum(1)  # (N, d)
        cat = f["cat"]
        for j, emb in enumerate(self.cat_emb):
            if self.use[CAT_FIELDS[j]]:
                c = cat[:, j]
                x = x + emb(torch.where(c >= emb.num_embeddings, torch.full_like(c, OOV), c))
        if self.num_proj is not None and self.read_num:
            x = x + self.num_proj(f["num"] * self.num_keep)                             # (N, d)
        if self.use["title"]:
            x = x + self.title_bag(f["title"] % self.title_bag.num_embeddings)          # (N, d); empty bag -> 0
        if self.use["tags"]:
            tags = f["tags"]
            x = x + self.tag_bag(torch.where(tags >= self.tag_bag.num_embeddings, torch.full_like(tags, OOV), tags))
        if self.image_proj is not None and self.use["image"]:
            x = x + self.image_proj(f["image"]) * f["has_image"][:, None]
        return self.norm(x)                                                             # (N, d)

    def embed_idx(self, idx: torch.Tensor) -> torch.Tensor:
        """Vectors of items given by index (any shape S) -> (*S, d)."""
        return self(self.gather(idx)).view(*idx.shape, -1)
