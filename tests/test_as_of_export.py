"""As-of export with a real model, Spark and Delta: no future event ever reaches a snapshot.

(a) events added after TIME (and a new user) change nothing in the as-of-TIME vectors, bit for bit;
(b) the snapshot joined to a label never saw the label's own event: the vector equals the model's
    encoding of the user's events strictly before the label, computed here by hand from the
    events this test wrote — on the file and on the Spark offline store;
plus: a rerun adds nothing, and an incremental run writes only users with new events.
"""
from __future__ import annotations

import argparse
import shutil
from datetime import datetime, timedelta, timezone

import numpy as np
import pandas as pd
import pyarrow as pa
import pytest
from deltalake import DeltaTable, write_deltalake

from guim_features.config import load_config, replace

START = datetime(2026, 1, 1, tzinfo=timezone.utc)
T = datetime(2026, 1, 8, tzinfo=timezone.utc)          # the as-of time of test (a)
BEHAVIORS = ["pv", "cart", "buy"]


def _events(rng, users, first_day, days, per_user) -> list[tuple]:
    """(user, item, behaviour, ts) with ts = day start + whole hours + 17 s (no gap is 2^k - 1 s)."""
    out = []
    for u in users:
        for _ in range(per_user):
            day = int(rng.integers(first_day, first_day + days))
            ts = START + timedelta(days=day, hours=int(rng.integers(0, 24)), seconds=17)
            out.append((u, f"i{int(rng.integers(0, 30))}", BEHAVIORS[int(rng.integers(0, 3))], ts))
    return out


def _write_events(cfg, rows, start_ord=0):
    import hashlib

    write_deltalake(cfg.table("events"), pa.table({
        "event_id": [hashlib.sha1(repr(r).encode()).hexdigest() for r in rows],
        "user_id": [r[0] for r in rows], "item_id": [r[1] for r in rows], "behavior": [r[2] for r in rows],
        "ts": pa.array([r[3] for r in rows], pa.timestamp("us", tz="UTC")),
        "ord": pa.array(range(start_ord, start_ord + len(rows)), pa.int64()),
        "source": ["test"] * len(rows)}), mode="append")


@pytest.fixture(scope="module")
def trained(spark, tmp_path_factory):
    """Bronze events of 12 users over days 0-13, silver, a tiny registered model."""
    from guim_features import sequences
    from guim_features.train import train_model

    ws = tmp_path_factory.mktemp("asof") / "ws"
    cfg = load_config(ws, ["ingest.behaviors=[pv, cart, buy]", "sequences.min_events=1"])
    rng = np.random.default_rng(3)
    rows = _events(rng, [f"u{k}" for k in range(12)], 0, 14, 10)
    # an event exactly at T: "before T" excludes it
    rows.append(("u0", "i1", "buy", T))
    _write_events(cfg, rows)
    write_deltalake(cfg.table("items"), pa.table({
        "item_id": [f"i{k}" for k in range(30)], "category": [f"c{k % 3}" for k in range(30)],
        "brand": ["b"] * 30, "shop": ["s"] * 30, "price": [float(k) for k in range(30)],
        "year": pa.array([None] * 30, pa.int32()), "title": [f"thing {k % 3}" for k in range(30)],
        "tags": pa.array([[f"t{k % 3}"] for k in range(30)], pa.list_(pa.string())),
        "image": pa.array([None] * 30, pa.list_(pa.float32())), "source": ["test"] * 30}))
    sequences.main(cfg, spark=spark, quiet=True)
    res = train_model(cfg, overrides={"epochs": 1, "d": 8, "K": 2, "layers": 1, "heads": 1, "max_len": 6},
                      progress=False)
    # export this version by number: one epoch need not beat popularity, which alias challenger requires
    cfg = replace(cfg, embed=replace(cfg.embed, model_uri=f"models:/guim/{res.model_version}"))
    return cfg, rows, res.model_version


def _gold_users(cfg, version, at=None) -> dict:
    t = DeltaTable(cfg.table("user_embeddings")).to_pandas()
    t = t[t["model_version"] == version]
    if at is not None:
        t = t[t["event_timestamp"] == pd.Timestamp(at)]
    return {r.user_id: (np.stack(r.interests), np.asarray(r.weights), np.asarray(r.profile), list(r.seen_items))
            for r in t.itertuples()}


