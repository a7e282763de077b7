"""Silver Delta tables straight into PyTorch, without Spark.

- ``ItemBank``: the catalogue's content from ``item_features`` (+ sizes from ``vocab``) as dense
  numpy arrays, one row per item_idx; it becomes the item tower's feature bank.
- ``TrainStream``: training windows from ``user_sequences`` read batch by batch from the Delta
  table's Parquet files (pyarrow dataset), with a bounded shuffle buffer: memory depends on the
  batch and the buffer, not on the table. Same seed and epoch -> same batches. Each user's
  training part is cut into windows of ``max_len + 1`` (inputs + next-item targets), from the
  most recent backwards (``windows=last`` keeps only the most recent one).
- ``eval_batches``: valid/test inputs and targets under the protocol of docs/CONTRACTS.md.

Batches are left-padded (PAD = 0) so the most recent event is always the last position.
"""
from __future__ import annotations

import os
from typing import Iterator

import numpy as np

from .errors import GuimError
from .schemas import FIRST_ITEM_INDEX, TEST, TRAIN, VALID

CAT_COLUMNS = ("category_idx", "brand_idx", "shop_idx")     # item_features categorical columns
NUM_COLUMNS = ("price_norm", "year_norm")                  # item_features numeric columns


def delta_table(cfg, name: str):
    """The ``deltalake.DeltaTable`` of silver table ``name``, or a GuimError saying how to build it."""
    from deltalake import DeltaTable

    path = cfg.table(name)
    try:
        return DeltaTable(path)
    except Exception as e:  # deltalake raises TableNotFoundError / OSError variants
        raise GuimError(f"silver table {name!r} not found at {path} ({type(e).__name__}); "
                        f"run `guim ingest` and `guim sequences` on this workspace first") from None


def table_versions(cfg, names=("item_index", "item_features", "user_sequences", "vocab"),
                   with_id: bool = False) -> dict:
    """Delta version of each table read (logged as MLflow tags); ``with_id``: ``"<table id>@<version>"``,
    which also tells a table deleted and rebuilt up to the same version from the original."""
    out = {}
    for n in names:
        try:
            dt = delta_table(cfg, n)
            out[n] = f"{dt.metadata().id}@{dt.version()}" if with_id else dt.version()
        except GuimError:
            out[n] = None
    return out


def pad_lists(values, width: int, dtype=np.int64) -> np.ndarray:
    """A column of lists/arrays/None -> (N, width) array, left-aligned, truncated, zero-padded."""
    out = np.zeros((len(values), width), dtype=dtype)
    for i, v in enumerate(values):
        if v is None or width == 0:
            continue
        v = np.asarray(v, dtype=dtype)[:width]
        out[i, :len(v)] = v
    return out


def features_from_frame(df, title_len: int, tags_len: int, image_dim: int) -> dict:
    """Rows in the item_features schema (a pandas DataFrame) -> numpy content dict for ItemTower.

    Missing content columns count as missing values (zeros); a missing or wrong-sized image
    counts as no image."""
    n = len(df)
    if "item_idx" not in df.columns:
        raise GuimError(f"item features need an item_idx column (got {list(df.columns)})")
    col = lambda c: df[c].to_numpy() if c in df.columns else None  # noqa: E731
    cat = np.stack([np.nan_to_num(col(c).astype(float)).astype(np.int64) if c in df.columns
                    else np.zeros(n, np.int64) for c in CAT_COLUMNS], 1) if n else np.zeros((0, 3), np.int64)
    num = np.stack([np.nan_to_num(col(c).astype(np.float32)) if c in df.columns
                    else np.zeros(n, np.float32) for c in NUM_COLUMNS], 1) if n else np.zeros((0, 2), np.float32)
    images = col("image") if "image" in df.columns else [None] * n
    has = np.array([v is not None and len(v) == image_dim for v in images], dtype=np.float32)
    image = pad_lists([v if h else None for v, h in zip(images, has)], image_dim, np.float32)
    return {"item_idx": df["item_idx"].to_numpy().astype(np.int64), "cat": np.maximum(cat, 0),
            "num": num.astype(np.float32),
            "title": pad_lists(col("title_tokens") if "title_tokens" in df.columns else [None] * n, title_len),
            "tags": pad_lists(col("tag_ids") if "tag_ids" in df.columns else [None] * n, tags_len),
            "image": image, "has_image": has}


