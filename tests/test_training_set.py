"""Training sets from the published store: one row per entity row, in order, nulls before the first
snapshot, one model version — on the file and on the Spark offline store (hand-written gold)."""
from __future__ import annotations

import argparse
import json
from datetime import datetime, timezone

import pandas as pd
import pytest

from gold import ITEMS, T1, T2, USERS_V1, USERS_V2, user_table, write_gold

EPOCH = datetime(1970, 1, 1, tzinfo=timezone.utc)
T3 = datetime(2026, 2, 2, tzinfo=timezone.utc)
ALICE_T1, ALICE_T2 = USERS_V1["alice"][0], USERS_V2["alice"][0]     # version 1 snapshots of alice
BOB_T1 = USERS_V1["bob"][0]

# (user, item, label time) -> hand-worked expectation of the version-1 join
ROWS = [("alice", "axis0", "2026-01-15"),           # alice's T1 snapshot
        ("alice", "axis1", "2026-01-15"),           # same user and instant, another item: kept
        ("alice", "axis0", "2025-12-01"),           # before alice's first snapshot: nulls, item still found
        ("bob", "mix01", "2026-03-01"),             # bob has only the T1 snapshot in version 1
        ("alice", "axis2", "2026-03-01"),           # alice's T2 snapshot
        ("carol", "axis0", "2026-01-20"),           # unknown user: nulls
        ("alice", "axis0", "2026-01-15"),           # exact duplicate of the first row
        ("alice", "axis3", "2026-02-01T00:00:00")]  # exactly at T2: the T2 snapshot (<=)
EXPECT_V1 = [ALICE_T1, ALICE_T1, None, BOB_T1, ALICE_T2, None, ALICE_T1, ALICE_T2]


def entity_frame():
    return pd.DataFrame({"user_id": [r[0] for r in ROWS], "item_id": [r[1] for r in ROWS],
                         "event_timestamp": pd.to_datetime([r[2] for r in ROWS], utc=True, format="ISO8601"),
                         "label": range(len(ROWS))}, index=range(100, 100 + len(ROWS)))


@pytest.fixture(params=["file", "spark"])
def ws(request, tmp_path):
    """Version 1: alice at T1 and T2, bob at T1; version 2: both at T3. Items once per version (epoch)."""
    from guim_features.config import load_config

    if request.param == "spark":
        request.getfixturevalue("spark")
    cfg = load_config(tmp_path / "ws", [f"publish.offline_store={request.param}"])
    write_gold(cfg, USERS_V1, ITEMS, "1", T1, item_ts=EPOCH)
    write_gold(cfg, {"alice": USERS_V2["alice"]}, None, "1", T2)
    write_gold(cfg, USERS_V2, ITEMS, "2", T3, item_ts=EPOCH)
    return cfg


def _publish(cfg, version):
    from guim_features import publish

    publish.run(cfg, argparse.Namespace(model_version=version))


def _interest_0(df):
    return [None if v is None or (not hasattr(v, "__len__") and pd.isna(v)) else [float(x) for x in v]
            for v in df["user_interests__interest_0"]]


def test_one_row_per_entity_row_in_order_with_nulls(ws):
    from guim_features.features import training_set

    _publish(ws, "1")
    e = entity_frame()
    got = training_set(ws, e)
    assert len(got) == len(e) and list(got.index) == list(e.index)
    assert list(got["label"]) == list(e["label"]) and list(got["user_id"]) == list(e["user_id"])
    assert _interest_0(got) == [None if x is None else [float(v) for v in x[0]] for x in EXPECT_V1]
    assert [None if pd.isna(v) else v for v in got["user_interests__model_version"]] == \
        [None if x is None else "1" for x in EXPECT_V1]
    # item vectors are stamped at the epoch: found for every row, even the one before any user snapshot
    for v, r in zip(got["item_embedding__vector"], ROWS):
        assert list(v) == pytest.approx(ITEMS[r[1]])
    assert set(got["item_embedding__model_version"]) == {"1"}


def test_version_is_pinned_and_a_mix_is_refused(ws):
    from guim_features import publish
    from guim_features.errors import GuimError
    from guim_features.features import training_set

    _publish(ws, "1")
    with pytest.raises(GuimError, match="serves model version 1, not 2"):
        training_set(ws, entity_frame(), model_version="2")
    # version 2 published: the rows before its first snapshot get nulls, never version 1's vectors
    _publish(ws, "2")
    got = training_set(ws, entity_frame(), model_version="2")
    v = [None if pd.isna(x) else x for x in got["user_interests__model_version"]]
    assert v == [None, None, None, "2", "2", None, None, None]
    # a repository whose source holds both versions (hand-edited, or built by other tools) is refused
    repo = publish.repo_dir(ws)
    meta = json.loads((repo / "guim_model.json").read_text())
    if meta["offline_store"] == "spark":
        meta["sources"]["user_embeddings"] = meta["sources"]["user_embeddings"].split(" WHERE ")[0]
        (repo / "guim_model.json").write_text(json.dumps(meta))
        publish.feast_apply(repo)
    else:
        import pyarrow as pa
        import pyarrow.parquet as pq

        both = pa.concat_tables([user_table(USERS_V1, "1", T1), user_table(USERS_V2, "2", T3)])
        pq.write_table(publish.user_columns(both, 2), meta["sources"]["user_embeddings"])
    with pytest.raises(GuimError, match="mixes model versions"):
        training_set(ws, entity_frame(), model_version="2")


def test_bad_entity_frames_are_named(ws):
    from guim_features.errors import GuimError
    from guim_features.features import check_versions, training_set

    _publish(ws, "1")
    e = entity_frame()
    with pytest.raises(GuimError, match="no 'event_timestamp' column"):
        training_set(ws, e.drop(columns="event_timestamp"))
    e.loc[103, "user_id"] = None
    with pytest.raises(GuimError, match="'user_id' has missing ids"):
        training_set(ws, e)
    with pytest.raises(GuimError, match=r"holds \['2'\].*first at entity row 1"):
        check_versions(pd.DataFrame({"m": ["1", "2", None]}), "1", ["m"])
