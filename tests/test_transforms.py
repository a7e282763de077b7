"""Pure Spark transforms of ingest and sequences, on hand-written DataFrames."""
from __future__ import annotations

import datetime as dt

import pytest

from guim_features import schemas
from guim_features.ingest import sources as S
from guim_features import sequences as Q

UTC = dt.timezone.utc
BEHAVIORS = ["pv", "fav", "cart", "buy"]


def ts(s: str) -> dt.datetime:
    return dt.datetime.fromisoformat(s).replace(tzinfo=UTC)


def test_validate_events_gives_the_first_reason_that_applies(spark):
    rows = [
        ("u1", "i1", "pv", ts("2026-01-01 10:00:00"), "ok", None),
        (None, "i1", "pv", ts("2026-01-01 10:00:00"), "no user", None),
        ("u1", " ", "pv", ts("2026-01-01 10:00:00"), "blank item", None),
        ("u1", "i1", "pv", None, "no ts", None),
        ("u1", "i1", "pv", ts("1970-01-02 00:00:00"), "old ts", None),
        ("u1", "i1", "click", ts("2026-01-01 10:00:00"), "bad behaviour", None),
        (None, None, None, None, "already bad", "malformed line"),
    ]
    df = spark.createDataFrame(rows, "user_id string, item_id string, behavior string, ts timestamp, "
                                     "raw string, reason string")
    out = {r["raw"]: r["reason"] for r in S.validate_events(df, BEHAVIORS, "1990-01-01", "2100-01-01").collect()}
    assert out == {
        "ok": None,
        "no user": "missing or unparseable user_id",
        "blank item": "missing or unparseable item_id",
        "no ts": "unparseable timestamp",
        "old ts": "timestamp out of range",
        "bad behaviour": "unknown behavior",
        "already bad": "malformed line",
    }


def test_validate_items_rejects_negative_and_unparseable_prices(spark):
    df = spark.createDataFrame(
        [("i1", 3.5, "3.5", "a"), ("i2", -1.0, "-1", "b"), ("i3", None, "cheap", "c"), (None, 1.0, "1", "d"),
         ("i4", None, None, "e")],
        "item_id string, price double, price_raw string, raw string").selectExpr("*", "CAST(NULL AS STRING) AS reason")
    out = {r["raw"]: r["reason"] for r in S.validate_items(df).collect()}
    assert out == {"a": None, "b": "negative price", "c": "unparseable price",
                   "d": "missing or unparseable item_id", "e": None}


def test_append_index_keeps_existing_and_appends_sorted(spark):
    existing = spark.createDataFrame([("b", 3), ("a", 4)], "item_id string, item_idx int")
    ids = spark.createDataFrame([("d",), ("a",), ("c",), ("b",), (None,)], "item_id string")
    out = dict(Q.append_index(existing, ids, "item_id", "item_idx", 3).collect())
    assert out == {"c": 5, "d": 6}                      # only the new ids, after the maximum
    first = dict(Q.append_index(None, ids, "item_id", "item_idx", 3).collect())
    assert first == {"a": 3, "b": 4, "c": 5, "d": 6}


def _events(spark, rows):
    return spark.createDataFrame(
        [(u, i, b, ts(t), o) for u, i, b, t, o in rows],
        "user_id string, item_id string, behavior string, ts timestamp, ord long")


def test_user_sequences_leave_last_out_order_gaps_and_cap(spark):
    ev = _events(spark, [
        # user a: 5 events out of input order; two share a timestamp (input order breaks the tie)
        ("a", "x", "pv", "2026-01-01 00:00:10", 4),
        ("a", "y", "cart", "2026-01-01 00:00:00", 1),
        ("a", "z", "pv", "2026-01-01 00:00:03", 3),
        ("a", "w", "buy", "2026-01-01 00:00:03", 2),
        ("a", "y", "pv", "2026-01-01 00:17:10", 5),
        # user b: too short for leave-last-out with min_events=3
        ("b", "x", "pv", "2026-01-01 00:00:00", 6),
        ("b", "y", "pv", "2026-01-01 00:00:01", 7),
    ])
    index = spark.createDataFrame([("x", 3), ("y", 4), ("z", 5), ("w", 6)], "item_id string, item_idx int")
    out = Q.build_user_sequences(ev, index, BEHAVIORS, max_len=2, split="leave_last_out", valid_cutoff="",
                                 test_cutoff="", gap_buckets=8, min_events=3).collect()
    assert [r["user_id"] for r in out] == ["a"]
    a = out[0]
    # full order: y(0s) w(3s,ord2) z(3s,ord3) x(10s) y(1030s); train part capped to its last 2
    assert a["item_idx"] == [6, 5, 3, 4]
    assert a["behavior"] == [4, 1, 1, 1]          # buy=4, pv=1
    assert a["split"] == [0, 0, 1, 2]
    assert (a["n_train"], a["n_valid"], a["n_test"]) == (2, 1, 1)
    # gaps: floor(log2(gap+1)) capped at 7: w: 3s -> 2; z: 0s -> 0; x: 7s -> 3; y: 1020s -> 9 -> 7
    assert a["gaps"] == [2, 0, 3, 7]
    assert a["ts"] == sorted(a["ts"])