class ItemBank:
    """The training catalogue's content, one row per item_idx (rows 0..2 are the reserved ids)."""

    def __init__(self, cfg):
        index = delta_table(cfg, "item_index").to_pyarrow_table(columns=["item_idx"])
        feats = delta_table(cfg, "item_features").to_pyarrow_table().to_pandas()
        self.n_items = int(max(index.column("item_idx").to_numpy().max(initial=0),
                               feats["item_idx"].max() if len(feats) else 0)) + 1
        try:
            vocab = delta_table(cfg, "vocab").to_pyarrow_table().to_pandas()
        except GuimError:
            vocab = None
        vmax = lambda f: int(vocab.loc[vocab["field"] == f, "idx"].max()) if (  # noqa: E731
            vocab is not None and (vocab["field"] == f).any()) else 0
        imgs = [v for v in feats.get("image", []) if v is not None and len(v)]
        self.image_dim = len(imgs[0]) if imgs else 0
        self.title_len, self.tags_len = cfg.sequences.title_max_tokens, cfg.sequences.max_tags
        f = features_from_frame(feats, self.title_len, self.tags_len, self.image_dim)
        self.cat_sizes = [max(2, vmax(c.replace("_idx", "")) + 1, int(f["cat"][:, j].max(initial=0)) + 1)
                          for j, c in enumerate(CAT_COLUMNS)]
        self.tag_size = max(2, vmax("tag") + 1, int(f["tags"].max(initial=0)) + 1)
        self.title_buckets = max(cfg.sequences.title_buckets + 1, int(f["title"].max(initial=0)) + 1)
        self.n_behaviors, self.gap_buckets = len(cfg.ingest.behaviors), cfg.sequences.gap_buckets
        V, rows = self.n_items, f.pop("item_idx")
        self._arrays = {k: np.zeros((V,) + v.shape[1:], v.dtype) for k, v in f.items()}
        for k, v in f.items():
            self._arrays[k][rows] = v

    def arrays(self) -> dict:
        return self._arrays

    def sizes(self) -> dict:
        return {"n_items": self.n_items, "cat_sizes": self.cat_sizes, "n_num": len(NUM_COLUMNS),
                "title_buckets": self.title_buckets, "tag_size": self.tag_size, "title_len": self.title_len,
                "tags_len": self.tags_len, "image_dim": self.image_dim, "n_behaviors": self.n_behaviors,
                "gap_buckets": self.gap_buckets}


def _user_rows(dt, columns, batch_rows: int = 1024, skip_users: frozenset = frozenset()) -> Iterator[dict]:
    """Stream user_sequences rows as dicts of numpy arrays, reading one Parquet batch at a time;
    users whose user_id is in ``skip_users`` are left out (a user-holdout evaluation)."""
    ds = dt.to_pyarrow_dataset()
    read = list(columns) + (["user_id"] if skip_users else [])
    for rb in ds.to_batches(columns=read, batch_size=batch_rows):
        cols = {}
        for c in columns:
            arr = rb.column(c)
            offs, vals = arr.offsets.to_numpy(), arr.values.to_numpy(zero_copy_only=False)
            cols[c] = (offs, vals)
        ids = rb.column("user_id").to_pylist() if skip_users else None
        for i in range(rb.num_rows):
            if ids is None or ids[i] not in skip_users:
                yield {c: v[o[i]:o[i + 1]] for c, (o, v) in cols.items()}


SEQ_COLUMNS = ["item_idx", "behavior", "gaps", "split"]


