"""The production Feast setting for real: Redis online store (a real redis-server on loopback) and the
Spark offline store reading the gold Delta tables directly."""
from __future__ import annotations

import argparse
import shutil
import socket

import pandas as pd
import pytest

from gold import ITEMS, T1, T2, USERS_V1, USERS_V2, write_gold

pytestmark = pytest.mark.skipif(shutil.which("redis-server") is None,
                                reason="redis-server not installed (apt-get install redis-server)")


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def redis_port():
    """A throw-away redis-server on a free loopback port, stopped at the end."""
    from guim_features.redis_store import redis_server

    with redis_server() as conn:
        yield int(conn.rsplit(":", 1)[1])


@pytest.fixture(scope="module")
def prod(tmp_path_factory, redis_port, spark):
    """Two snapshots published with Redis online + Spark offline (over the gold Delta tables)."""
    from guim_features import publish
    from guim_features.config import load_config

    ws = tmp_path_factory.mktemp("prod") / "ws"
    sets = ["publish.online_store=redis", f"publish.redis=127.0.0.1:{redis_port}", "publish.offline_store=spark"]
    cfg = load_config(ws, sets)
    write_gold(cfg, USERS_V1, ITEMS, "1", T1)
    write_gold(cfg, USERS_V2, ITEMS, "2", T2)
    publish.run(cfg, argparse.Namespace(model_version=None))
    from feast import FeatureStore

    return cfg, FeatureStore(repo_path=str(publish.repo_dir(cfg)))


def test_redis_online_read_back_and_recommend(prod, redis_port):
    import redis

    from guim_features.recommend import recommend

    cfg, store = prod
    assert store.config.online_store.type == "redis" and store.config.offline_store.type == "spark"
    assert redis.Redis(port=redis_port).dbsize() == 2 + len(ITEMS)          # one hash per user and per item
    got = store.get_online_features(features=["user_interests:interest_0", "user_interests:model_version"],
                                    entity_rows=[{"user_id": "alice"}, {"user_id": "ghost"}]).to_dict()
    assert got["interest_0"] == [[0, 0, 0, 3], None] and got["model_version"] == ["2", None]
    rec = recommend(cfg, "alice", 2)
    assert [(i["item_id"], i["interest"]) for i in rec.items] == [("axis3", 0), ("mix23", 0)]
    assert [i["score"] for i in rec.items] == pytest.approx([3.0, 1.5])


def test_spark_offline_point_in_time(prod):
    """Through Spark over the Delta table: each row gets the snapshot of the published version (2)
    current then, nulls before it (never version 1's vectors), one row per entity row, in order."""
    from guim_features.features import training_set

    cfg, _ = prod
    entity_df = pd.DataFrame({
        "user_id": ["alice", "alice", "bob"],
        "event_timestamp": pd.to_datetime(["2026-01-15", "2026-03-01", "2026-02-02"], utc=True),
        "label": [1, 0, 1]})
    df = training_set(cfg, entity_df, views=["user_interests"])
    assert list(df["label"]) == [1, 0, 1]
    assert pd.isna(df["user_interests__model_version"][0])
    assert list(df["user_interests__interest_0"][1]) == [0, 0, 0, 3]
    assert list(df["user_interests__model_version"][1:]) == ["2", "2"]
    assert list(df["user_interests__weights"][2]) == [0.5, 0.5]


def test_redis_down_says_so(prod, tmp_path):
    """Publishing to a Redis nobody answers on fails naming the address and leaves the published
    repository serving; a Redis that goes away after publishing is named by recommend."""
    from guim_features import publish
    from guim_features.config import load_config
    from guim_features.errors import GuimError
    from guim_features.redis_store import redis_server
    from guim_features.recommend import recommend

    cfg, _ = prod
    dead = f"127.0.0.1:{_free_port()}"
    down = load_config(cfg.workspace, ["publish.online_store=redis", f"publish.redis={dead}",
                                       "publish.offline_store=file"])
    before = (publish.repo_dir(cfg) / "feature_store.yaml").read_bytes()
    with pytest.raises(GuimError, match=f"Redis online store at {dead} is not reachable"):
        publish.run(down, argparse.Namespace(model_version=None))
    assert (publish.repo_dir(cfg) / "feature_store.yaml").read_bytes() == before
    assert [i["item_id"] for i in recommend(cfg, "alice", 2).items] == ["axis3", "mix23"]

    with redis_server() as gone:                     # published there, then stopped
        other = load_config(tmp_path / "ws", ["publish.online_store=redis", f"publish.redis={gone}"])
        write_gold(other, USERS_V2, ITEMS, "2", T2)
        publish.run(other, argparse.Namespace(model_version=None))
    with pytest.raises(GuimError, match=f"Redis online store at {gone} is not reachable"):
        recommend(other, "alice", 3)
