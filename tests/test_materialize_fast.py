"""The opt-in fast online writer (publish.materialize=fast) stores exactly the bytes Feast's public
``write_to_online_store`` stores, in SQLite and in Redis, including Feast's rules for a second write
with older, equal and newer event times."""
from __future__ import annotations

import shutil
import sqlite3
from datetime import datetime, timedelta, timezone

import numpy as np
import pandas as pd
import pyarrow as pa
import pytest

K, D = 4, 64
T0 = datetime(2026, 3, 1, 12, 0, 0, 250_000, tzinfo=timezone.utc)     # sub-second on purpose
EPOCH = datetime(1970, 1, 1, tzinfo=timezone.utc)
needs_redis = pytest.mark.skipif(shutil.which("redis-server") is None,
                                 reason="redis-server not installed (apt-get install redis-server)")


def _rows(ids, times, seed):
    """Hand-made user rows: ids, (N, K, D) interests, (N, K) weights, (N, D) profiles (every third
    one missing, as in rows of a model version from before profiles), seen item ids (every fifth
    missing, every seventh empty, some non-ASCII), model version '7', event times."""
    rng = np.random.default_rng(seed)
    return {"user_id": list(ids), "interests": rng.normal(size=(len(ids), K, D)).astype(np.float32),
            "weights": rng.dirichlet(np.ones(K), size=len(ids)).astype(np.float32),
            "profile": [None if i % 3 == 2 else rng.normal(size=D).astype(np.float32) for i in range(len(ids))],
            "seen_items": [None if i % 5 == 4 else [] if i % 7 == 6 else
                           [f"item-{j}" for j in rng.integers(0, 1000, size=1 + i % 4)] + ["é" * (i % 2)]
                           for i in range(len(ids))],
            "model_version": ["7"] * len(ids), "event_timestamp": list(times)}


FIRST = _rows([f"u{i:02d}" for i in range(30)] + ["ü-ñ"],
              [T0 + timedelta(seconds=1.5 * i, microseconds=7) for i in range(31)], seed=1)
# second write: u00-u09 older, u10-u19 the same instant, u20-u24 newer, u40-u41 new keys, and u25 twice
# in one batch (newer, then a time between the stored one and the first)
SECOND_IDS = [f"u{i:02d}" for i in range(25)] + ["u40", "u41", "u25", "u25"]
SECOND_TIMES = ([T0 - timedelta(days=1, microseconds=3)] * 10
                + [FIRST["event_timestamp"][i] for i in range(10, 20)]
                + [T0 + timedelta(hours=1, milliseconds=500)] * 5
                + [T0, T0 + timedelta(seconds=2)]
                + [T0 + timedelta(hours=2), T0 + timedelta(hours=1)])
SECOND = _rows(SECOND_IDS, SECOND_TIMES, seed=2)
ITEMS_1 = {"item_id": ["a", "b"], "vector": np.eye(2, D, dtype=np.float32), "model_version": ["7", "7"],
           "event_timestamp": [EPOCH, EPOCH]}
ITEMS_2 = {"item_id": ["b", "c"], "vector": 2 * np.eye(2, D, dtype=np.float32), "model_version": ["7", "7"],
           "event_timestamp": [EPOCH, EPOCH]}


def feast_user_frame(rows) -> pd.DataFrame:
    """The rows as the pandas frame a Feast user hands to write_to_online_store."""
    df = pd.DataFrame({"user_id": rows["user_id"]})
    for k in range(K):
        df[f"interest_{k}"] = list(rows["interests"][:, k, :])
    df["weights"] = list(rows["weights"])
    df["profile"] = rows["profile"]
    df["seen_items"] = rows["seen_items"]
    df["model_version"] = rows["model_version"]
    df["event_timestamp"] = pd.to_datetime(rows["event_timestamp"], utc=True)
    return df


def feast_item_frame(rows) -> pd.DataFrame:
    return pd.DataFrame({"item_id": rows["item_id"], "vector": list(rows["vector"]),
                         "model_version": rows["model_version"],
                         "event_timestamp": pd.to_datetime(rows["event_timestamp"], utc=True)})


