"""ingest -> sequences end to end on ML-100K and on synthetic data; reruns; incremental == full."""
from __future__ import annotations

from types import SimpleNamespace

import deltalake
import numpy as np
import pandas as pd
import pytest

from guim_features import sequences
from guim_features.config import load_config
from guim_features.ingest import ingest, read_source

ARGS = dict(source=None, path=None, events=None, items=None, users=None, num_users=None, num_items=None)


def table(ws, name) -> pd.DataFrame:
    return deltalake.DeltaTable(str(ws / "lakehouse" / name)).to_pandas()


def version(ws, name) -> int:
    return deltalake.DeltaTable(str(ws / "lakehouse" / name)).version()


@pytest.fixture(scope="module")
def ml_ws(spark, ml100k, tmp_path_factory):
    ws = tmp_path_factory.mktemp("ml")
    cfg = load_config(ws, ["sequences.max_len=200"])
    ingest(spark, cfg, *read_source(spark, cfg, SimpleNamespace(**{**ARGS, "source": "movielens",
                                                                    "path": str(ml100k)})), quiet=True)
    sequences.main(cfg, spark=spark, quiet=True)
    return ws, cfg


def test_ml100k_counts_order_and_leave_last_out(ml_ws, ml100k):
    ws, _ = ml_ws
    # expectations from the raw file, computed here with pandas, independently of the job
    raw = pd.read_csv(ml100k / "u.data", sep="\t", names=["u", "i", "r", "t"])
    assert (raw.u.nunique(), raw.i.nunique(), len(raw)) == (943, 1682, 100_000)
    assert len(table(ws, "events")) == 100_000
    assert len(table(ws, "items")) == 1682 and len(table(ws, "users")) == 943
    assert len(table(ws, "quarantine")) == 0 if (ws / "lakehouse" / "quarantine").exists() else True

    idx = table(ws, "item_index")
    assert len(idx) == 1682 and idx.item_idx.min() == 3 and idx.item_idx.max() == 1684

    seq = table(ws, "user_sequences")
    assert len(seq) == 943                               # every ML-100K user has >= 20 ratings
    per_user = raw.groupby("u").size()
    n = seq.set_index("user_id")
    expected_train = np.minimum(per_user.loc[n.index.astype(int)].to_numpy() - 2, 200)
    assert (n.n_train.to_numpy() == expected_train).all()
    assert (n.n_valid == 1).all() and (n.n_test == 1).all()
    for s in seq.itertuples():
        assert (np.diff(s.ts) >= 0).all(), f"user {s.user_id} out of time order"
        assert list(s.split[-2:]) == [1, 2] and set(s.split[:-2]) <= {0}
    # the test item is the user's last rating by time (ties broken by file order)
    raw["ord"] = np.arange(len(raw))
    last = raw.sort_values(["u", "t", "ord"]).groupby("u").tail(1).set_index("u").i.astype(str)
    fut = table(ws, "labels_future")
    test = fut[fut.split == 2].set_index("user_id").item_id
    assert len(test) == 943
    assert (test.loc[last.index.astype(str)].to_numpy() == last.to_numpy()).all()
    assert set(fut.behavior) <= {f"rate_{r}" for r in range(1, 6)}

    users = table(ws, "labels_users").set_index("user_id")
    assert users.loc["1", "gender"] == "M" and users.loc["1", "age_bucket"] == "18-24"   # u.user: 1|24|M|technician
    assert users.loc["1", "occupation"] == "technician"
    items = table(ws, "labels_items").set_index("item_id")
    assert list(items.loc["1", "tags"]) == ["Animation", "Children's", "Comedy"]       # Toy Story
    feats = table(ws, "item_features").set_index("item_id")
    assert feats.loc["1", "category_idx"] >= 2 and len(feats.loc["1", "title_tokens"]) == 2   # "toy story"


def test_ml100k_rerun_changes_nothing(spark, ml_ws, ml100k):
    ws, cfg = ml_ws
    before = {t: version(ws, t) for t in ("events", "user_sequences", "item_index", "item_features")}
    ingest(spark, cfg, *read_source(spark, cfg, SimpleNamespace(**{**ARGS, "source": "movielens",
                                                                    "path": str(ml100k)})), quiet=True)
    assert len(table(ws, "events")) == 100_000
    out = sequences.main(cfg, spark=spark, quiet=True)
    assert out["mode"] == "up-to-date"
    after = {t: version(ws, t) for t in before}
    assert {k: after[k] for k in ("user_sequences", "item_index", "item_features")} == \
           {k: before[k] for k in ("user_sequences", "item_index", "item_features")}


def _seq_by_item_id(ws) -> dict:
    """user -> [(item_id, behavior, ts, split)], independent of the index numbering."""
    inv = dict(zip(table(ws, "item_index").item_idx, table(ws, "item_index").item_id))
    return {s.user_id: [(inv[i], b, t, p) for i, b, t, p in zip(s.item_idx, s.behavior, s.ts, s.split)]
            for s in table(ws, "user_sequences").itertuples()}


def test_incremental_update_equals_full_rebuild(spark, tmp_path):
    from guim_features.ingest.synthetic import generate
    d = generate(users=60, items=80, events_per_user=12, categories=4, days=10, seed=3)
    ev = d.events.sort_values("ts")
    cut = ev.ts.quantile(0.7)
    first, second = ev[ev.ts < cut], ev[ev.ts >= cut]
    new_items = set(second.item_id) - set(first.item_id)
    assert new_items, "the second batch should bring items the first did not have"
    for name, part in (("a", first), ("b", second), ("all", ev)):
        part.to_parquet(tmp_path / f"{name}.parquet", coerce_timestamps="us", allow_truncated_timestamps=True)

    def run(ws, batches, full=False):
        cfg = load_config(ws, ["sequences.max_len=5"])
        out = None
        for b in batches:
            a = SimpleNamespace(**{**ARGS, "source": "table", "events": str(tmp_path / f"{b}.parquet")})
            ingest(spark, cfg, *read_source(spark, cfg, a), quiet=True)
            out = sequences.main(cfg, spark=spark, full=full, quiet=True)
        return out

    inc_ws, full_ws = tmp_path / "inc", tmp_path / "full"
    first_out = run(inc_ws, ["a"])
    idx_before = dict(zip(table(inc_ws, "item_index").item_id, table(inc_ws, "item_index").item_idx))
    out = run(inc_ws, ["b"])
    assert first_out["mode"] == "full" and out["mode"] == "incremental"
    assert out["users_rebuilt"] == second.user_id.nunique()          # only the affected users
    run(full_ws, ["all"], full=True)

    assert _seq_by_item_id(inc_ws) == _seq_by_item_id(full_ws)
    idx_after = dict(zip(table(inc_ws, "item_index").item_id, table(inc_ws, "item_index").item_idx))
    assert all(idx_after[k] == v for k, v in idx_before.items())      # existing ids keep their index
    assert sorted(idx_after.values())[-len(new_items):] == list(
        range(max(idx_before.values()) + 1, max(idx_before.values()) + 1 + len(new_items)))
    fut = lambda ws: sorted(map(tuple, table(ws, "labels_future")[["user_id", "item_id", "split"]].to_numpy().tolist()))  # noqa: E731
    assert fut(inc_ws) == fut(full_ws)