def _seen_by_hand(rows, user, before, behaviors=None) -> list[str]:
    """Item ids of ``user``'s events with ts < ``before`` (of ``behaviors`` only, if given), distinct,
    the most recently seen first."""
    mine = sorted((r for r in rows if r[0] == user and r[3] < before and (behaviors is None or r[2] in behaviors)),
                  key=lambda r: r[3])
    out = []
    for r in reversed(mine):
        if r[1] not in out:
            out.append(r[1])
    return out


def _by_hand(cfg, emb, rows, user, before):
    """The model's vectors (interests, weights, profile) for ``user`` from the events this test wrote
    with ts < ``before``."""
    index = DeltaTable(cfg.table("item_index")).to_pandas().set_index("item_id")["item_idx"]
    mine = sorted((r for r in rows if r[0] == user and r[3] < before), key=lambda r: r[3])
    ts = np.array([int(r[3].timestamp()) for r in mine])
    dt = np.diff(ts, prepend=ts[:1])
    assert not any(d > 0 and (d + 1) & d == 0 for d in dt.tolist())   # log2(dt + 1) never an exact integer
    gaps = np.minimum(np.floor(np.log2(dt + 1)), cfg.sequences.gap_buckets - 1).astype(int)
    items = np.array([index[r[1]] for r in mine])
    beh = np.array([BEHAVIORS.index(r[2]) + 1 for r in mine])
    z, w = emb.encode_users([items], [beh], [gaps])
    if emb.config.get("normalize"):
        z = z / np.linalg.norm(z, axis=-1, keepdims=True)
    return z[0], w[0], emb.user_vector([items])[0]


def test_future_events_leave_as_of_vectors_bit_identical(trained, spark):
    from guim_features import export, sequences

    cfg, rows, version = trained
    first = export.export(cfg, times=[T], spark=spark, quiet=True)
    before = _gold_users(cfg, version, T)
    has_past = {r[0] for r in rows if r[3] < T}
    assert set(before) == has_past and first["user_rows"] == len(has_past)
    assert first["item_rows"] == 30
    # a rerun of the same as-of adds nothing
    again = export.export(cfg, times=[T], spark=spark, quiet=True)
    assert again["user_rows"] == 0 and again["item_rows"] == 0
    # new events after T for known users, a new user and a new item; silver rebuilt
    later = _events(np.random.default_rng(9), ["u1", "u2", "newbie"], 8, 6, 4) + [("u3", "i99", "buy", T)]
    _write_events(cfg, later, start_ord=10_000)
    sequences.main(cfg, spark=spark, quiet=True)
    shutil.rmtree(cfg.table("user_embeddings"))
    export.export(cfg, times=[T], spark=spark, quiet=True)
    after = _gold_users(cfg, version, T)
    assert set(after) == set(before)
    for u in before:
        assert all(np.array_equal(a, b) for a, b in zip(after[u], before[u])), u
    # seen_items: the ids of every event before T, newest first (u0's item at exactly T is not one)
    for u in ("u0", "u5", "u11"):
        assert before[u][3] == _seen_by_hand(rows, u, T), u
    # the export is what the model computes from the events before T (u0's event at exactly T excluded)
    from guim_features.embedder import load_embedder

    emb = load_embedder(f"models:/guim/{version}", tracking_uri=cfg.mlflow_uri)
    for u in ("u0", "u5"):
        z, w, p = _by_hand(cfg, emb, rows, u, T)
        assert np.allclose(before[u][0], z, atol=1e-5) and np.allclose(before[u][1], w, atol=1e-5)
        assert before[u][2].shape == (16,) and np.allclose(before[u][2], p, atol=1e-5)   # d = 8: head, then fold-in


def test_incremental_run_writes_only_changed_users(trained, spark):
    from guim_features import export

    cfg, rows, version = trained
    day = datetime(2026, 1, 20, tzinfo=timezone.utc)      # after every event written so far
    full = export.export(cfg, times=[day], spark=spark, quiet=True)
    assert full["user_rows"] == len(_gold_users(cfg, version, day)) >= 12
    new = [("u4", "i2", "buy", day + timedelta(hours=3)), ("u7", "i5", "pv", day + timedelta(hours=5))]
    _write_events(cfg, new, start_ord=20_000)
    rows.extend(new)
    nxt = export.export(cfg, times=[day + timedelta(days=1)], spark=spark, quiet=True)
    assert nxt["user_rows"] == 2
    assert set(_gold_users(cfg, version, day + timedelta(days=1))) == {"u4", "u7"}