def gold_users(rows) -> pa.Table:
    """The same rows shaped as the gold user_embeddings table (what `guim publish` reads)."""
    return pa.table({"user_id": rows["user_id"],
                     "interests": pa.array(rows["interests"].tolist(), pa.list_(pa.list_(pa.float32()))),
                     "weights": pa.array(rows["weights"].tolist(), pa.list_(pa.float32())),
                     "profile": pa.array([None if p is None else p.tolist() for p in rows["profile"]],
                                         pa.list_(pa.float32())),
                     "seen_items": pa.array(rows["seen_items"], pa.list_(pa.string())),
                     "model_version": rows["model_version"],
                     "event_timestamp": pa.array(rows["event_timestamp"], pa.timestamp("us", tz="UTC")),
                     "snapshot_date": pa.array([t.date() for t in rows["event_timestamp"]], pa.date32())})


def gold_items(rows) -> pa.Table:
    return pa.table({"item_id": rows["item_id"], "vector": pa.array(rows["vector"].tolist(), pa.list_(pa.float32())),
                     "model_version": rows["model_version"],
                     "event_timestamp": pa.array(rows["event_timestamp"], pa.timestamp("us", tz="UTC")),
                     "snapshot_date": pa.array([t.date() for t in rows["event_timestamp"]], pa.date32())})


def applied_store(folder, sets, online_extra=None):
    """An applied Feast repository of the guim views (K x D), via guim publish's own repo writer;
    ``online_extra``: more keys for the online_store section of feature_store.yaml."""
    import pyarrow.dataset as ds
    import yaml

    from guim_features import publish
    from guim_features.config import load_config

    cfg = load_config(folder, sets)
    repo, _ = publish.write_repo(cfg, K, D, "7", ds.dataset(gold_users(FIRST)), ds.dataset(gold_items(ITEMS_1)))
    if online_extra:
        staged = publish.staged(repo, "feature_store.yaml")
        doc = yaml.safe_load(staged.read_text())
        doc["online_store"].update(online_extra)
        staged.write_text(yaml.safe_dump(doc))
    store = publish.feast_apply(repo, staged_config=True)
    publish.commit_repo(repo)
    return store


def write_both(feast_store, our_store) -> None:
    """Two rounds of the same rows: Feast's public write into one store, the fast writer into the other."""
    from guim_features import materialize_fast

    for users, items in ((FIRST, ITEMS_1), (SECOND, ITEMS_2)):
        feast_store.write_to_online_store("user_interests", df=feast_user_frame(users))
        feast_store.write_to_online_store("item_embedding", df=feast_item_frame(items))
        materialize_fast.write_users(our_store, gold_users(users), K)
        materialize_fast.write_items(our_store, gold_items(items))


def sqlite_dump(store) -> dict:
    """{table: (column names, every row ordered by entity_key, feature_name)}, raw values as stored."""
    path = store.config.repo_path / store.config.online_store.path
    with sqlite3.connect(path) as conn:
        out = {}
        for table in ("guim_user_interests", "guim_item_embedding"):
            cols = [r[1] for r in conn.execute(f'PRAGMA table_info("{table}")')]
            out[table] = cols, conn.execute(f'SELECT * FROM "{table}" ORDER BY entity_key, feature_name').fetchall()
    return out


def redis_dump(conn: str) -> dict:
    """{key: HGETALL key} of every key in the Redis database."""
    import redis

    host, port = conn.rsplit(":", 1)
    r = redis.Redis(host=host, port=int(port))
    return {key: r.hgetall(key) for key in sorted(r.keys("*"))}


def read_back(store, ids):
    return store.get_online_features(features=["user_interests:interest_0", "user_interests:model_version"],
                                     entity_rows=[{"user_id": u} for u in ids]).to_dict()["interest_0"]


