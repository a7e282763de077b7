"""The silver tables the benchmark reads, as numpy arrays (docs/CONTRACTS.md).

Every method and every task sees the same :class:`BenchData`, so baselines and GUIM are
compared on the same splits. The protocol (leave-last-out, as the published leaderboards): methods learn from
the *train* part of ``user_sequences``; a user is represented from the *test input* (train +
valid events); targets are the test events. Tables are read with ``deltalake`` (no Spark).
"""
from __future__ import annotations

from dataclasses import dataclass, field
from functools import cached_property

import numpy as np

from ..errors import GuimError
from ..schemas import FIRST_ITEM_INDEX, TEST, TRAIN, VALID

NEEDED = ("item_index", "user_sequences", "labels_items", "labels_future")


def read_table(location: str, name: str, versions: dict | None = None):
    """A Delta table as a pandas DataFrame (its version noted in ``versions``); a missing table
    raises a GuimError naming the fix."""
    from deltalake import DeltaTable
    from deltalake.exceptions import TableNotFoundError

    try:
        table = DeltaTable(location)
        if versions is not None:
            versions[name] = table.version()
        return table.to_pyarrow_table().to_pandas()
    except TableNotFoundError:
        raise GuimError(f"silver table {name!r} not found at {location}; run `guim ingest` and "
                        f"`guim sequences` in this workspace first") from None