@pytest.mark.parametrize("offline_store", ["file", "spark"])
def test_label_event_never_in_the_joined_snapshot(trained, spark, offline_store):
    from guim_features import export, publish
    from guim_features.embedder import load_embedder
    from guim_features.features import training_set

    cfg, rows, version = trained
    cfg = replace(cfg, publish=replace(cfg.publish, offline_store=offline_store))
    labels = [r for r in rows if r[0] in ("u2", "u6", "u9") and START + timedelta(days=3) < r[3] < T][:6]
    assert len(labels) >= 4
    # snapshots exactly at the labels' instants (the hardest case) and daily ones
    export.export(cfg, times=sorted({r[3] for r in labels}), spark=spark, quiet=True)
    publish.run(cfg, argparse.Namespace(model_version=version))
    entity = pd.DataFrame({"user_id": [r[0] for r in labels], "item_id": [r[1] for r in labels],
                           "event_timestamp": pd.to_datetime([r[3] for r in labels], utc=True)})
    got = training_set(cfg, entity)
    assert len(got) == len(labels)
    emb = load_embedder(f"models:/guim/{version}", tracking_uri=cfg.mlflow_uri)
    for (u, item, _, ts), (_, row) in zip(labels, got.iterrows()):
        z = np.stack([row[f"user_interests__interest_{k}"] for k in range(emb.K)])
        strict, _, p_strict = _by_hand(cfg, emb, rows, u, ts)                    # events before the label
        leaky, _, p_leaky = _by_hand(cfg, emb, rows, u, ts + timedelta(seconds=1))  # ... and the label itself
        assert np.allclose(z, strict, atol=1e-5), (u, ts)
        assert not np.allclose(z, leaky, atol=1e-5), (u, ts)
        assert np.allclose(row["user_interests__profile"], p_strict, atol=1e-5), (u, ts)
        assert list(row["user_interests__seen_items"]) == _seen_by_hand(rows, u, ts), (u, ts)
        if not any(r[0] == u and r[1] == item and r[3] < ts for r in rows):      # a new item changes the profile
            assert not np.allclose(row["user_interests__profile"], p_leaky, atol=1e-5), (u, ts)
            assert item not in list(row["user_interests__seen_items"]), (u, ts)


def test_seen_items_cap_and_behaviours(trained, spark):
    """embed.seen_max keeps the newest distinct items; embed.seen_behaviors keeps those behaviours' only."""
    from guim_features import export

    cfg, rows, version = trained
    at = T                                               # test (a)'s later events are all at or after T
    buys = replace(cfg, embed=replace(cfg.embed, seen_max=3, seen_behaviors=["buy", "cart"]))
    shutil.rmtree(cfg.table("user_embeddings"))          # else unchanged users keep their earlier rows
    export.export(buys, times=[at], spark=spark, quiet=True)
    got = _gold_users(cfg, version, at)
    assert len(got) >= 12
    for u, (*_, seen) in got.items():
        assert seen == _seen_by_hand(rows, u, at, {"buy", "cart"})[:3], u
    # seen_max 0: no seen_items (null), the vectors as before
    shutil.rmtree(cfg.table("user_embeddings"))
    export.export(replace(cfg, embed=replace(cfg.embed, seen_max=0)), times=[at], spark=spark, quiet=True)
    raw = DeltaTable(cfg.table("user_embeddings")).to_pandas()
    assert len(raw) == len(got) and raw["seen_items"].isna().all()
    with pytest.raises(Exception, match=r"embed.seen_behaviors names \['view'\]"):
        export.seen_codes(replace(cfg, embed=replace(cfg.embed, seen_behaviors=["view"])))


def test_newest_distinct_by_hand():
    from guim_features.export import newest_distinct

    assert newest_distinct(np.array([5, 7, 5, 9, 7, 7]), 10).tolist() == [7, 9, 5]
    assert newest_distinct(np.array([5, 7, 5, 9, 7, 7]), 2).tolist() == [7, 9]
    assert newest_distinct(np.array([], np.int64), 3).tolist() == []