@pytest.mark.parametrize("value_num", [False, True])
def test_sqlite_bytes_equal_feast(tmp_path, value_num):
    """Also with enable_openai_compatible_store, where Feast's table has a value_num column it fills."""
    extra = {"enable_openai_compatible_store": True} if value_num else None
    feast_store = applied_store(tmp_path / "feast", [], extra)
    our_store = applied_store(tmp_path / "ours", [], extra)
    write_both(feast_store, our_store)
    expected, got = sqlite_dump(feast_store), sqlite_dump(our_store)
    cols, rows = expected["guim_user_interests"]
    assert ("value_num" in cols) == value_num
    assert len(rows) == (31 + 2) * (K + 4)   # 31 + 2 new users: K interests + weights, profile, seen_items, version
    assert got == expected
    # Feast's SQLite writer keeps no newer row: the older second write of u00 replaced the first
    assert read_back(feast_store, ["u00"]) == [pytest.approx(SECOND["interests"][0, 0].tolist())]
    # event_ts holds whole seconds of the naive UTC time (u29: 12:00:43.750007 -> 12:00:43), created_ts NULL
    row = dict(zip(cols, [r for r in rows if r[0].endswith(b"u29")][0]))
    assert row["created_ts"] is None
    assert row["event_ts"] == int(datetime(2026, 3, 1, 12, 0, 43).timestamp())


@needs_redis
def test_redis_bytes_equal_feast(tmp_path):
    from guim_features.redis_store import redis_server

    with redis_server() as a, redis_server() as b:
        sets = ["publish.online_store=redis"]
        feast_store = applied_store(tmp_path / "feast", sets + [f"publish.redis={a}"])
        our_store = applied_store(tmp_path / "ours", sets + [f"publish.redis={b}"])
        write_both(feast_store, our_store)
        expected, got = redis_dump(a), redis_dump(b)
        assert len(expected) == 31 + 2 + 3                # one hash per user and per item
        assert got == expected
        # Feast's Redis writer keeps the newer row: u00 (older) and u10 (same instant) keep the first
        # write, u20 (newer) takes the second, u25 the newest of its two rows in the batch
        assert read_back(feast_store, ["u00", "u10", "u20", "u25"]) == [
            pytest.approx(FIRST["interests"][0, 0].tolist()), pytest.approx(FIRST["interests"][10, 0].tolist()),
            pytest.approx(SECOND["interests"][20, 0].tolist()), pytest.approx(SECOND["interests"][27, 0].tolist())]


def test_encoders_match_feast_bytes():
    """The vectorised encoders give exactly Feast's own bytes (ValueProto, entity key v3)."""
    from feast.infra.key_encoding_utils import serialize_entity_key
    from feast.protos.feast.types.EntityKey_pb2 import EntityKey
    from feast.protos.feast.types.Value_pb2 import FloatList, Value

    from guim_features import materialize_fast

    arr = np.random.default_rng(0).normal(size=(3, 64)).astype(np.float32)
    for row, enc in zip(arr, materialize_fast.encode_float_lists(arr)):
        assert enc == Value(float_list_val=FloatList(val=row.tolist())).SerializeToString()
    assert materialize_fast.encode_string("v12") == Value(string_val="v12").SerializeToString()
    for uid, key in zip(["u1", "ü-ñ" * 50], materialize_fast.entity_keys("user_id", ["u1", "ü-ñ" * 50])):
        assert key == serialize_entity_key(EntityKey(join_keys=["user_id"], entity_values=[Value(string_val=uid)]), 3)


def test_other_feast_versions_refused():
    from guim_features.errors import GuimError
    from guim_features.materialize_fast import check_feast_version

    check_feast_version("0.67.0")
    with pytest.raises(GuimError, match="not 0.68.0: use --set publish.materialize=feast_write"):
        check_feast_version("0.68.0")


def test_unknown_path_refused(tmp_path):
    from guim_features.config import load_config
    from guim_features.errors import GuimError
    from guim_features.materialize import check_path

    assert check_path(load_config(tmp_path / "ws")) == "feast_write"
    with pytest.raises(GuimError, match="publish.materialize='quick': expected one of feast_write, fast, feast"):
        check_path(load_config(tmp_path / "ws", ["publish.materialize=quick"]))