def left_pad(seqs: list, width: int) -> np.ndarray:
    """List of 1-D int arrays -> (B, width), right-aligned (most recent last), keeping the last width."""
    out = np.zeros((len(seqs), width), dtype=np.int64)
    for i, s in enumerate(seqs):
        s = np.asarray(s)[-width:] if width else s[:0]
        if len(s):
            out[i, width - len(s):] = s
    return out


def _windows(row: dict, L: int, mode: str) -> list:
    """Training windows (items, behavior, gaps) of length <= L+1 from a user's TRAIN part."""
    tr = row["split"] == TRAIN
    it, be, ga = row["item_idx"][tr], row["behavior"][tr], row["gaps"][tr]
    out, end = [], len(it)
    while end >= 2:
        start = max(0, end - L - 1)
        out.append((it[start:end], be[start:end], ga[start:end]))
        if mode == "last":
            break
        end -= L
    return out


def count_windows(cfg, L: int, mode: str, rank: int = 0, world: int = 1, skip_users: frozenset = frozenset()) -> int:
    """Number of training windows (this rank's share) without reading the sequences themselves."""
    t = delta_table(cfg, "user_sequences").to_pyarrow_table(columns=["n_train"] + (["user_id"] if skip_users else []))
    n = t.column("n_train").to_numpy()
    if skip_users:
        n = n[~np.isin(np.asarray(t.column("user_id").to_pylist(), dtype=object), list(skip_users))]
    n = n[rank::world]
    per = np.where(n >= 2, 1 if mode == "last" else np.ceil((n - 1) / L), 0)
    return int(per.sum())


class TrainStream:
    """Shuffled training batches (dicts of (B, W) int64 arrays, W <= L + 1 the batch's longest window)
    for one epoch at a time."""

    def __init__(self, cfg, L: int, batch_size: int, seed: int, mode: str = "all", buffer: int = 20000,
                 rank: int = 0, world: int = 1, skip_users: frozenset = frozenset()):
        if mode not in ("all", "last"):
            raise GuimError(f"train.windows={mode!r} is not one of all, last")
        self.dt = delta_table(cfg, "user_sequences")
        self.L, self.bs, self.seed, self.mode = L, batch_size, seed, mode
        self.buffer, self.rank, self.world, self.epoch = max(buffer, batch_size), rank, world, 0
        self.skip_users = frozenset(skip_users)

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def _emit(self, buf: list, rng, final: bool):
        """Batches from the shuffle buffer, grouped by length: the buffer is shuffled, sorted by
        window length (stable, so equal lengths stay shuffled), cut into batches, and the batches
        are yielded in random order. Each batch is padded only to its own longest window, so
        compute is spent on real events, not on padding (most users have far fewer than max_len)."""
        perm = rng.permutation(len(buf))
        take = len(buf) if final else len(buf) // self.bs * self.bs
        chosen = perm[:take]                     # the rest (random, any length) waits for the next fill
        chosen = chosen[np.argsort(np.array([len(buf[j][0]) for j in chosen]), kind="stable")]
        for s in rng.permutation(np.arange(0, take, self.bs)):
            yield self._collate([buf[j] for j in chosen[s:s + self.bs]])
        return [buf[j] for j in perm[take:]]

    def __iter__(self) -> Iterator[dict]:
        rng = np.random.default_rng([self.seed, self.epoch])
        buf: list = []
        for i, row in enumerate(_user_rows(self.dt, SEQ_COLUMNS, skip_users=self.skip_users)):
            if i % self.world != self.rank:
                continue
            buf.extend(_windows(row, self.L, self.mode))
            if len(buf) >= self.buffer:
                buf = yield from self._emit(buf, rng, final=False)
        if buf:
            yield from self._emit(buf, rng, final=True)

    def _collate(self, wins: list) -> dict:
        W = max(len(w[0]) for w in wins)                       # <= L + 1
        return {"items": left_pad([w[0] for w in wins], W), "behavior": left_pad([w[1] for w in wins], W),
                "gaps": left_pad([w[2] for w in wins], W)}