def test_user_sequences_time_split(spark):
    ev = _events(spark, [
        ("a", "x", "pv", "2026-01-01 00:00:00", 1),
        ("a", "y", "pv", "2026-01-05 00:00:00", 2),
        ("a", "z", "pv", "2026-01-08 00:00:00", 3),
        ("a", "x", "pv", "2026-01-09 00:00:00", 4),
        ("b", "x", "pv", "2026-01-09 00:00:00", 5),   # no training event: left out
        ("b", "y", "pv", "2026-01-09 00:00:01", 6),
        ("b", "z", "pv", "2026-01-09 00:00:02", 7),
    ])
    index = spark.createDataFrame([("x", 3), ("y", 4), ("z", 5)], "item_id string, item_idx int")
    out = Q.build_user_sequences(ev, index, BEHAVIORS, max_len=10, split="time", valid_cutoff="2026-01-06",
                                 test_cutoff="2026-01-08 12:00:00", gap_buckets=32, min_events=2).collect()
    assert [r["user_id"] for r in out] == ["a"]
    assert out[0]["split"] == [0, 0, 1, 2]
    assert out[0]["item_idx"] == [3, 4, 5, 3]


def test_item_features_vocab_oov_numeric_and_title(spark):
    items = spark.createDataFrame(
        [("i1", "shoes", 9.0, "Red Shoes", ["a", "b"]), ("i2", "hats", None, None, None),
         ("i3", None, 99.0, "red", ["b"])],
        "item_id string, category string, price double, title string, tags array<string>")
    vocab = Q.update_vocab(None, items.where("item_id != 'i2'"), ["category"])   # 'hats' unseen -> OOV
    voc = {(r["field"], r["value"]): r["idx"] for r in vocab.collect()}
    assert voc == {("category", "shoes"): 2, ("tag", "a"): 2, ("tag", "b"): 3}
    index = spark.createDataFrame([("i1", 3), ("i2", 4), ("i3", 5), ("i9", 6)], "item_id string, item_idx int")
    stats = [{"field": "price", "transform": "log1p", "mean": 1.0, "std": 2.0}]
    f = {r["item_id"]: r for r in Q.build_item_features(items, index, vocab, stats, ["category"], 100, 8, 8)
         .collect()}
    assert set(f) == {"i1", "i2", "i3", "i9"}          # every indexed item, content or not
    assert (f["i1"]["category_idx"], f["i2"]["category_idx"], f["i3"]["category_idx"]) == (2, 1, 0)
    import math
    assert f["i1"]["price_norm"] == pytest.approx((math.log1p(9.0) - 1.0) / 2.0)
    assert f["i2"]["price_norm"] == 0.0
    assert len(f["i1"]["title_tokens"]) == 2 and f["i1"]["title_tokens"][0] == f["i3"]["title_tokens"][0]
    assert all(1 <= t <= 100 for t in f["i1"]["title_tokens"])
    assert f["i1"]["tag_ids"] == [2, 3] and f["i3"]["tag_ids"] == [3] and f["i9"]["tag_ids"] == []


def test_future_labels_explodes_valid_and_test(spark):
    seq = spark.createDataFrame([("a", [3, 4, 5], [1, 2, 4], [10, 20, 30], [0, 1, 2])],
                                "user_id string, item_idx array<int>, behavior array<int>, ts array<long>, "
                                "split array<int>")
    index = spark.createDataFrame([("x", 3), ("y", 4), ("z", 5)], "item_id string, item_idx int")
    rows = sorted((r["split"], r["item_id"], r["behavior"]) for r in Q.future_labels(seq, index, BEHAVIORS).collect())
    assert rows == [(1, "y", "fav"), (2, "z", "buy")]


def test_schema_columns_parse_nested_types():
    assert schemas.columns("user_embeddings") == ["user_id", "interests", "weights", "model_version",
                                                  "event_timestamp", "snapshot_date", "profile", "seen_items"]
