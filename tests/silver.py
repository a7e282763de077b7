"""Tiny silver tables with planted interests, written with deltalake (no Spark) for model tests.

Items belong to one of ``categories`` planted categories (category_idx = cat + 2, an 8-d image
near the category's centroid, a title token per category). Each user has 1-3 planted
categories and, per event, picks one of them and the item that follows their previous item of
that category in a fixed per-category cycle (with some noise) — so the next item is predictable
from the history and users with several interests have several distinct "threads".

``popularity`` > 0 plants nothing instead: every event is an independent draw from
p(item) ∝ rank^-popularity over the whole catalogue, so the history says nothing about the next
item and ranking by popularity is the best any model can do.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pyarrow as pa
from deltalake import write_deltalake

from guim_features.config import load_config
from guim_features.schemas import FIRST_ITEM_INDEX, TEST, TRAIN, VALID

I32, I64, F32 = pa.int32(), pa.int64(), pa.float32()


def write_silver(lakehouse: Path, users: int = 200, items: int = 120, categories: int = 6, events: int = 30,
                 seed: int = 0, noise: float = 0.15, popularity: float = 0.0) -> dict:
    rng = np.random.default_rng(seed)
    lakehouse = Path(lakehouse)
    load_config(lakehouse.parent)     # the workspace around it (guim.yaml), as `guim ingest` would make
    idx = np.arange(FIRST_ITEM_INDEX, FIRST_ITEM_INDEX + items)
    cat = (idx - FIRST_ITEM_INDEX) % categories                    # planted category of each item
    centroids = rng.normal(size=(categories, 8))
    image = (centroids[cat] + 0.3 * rng.normal(size=(items, 8))).astype(np.float32)
    by_cat = [idx[cat == c] for c in range(categories)]
    write_deltalake(str(lakehouse / "item_index"), pa.table({
        "item_id": pa.array([f"i{i}" for i in idx]), "item_idx": pa.array(idx, I32)}))
    write_deltalake(str(lakehouse / "vocab"), pa.table({
        "field": ["category"] * categories + ["tag"] * categories,
        "value": [f"c{c}" for c in range(categories)] * 2,
        "idx": pa.array(list(range(2, categories + 2)) * 2, I32)}))
    write_deltalake(str(lakehouse / "item_features"), pa.table({
        "item_idx": pa.array(idx, I32), "item_id": [f"i{i}" for i in idx],
        "category_idx": pa.array(cat + 2, I32), "brand_idx": pa.array(rng.integers(2, 6, items), I32),
        "shop_idx": pa.array(np.zeros(items), I32),
        "price_norm": pa.array(rng.normal(size=items), F32), "year_norm": pa.array(np.zeros(items), F32),
        "title_tokens": pa.array([[int(c) + 1, int(rng.integers(50, 100))] for c in cat], pa.list_(I32)),
        "tag_ids": pa.array([[int(c) + 2] for c in cat], pa.list_(I32)),
        "image": pa.array([list(v) for v in image], pa.list_(F32))}))
    rows = {k: [] for k in ("user_id", "item_idx", "behavior", "ts", "gaps", "split", "n_train", "n_valid",
                            "n_test", "last_ts")}
    planted = []
    for u in range(users):
        mine = rng.choice(categories, size=int(rng.integers(1, 4)), replace=False)
        planted.append(sorted(int(c) for c in mine))
        pos = {int(c): int(rng.integers(len(by_cat[c]))) for c in mine}
        seq = []
        for _ in range(events):
            c = int(rng.choice(mine))
            pos[c] = (pos[c] + 1) % len(by_cat[c]) if rng.random() > noise else int(rng.integers(len(by_cat[c])))
            seq.append(int(by_cat[c][pos[c]]))
        if popularity > 0:
            p = np.arange(1, items + 1, dtype=float) ** -popularity
            seq = [int(i) for i in rng.choice(idx, size=events, p=p / p.sum())]
        n = len(seq)
        split = [TRAIN] * (n - 2) + [VALID, TEST]
        ts = list(1_700_000_000 + np.cumsum(rng.integers(60, 3600, n)))
        rows["user_id"].append(f"u{u}")
        rows["item_idx"].append(seq)
        rows["behavior"].append([int(b) for b in rng.integers(1, 5, n)])
        rows["ts"].append([int(t) for t in ts])
        rows["gaps"].append([0] + [int(g) for g in rng.integers(5, 12, n - 1)])
        rows["split"].append(split)
        rows["n_train"].append(n - 2)
        rows["n_valid"].append(1)
        rows["n_test"].append(1)
        rows["last_ts"].append(int(ts[-1]) * 1_000_000)
    write_deltalake(str(lakehouse / "user_sequences"), pa.table({
        "user_id": rows["user_id"], "item_idx": pa.array(rows["item_idx"], pa.list_(I32)),
        "behavior": pa.array(rows["behavior"], pa.list_(I32)), "ts": pa.array(rows["ts"], pa.list_(I64)),
        "gaps": pa.array(rows["gaps"], pa.list_(I32)), "split": pa.array(rows["split"], pa.list_(I32)),
        "n_train": pa.array(rows["n_train"], I32), "n_valid": pa.array(rows["n_valid"], I32),
        "n_test": pa.array(rows["n_test"], I32),
        "last_ts": pa.array(rows["last_ts"], pa.timestamp("us", tz="UTC"))}))
    return {"item_category": dict(zip(idx.tolist(), cat.tolist())), "planted": planted,
            "sequences": rows["item_idx"], "splits": rows["split"]}