def item_counts(cfg, n_items: int, skip_users: frozenset = frozenset()) -> np.ndarray:
    """How often each item_idx occurs in the training parts (popularity; the sampler's log-Q)."""
    counts = np.zeros(n_items, dtype=np.float64)
    for row in _user_rows(delta_table(cfg, "user_sequences"), ["item_idx", "split"], skip_users=skip_users):
        it = row["item_idx"][row["split"] == TRAIN]
        np.add.at(counts, it[it < n_items], 1)
    return counts


def item_neighbours(cfg, n_items: int, M: int, skip_users: frozenset = frozenset()) -> tuple:
    """The item graph of the training parts: each item's ``M`` most frequent neighbours (the items
    right before or after it in a user's TRAIN part, itself excluded) and their weights (the pair
    counts, normalised to sum 1 per item) -> ((V, M) int64, (V, M) float32), 0-padded where an item
    has fewer neighbours. Valid and test events never enter it."""
    src, dst = [], []
    for row in _user_rows(delta_table(cfg, "user_sequences"), ["item_idx", "split"], skip_users=skip_users):
        it = row["item_idx"][row["split"] == TRAIN].astype(np.int64)
        a, b = it[:-1], it[1:]
        keep = (a != b) & (a >= FIRST_ITEM_INDEX) & (b >= FIRST_ITEM_INDEX) & (a < n_items) & (b < n_items)
        src += [a[keep], b[keep]]
        dst += [b[keep], a[keep]]
    nbr, w = np.zeros((n_items, M), np.int64), np.zeros((n_items, M), np.float32)
    if not src:
        return nbr, w
    code, count = np.unique(np.concatenate(src) * n_items + np.concatenate(dst), return_counts=True)
    s, d = code // n_items, code % n_items
    order = np.lexsort((-count, s))                                   # by item, its most frequent first
    s, d, count = s[order], d[order], count[order]
    rank = np.arange(len(s)) - np.searchsorted(s, s)                  # position within the item's list
    top = rank < M
    nbr[s[top], rank[top]] = d[top]
    w[s[top], rank[top]] = count[top]
    w /= np.maximum(w.sum(1, keepdims=True), 1.0)
    return nbr, w


def catalogue_items(item_idx, n_items: int) -> np.ndarray:
    """A user's item_idx (any order, repeats) -> the distinct ones in ``[FIRST_ITEM_INDEX, n_items)``,
    sorted int64: the set a user vector (fold-in, profile head) reads."""
    a = np.unique(np.asarray(item_idx, np.int64))
    return a[(a >= FIRST_ITEM_INDEX) & (a < n_items)]


def train_item_sets(cfg, n_items: int, skip_users: frozenset = frozenset()) -> list:
    """Every user's :func:`catalogue_items` of the TRAIN part, one array per user: what the profile
    head is trained on."""
    return [catalogue_items(row["item_idx"][row["split"] == TRAIN], n_items)
            for row in _user_rows(delta_table(cfg, "user_sequences"), ["item_idx", "split"], skip_users=skip_users)]


def train_sequences(cfg, skip_users: frozenset = frozenset(), with_valid: bool = False) -> Iterator[np.ndarray]:
    """Every user's TRAIN part (item_idx in time order), one array per user: what the transition
    prior counts for ranking valid. ``with_valid``: the TRAIN and VALID parts, every event before the
    test split (what it counts for ranking test)."""
    for row in _user_rows(delta_table(cfg, "user_sequences"), ["item_idx", "split"], skip_users=skip_users):
        keep = row["split"] == TRAIN
        yield row["item_idx"][(keep | (row["split"] == VALID)) if with_valid else keep]