@dataclass
class BenchData:
    """Silver tables of one workspace, aligned by user row and by item_idx."""

    user_ids: np.ndarray                 # (U,) user_id strings, row order of every user array
    item_ids: np.ndarray                 # (V,) item_id by item_idx ("" for the reserved 0..2)
    seqs: list                           # U dicts of int arrays: item_idx, behavior, gaps, split
    labels_users: object                 # pandas DataFrame (labels_users)
    labels_items: object                 # pandas DataFrame (labels_items)
    labels_future: object                # pandas DataFrame (labels_future)
    behaviors: list = field(default_factory=list)  # behaviour names; code c is behaviors[c - 1]
    item_features: object = None         # pandas DataFrame (item_features) or None
    fingerprint: str = ""                # Delta versions of the tables read, e.g. "user_sequences@3,..."
    holdout: frozenset = frozenset()     # user_ids no method may learn from (user_holdout_view)

    @classmethod
    def load(cls, cfg) -> "BenchData":
        """Read the silver tables of ``cfg``'s workspace."""
        versions: dict = {}
        t = {n: read_table(cfg.table(n), n, versions) for n in NEEDED}
        try:  # written only when a users table was ingested; user_profile skips without it
            t["labels_users"] = read_table(cfg.table("labels_users"), "labels_users", versions)
        except GuimError:
            import pandas as pd

            t["labels_users"] = pd.DataFrame({"user_id": pd.Series([], dtype=str)})
        try:
            feats = read_table(cfg.table("item_features"), "item_features", versions)
        except GuimError:
            feats = None
        data = cls.from_frames(t["item_index"], t["user_sequences"], t["labels_users"],
                               t["labels_items"], t["labels_future"], list(cfg.ingest.behaviors), feats)
        data.fingerprint = cfg.table("") + " " + ",".join(f"{k}@{v}" for k, v in sorted(versions.items()))
        return data

    @classmethod
    def from_frames(cls, item_index, user_sequences, labels_users, labels_items, labels_future,
                    behaviors, item_features=None) -> "BenchData":
        if len(user_sequences) == 0:
            raise GuimError("user_sequences is empty: no user has enough events (sequences.min_events)")
        us = user_sequences.sort_values("user_id", kind="stable").reset_index(drop=True)
        n_items = int(item_index["item_idx"].max()) + 1
        item_ids = np.full(n_items, "", dtype=object)
        item_ids[item_index["item_idx"].to_numpy()] = item_index["item_id"].astype(str).to_numpy()
        seqs = [{k: np.asarray(r[k], dtype=np.int64) for k in ("item_idx", "behavior", "gaps", "split")}
                for r in us[["item_idx", "behavior", "gaps", "split"]].to_dict("records")]
        return cls(us["user_id"].astype(str).to_numpy(), item_ids, seqs, labels_users, labels_items,
                   labels_future, list(behaviors), item_features)

    def valid_view(self) -> "BenchData":
        """The same users with their test events removed and their valid events as the targets:
        choosing a method's settings on this view never looks at the test split."""
        seqs = []
        for s in self.seqs:
            keep = s["split"] != TEST
            seqs.append({k: (np.where(v[keep] == VALID, TEST, v[keep]) if k == "split" else v[keep])
                         for k, v in s.items()})
        return BenchData(self.user_ids, self.item_ids, seqs, self.labels_users, self.labels_items,
                         self.labels_future, self.behaviors, self.item_features, self.fingerprint + " (valid view)",
                         self.holdout)

    def user_holdout_view(self, share: float, input_share: float = 0.8, seed: int = 0,
                          scored: str = "test") -> "BenchData":
        """A share of the users (at least 2 events each, drawn with ``seed``) held out entirely, as
        the multi-interest literature evaluates (ComiRec, Cen et al. 2020): a held-out user has no
        train part, the first ``input_share`` of their events (time order, at least one) are their
        test input (coded valid) and the rest their test targets. The other users are unchanged.
        Methods fitted on this view learn from the train part only, so never from a held-out user;
        ``holdout`` names them for methods that read the silver tables themselves (GUIM).

        ``scored="valid"`` scores a second, disjoint draw of the same size instead (drawn with
        ``seed + 1`` from the rest of the pool), for choosing settings: the test draw is then held
        out of the fit too, as input only, with no targets, so it is neither learnt from nor scored."""
        if scored not in ("test", "valid"):
            raise GuimError(f"bench.holdout_scored must be test or valid, got {scored!r}")
        n = np.array([len(s["item_idx"]) for s in self.seqs])
        pool = np.flatnonzero(n >= 2)
        size = min(len(pool), max(1, round(share * len(pool))))
        test = np.sort(np.random.default_rng(seed).choice(pool, size=size, replace=False))
        input_only, scored_rows = np.empty(0, np.int64), test
        if scored == "valid":
            rest = np.setdiff1d(pool, test)
            input_only, scored_rows = test, np.sort(np.random.default_rng(seed + 1).choice(
                rest, size=min(size, len(rest)), replace=False))
        seqs = list(self.seqs)
        for u in input_only:
            seqs[u] = {**self.seqs[u], "split": np.full(n[u], VALID, np.int64)}
        for u in scored_rows:
            cut = min(max(1, int(input_share * n[u])), n[u] - 1)
            seqs[u] = {**self.seqs[u], "split": np.where(np.arange(n[u]) < cut, VALID, TEST).astype(np.int64)}
        held = np.concatenate([input_only, scored_rows])
        return BenchData(self.user_ids, self.item_ids, seqs, self.labels_users, self.labels_items,
                         self.labels_future, self.behaviors, self.item_features,
                         self.fingerprint + f" (user holdout {share:g}{', valid users' if scored == 'valid' else ''})",
                         frozenset(self.user_ids[held].tolist()))

    @property
    def holdout_rows(self) -> np.ndarray:
        """Rows of the held-out users that have targets (empty outside a user-holdout view)."""
        return np.array([self.user_row[u] for u in sorted(self.holdout)
                         if len(self.test_targets(self.user_row[u]))], dtype=np.int64)

    # -- sizes --------------------------------------------------------------------------
    @property
    def n_users(self) -> int:
        return len(self.user_ids)

    @property
    def n_items(self) -> int:
        """Vocabulary size V = max(item_idx) + 1 (reserved rows 0..2 included)."""
        return len(self.item_ids)

    # -- protocol views -----------------------------------------------------------------
    def part(self, u: int, splits: tuple, key: str = "item_idx") -> np.ndarray:
        s = self.seqs[u]
        return s[key][np.isin(s["split"], splits)]

    def train_items(self, u: int) -> np.ndarray:
        """Items of user row u's train part, in time order."""
        return self.part(u, (TRAIN,))

    def test_input(self, u: int, key: str = "item_idx") -> np.ndarray:
        """The test-time input of user row u (train + valid events), in time order."""
        return self.part(u, (TRAIN, VALID), key)

    def test_targets(self, u: int) -> np.ndarray:
        return self.part(u, (TEST,))

    @cached_property
    def train_counts(self) -> np.ndarray:
        """(V,) interactions per item in the train part (0 for reserved and cold items)."""
        c = np.bincount(np.concatenate([self.train_items(u) for u in range(self.n_users)]),
                        minlength=self.n_items)
        c[:FIRST_ITEM_INDEX] = 0
        return c

    @cached_property
    def warm_items(self) -> np.ndarray:
        """item_idx values seen at least once in the train part."""
        return np.flatnonzero(self.train_counts > 0)

    @cached_property
    def user_row(self) -> dict:
        return {u: i for i, u in enumerate(self.user_ids)}

    # -- labels -------------------------------------------------------------------------
    @cached_property
    def item_category(self) -> np.ndarray:
        """(V,) category string per item_idx (None where unknown)."""
        out = np.full(self.n_items, None, dtype=object)
        li = self.labels_items.dropna(subset=["item_idx"])
        out[li["item_idx"].astype(int).to_numpy()] = li["category"].to_numpy()
        return out

    @cached_property
    def item_tags(self) -> list:
        """V sets of tag strings per item_idx (empty where none)."""
        out = [frozenset()] * self.n_items
        for i, t in zip(self.labels_items["item_idx"], self.labels_items["tags"]):
            if i is not None and t is not None and len(t):
                out[int(i)] = frozenset(str(x) for x in t)
        return out
