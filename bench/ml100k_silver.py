"""TEMPORARY: ML-100K silver tables written with pandas + deltalake, following docs/CONTRACTS.md.

Only for bench/train.py until `guim ingest --source movielens` + `guim sequences` are used
(bench/train.py prefers them when guim_features/sequences.py exists). Protocol: every rating
is an interaction, per user sorted by timestamp (ties by file order); last = test,
second-last = valid, the rest = train (capped to the most recent ``max_len``).
"""
from __future__ import annotations

import zlib
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
from deltalake import write_deltalake

I32, I64, F32 = pa.int32(), pa.int64(), pa.float32()
GENRES = ["unknown", "Action", "Adventure", "Animation", "Children's", "Comedy", "Crime", "Documentary", "Drama",
          "Fantasy", "Film-Noir", "Horror", "Musical", "Mystery", "Romance", "Sci-Fi", "Thriller", "War", "Western"]


def build(ml100k: Path, lakehouse: Path, max_len: int = 200, title_buckets: int = 4096) -> None:
    ml100k, lakehouse = Path(ml100k), Path(lakehouse)
    ev = pd.read_csv(ml100k / "u.data", sep="\t", names=["user", "item", "rating", "ts"])
    ev["order"] = np.arange(len(ev))
    it = pd.read_csv(ml100k / "u.item", sep="|", header=None, encoding="latin-1")
    items = sorted(ev["item"].unique())
    idx = {i: k + 3 for k, i in enumerate(items)}
    write_deltalake(str(lakehouse / "item_index"), pa.table({
        "item_id": [str(i) for i in items], "item_idx": pa.array([idx[i] for i in items], I32)}), mode="overwrite")
    it = it.set_index(0).loc[items]
    flags = it.iloc[:, 4:23].to_numpy()
    year = pd.to_datetime(it[2], format="%d-%b-%Y", errors="coerce").dt.year.astype(float)
    year_norm = ((year - year.mean()) / year.std()).fillna(0).to_numpy()
    first = [int(np.flatnonzero(f)[0]) + 2 if f.any() else 1 for f in flags]
    tags = [[int(g) + 2 for g in np.flatnonzero(f)] for f in flags]
    titles = [[zlib.crc32(w.encode()) % title_buckets + 1 for w in str(t).lower().split()[:16]] for t in it[1]]
    write_deltalake(str(lakehouse / "vocab"), pa.table({
        "field": ["category"] * 19 + ["tag"] * 19, "value": GENRES * 2,
        "idx": pa.array(list(range(2, 21)) * 2, I32)}), mode="overwrite")
    n = len(items)
    write_deltalake(str(lakehouse / "item_features"), pa.table({
        "item_idx": pa.array([idx[i] for i in items], I32), "item_id": [str(i) for i in items],
        "category_idx": pa.array(first, I32), "brand_idx": pa.array(np.zeros(n), I32),
        "shop_idx": pa.array(np.zeros(n), I32), "price_norm": pa.array(np.zeros(n), F32),
        "year_norm": pa.array(year_norm, F32), "title_tokens": pa.array(titles, pa.list_(I32)),
        "tag_ids": pa.array(tags, pa.list_(I32)), "image": pa.array([None] * n, pa.list_(F32))}),
        mode="overwrite")
    rows = {k: [] for k in ("user_id", "item_idx", "behavior", "ts", "gaps", "split")}
    for u, g in ev.sort_values(["user", "ts", "order"]).groupby("user", sort=True):
        if len(g) < 3:
            continue
        seq = g["item"].map(idx).to_numpy()
        ts = g["ts"].to_numpy()
        beh = g["rating"].to_numpy() + 4                      # rate_r -> code of "rate_r" in ingest.behaviors
        gap = np.concatenate([[0], np.clip(np.floor(np.log2(np.diff(ts) + 1)), 0, 31)]).astype(int)
        keep = np.r_[np.arange(max(0, len(seq) - 2 - max_len), len(seq) - 2), len(seq) - 2, len(seq) - 1]
        split = [0] * (len(keep) - 2) + [1, 2]
        rows["user_id"].append(str(u))
        for k, v in (("item_idx", seq), ("behavior", beh), ("ts", ts), ("gaps", gap)):
            rows[k].append([int(x) for x in v[keep]])
        rows["split"].append(split)
    m = len(rows["user_id"])
    write_deltalake(str(lakehouse / "user_sequences"), pa.table({
        "user_id": rows["user_id"], "item_idx": pa.array(rows["item_idx"], pa.list_(I32)),
        "behavior": pa.array(rows["behavior"], pa.list_(I32)), "ts": pa.array(rows["ts"], pa.list_(I64)),
        "gaps": pa.array(rows["gaps"], pa.list_(I32)), "split": pa.array(rows["split"], pa.list_(I32)),
        "n_train": pa.array([len(s) - 2 for s in rows["split"]], I32), "n_valid": pa.array(np.ones(m), I32),
        "n_test": pa.array(np.ones(m), I32),
        "last_ts": pa.array([t[-1] * 1_000_000 for t in rows["ts"]], pa.timestamp("us", tz="UTC"))}),
        mode="overwrite")