def eval_batches(cfg, which: str, L: int, batch_size: int, max_users: int = 0, seed: int = 0,
                 skip_users: frozenset = frozenset()) -> Iterator[dict]:
    """Full-ranking evaluation batches: inputs (B, W <= L) left-padded, target (B,), seen (list of arrays).

    valid: input = TRAIN part, target = first VALID event; test: input = TRAIN + VALID parts,
    target = first TEST event. Users without a target are skipped. ``max_users`` > 0 keeps a
    fixed random subset of that many users (the same for a given seed), for a cheaper
    per-epoch validation; every ranking is still over the whole catalogue."""
    if which not in ("valid", "test"):
        raise GuimError(f"eval split {which!r} is not one of valid, test")
    tsplit = VALID if which == "valid" else TEST
    dt = delta_table(cfg, "user_sequences")
    keep_row = None
    if max_users > 0:
        n = dt.to_pyarrow_dataset().count_rows()
        if max_users < n:
            keep_row = np.zeros(n, dtype=bool)
            keep_row[np.random.default_rng(seed).choice(n, max_users, replace=False)] = True
    rows: list = []
    for i, row in enumerate(_user_rows(dt, SEQ_COLUMNS, skip_users=skip_users)):
        if keep_row is not None and not keep_row[i]:
            continue
        sp = row["split"]
        tg = np.flatnonzero(sp == tsplit)
        if not len(tg):
            continue
        keep = sp < tsplit
        rows.append((row["item_idx"][keep], row["behavior"][keep], row["gaps"][keep], row["item_idx"][tg[0]]))
        if len(rows) == EVAL_GROUP * batch_size:
            yield from _eval_group(rows, L, batch_size)
            rows = []
    if rows:
        yield from _eval_group(rows, L, batch_size)


EVAL_GROUP = 16   # users are read this many batches at a time and batched by input length


def _eval_group(rows: list, L: int, batch_size: int) -> Iterator[dict]:
    """Batches of users with similar input lengths, each padded to its longest input (<= L): the
    encoder's work follows the real events, not max_len. The metrics are sums over users, so the
    order does not matter."""
    rows = sorted(rows, key=lambda r: min(len(r[0]), L))
    for s in range(0, len(rows), batch_size):
        yield _eval_collate(rows[s:s + batch_size], L)


def _eval_collate(rows: list, L: int) -> dict:
    W = max(1, min(L, max(len(r[0]) for r in rows)))
    return {"items": left_pad([r[0] for r in rows], W), "behavior": left_pad([r[1] for r in rows], W),
            "gaps": left_pad([r[2] for r in rows], W), "target": np.array([r[3] for r in rows], np.int64),
            "seen": [r[0] for r in rows]}


def rank_metrics(scores: np.ndarray, target: np.ndarray, seen: list, ks=(10, 20), seed: int = 0) -> dict:
    """Sum of Recall@k and NDCG@k over users, ranking all items; scores (B, V) indexed by item_idx
    (columns < FIRST_ITEM_INDEX and each user's seen items are excluded). One target per user.

    Ties are broken uniformly at random (seeded): the target's rank is the number of eligible
    items scored above it plus a uniform draw among the items scored equal to it. A model that
    scores everything the same therefore gets Recall@k = k / N in expectation, not 1; NaN scores
    count as the lowest score. A target that was seen or is outside the catalogue is a miss."""
    B, V = scores.shape
    s = np.nan_to_num(scores.astype(np.float32, copy=True), nan=-np.inf)
    excl = np.zeros((B, V), dtype=bool)
    excl[:, :FIRST_ITEM_INDEX] = True
    for i, items in enumerate(seen):
        excl[i, items[(items >= 0) & (items < V)]] = True
    rows = np.arange(B)
    inside = (target >= FIRST_ITEM_INDEX) & (target < V)
    tgt = np.clip(target, 0, V - 1)
    t = s[rows, tgt]
    eligible = ~excl
    above = ((s > t[:, None]) & eligible).sum(1)
    tied = ((s == t[:, None]) & eligible).sum(1) - 1          # other items with the target's score
    draw = np.random.default_rng(seed).random(B)
    rank = above + np.floor(draw * (np.maximum(tied, 0) + 1)).astype(np.int64)   # 0-based
    rank = np.where(inside & ~excl[rows, tgt], rank, V)
    out = {}
    for k in ks:
        hit = rank < k
        out[f"recall@{k}"] = float(hit.sum())
        out[f"ndcg@{k}"] = float((hit / np.log2(rank + 2)).sum())
    out["n"] = float(B)
    return out
