"""guim publish: Feast repo, offline point-in-time joins, online materialization (each path), item index."""
from __future__ import annotations

import argparse

import numpy as np
import pandas as pd
import pytest

from gold import ITEMS, T1, T2, USERS_V1, USERS_V2, write_gold

ALICE_FEATURES = ["user_interests:interest_0", "user_interests:interest_1", "user_interests:weights",
                  "user_interests:profile", "user_interests:model_version"]


def _publish(cfg, version=None):
    from guim_features import publish

    publish.run(cfg, argparse.Namespace(model_version=version))
    from feast import FeatureStore

    return FeatureStore(repo_path=str(publish.repo_dir(cfg)))


@pytest.fixture(scope="module")
def published(tmp_path_factory):
    """Two snapshots (model 1 at T1, model 2 at T2) published with the defaults (SQLite, file, feast_write)."""
    from guim_features.config import load_config

    cfg = load_config(tmp_path_factory.mktemp("pub") / "ws")
    write_gold(cfg, USERS_V1, ITEMS, "1", T1)
    write_gold(cfg, USERS_V2, ITEMS, "2", T2)
    return cfg, _publish(cfg)


def test_repo_has_views_from_model_shape(published):
    cfg, store = published
    view = store.get_feature_view("user_interests")
    assert [f.name for f in view.features] == ["interest_0", "interest_1", "weights", "profile", "seen_items",
                                               "model_version"]  # K = 2
    assert [f.name for f in store.get_feature_view("item_embedding").features] == ["vector", "model_version"]
    service = store.get_feature_service("guim_embeddings_v1")
    assert {p.name for p in service.feature_view_projections} == {"user_interests", "item_embedding"}


def test_online_has_newest_snapshot(published):
    """Read back with plain Feast: the default write (Feast's write_to_online_store) of the newest rows."""
    _, store = published
    got = store.get_online_features(features=ALICE_FEATURES + ["item_embedding:vector"],
                                    entity_rows=[{"user_id": "alice", "item_id": "mix01"},
                                                 {"user_id": "nobody", "item_id": "axis2"}]).to_dict()
    assert got["interest_0"] == [[0, 0, 0, 3], None]
    assert got["interest_1"] == [[0, 1, 0, 0], None]
    assert got["weights"][0] == pytest.approx([0.1, 0.9])
    assert got["profile"] == [[0, 2, 0, 0.25], None]
    assert got["model_version"] == ["2", None]
    assert got["vector"] == [pytest.approx([0.6, 0.6, 0, 0]), [0, 0, 1, 0]]


def test_point_in_time_join(published):
    """The published store serves one model version (2, the newest): a row before its snapshot gets
    nulls — never version 1's vectors from another space — and Feast's own join says the same."""
    from guim_features.features import training_set

    cfg, store = published
    entity_df = pd.DataFrame({
        "user_id": ["alice", "alice", "alice", "bob"],
        "event_timestamp": pd.to_datetime(["2026-01-15", "2026-03-01", "2025-12-01", "2026-02-01T00:00:00"],
                                          utc=True, format="ISO8601"),
        "label": [1, 0, 1, 0]})
    got = training_set(cfg, entity_df, views=["user_interests"])
    assert list(got["label"]) == [1, 0, 1, 0]
    assert [None if pd.isna(v) else v for v in got["user_interests__model_version"]] == [None, "2", None, "2"]
    assert list(got["user_interests__interest_0"][1]) == [0, 0, 0, 3]
    assert list(got["user_interests__interest_1"][3]) == [0, 0, 1, 0]          # bob at exactly T2
    assert list(got["user_interests__profile"][3]) == [1, 1, 0, 0]
    raw = store.get_historical_features(entity_df=entity_df, features=ALICE_FEATURES).to_df()
    assert set(raw["model_version"].dropna()) == {"2"}


def test_index_stamped_with_version(published):
    from guim_features.ann import ItemIndex
    from guim_features.publish import ann_dir

    cfg, _ = published
    index = ItemIndex.load(ann_dir(cfg))
    assert index.model_version == "2" and index.meta["K"] == 2 and index.meta["d"] == 4
    assert sorted(index.item_ids) == sorted(ITEMS)
    scores, rows = index.search(np.array([[0, 0, 1, 0]], np.float32), 2)
    assert [index.item_ids[r] for r in rows[0]] == ["axis2", "mix23"]
    assert scores[0] == pytest.approx([1.0, 0.5])


def _files(folder) -> dict:
    return {str(f.relative_to(folder)): f.read_bytes() for f in sorted(folder.rglob("*")) if f.is_file()}


def test_failed_redis_publish_changes_nothing(published, capsys):
    """`guim publish` to a Redis nobody listens on stops with the address named, before writing
    anything: the Feast repository and the item index stay byte-identical and recommend still answers
    from the previous (SQLite) publish."""
    import socket

    from guim_features.cli import main
    from guim_features.publish import ann_dir, repo_dir

    cfg, _ = published
    with socket.socket() as s:                  # a loopback port nothing listens on once closed
        s.bind(("127.0.0.1", 0))
        dead = f"127.0.0.1:{s.getsockname()[1]}"
    before = {"repo": _files(repo_dir(cfg)), "ann": _files(ann_dir(cfg))}
    code = main(["publish", "--workspace", cfg.workspace, "--set", "publish.online_store=redis",
                 "--set", f"publish.redis={dead}"])
    err = capsys.readouterr().err
    assert code == 2
    assert f"guim publish: error: Redis online store at {dead} is not reachable" in err
    assert "Traceback" not in err
    assert {"repo": _files(repo_dir(cfg)), "ann": _files(ann_dir(cfg))} == before
    assert main(["recommend", "alice", "-k", "2", "--workspace", cfg.workspace]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert [line.split()[1] for line in lines[2:]] == ["axis3", "mix23"]    # alice's version-2 interest 0


@pytest.mark.parametrize("path", ["feast", "fast"])
def test_other_materialize_paths_read_back(tmp_path, path):
    """publish.materialize=feast (FeatureStore.materialize) and =fast (the opt-in writer, compared byte
    for byte with Feast's in test_materialize_fast.py) serve bob's version-1 row through plain Feast."""
    from guim_features.config import load_config

    cfg = load_config(tmp_path / "ws", [f"publish.materialize={path}"])
    write_gold(cfg, USERS_V1, ITEMS, "1", T1)
    store = _publish(cfg)
    got = store.get_online_features(features=ALICE_FEATURES, entity_rows=[{"user_id": "bob"}]).to_dict()
    assert got["interest_0"] == [[0, 0, 0, 1]] and got["interest_1"] == [[0, 1, 0, 0]]
    assert got["weights"] == [[0.5, 0.5]] and got["model_version"] == ["1"]
    assert got["profile"] == [None]                                  # bob's row has no profile


@pytest.mark.parametrize("offline_store", ["file", "spark"])
def test_gold_written_before_profiles_publishes_nulls(tmp_path, request, offline_store):
    """A user table without the profile column (exported by an older version) still publishes, on
    either offline store: the profile reads as null online and in the point-in-time join, every
    other feature as written."""
    from guim_features.config import load_config
    from guim_features.features import training_set

    if offline_store == "spark":
        request.getfixturevalue("spark")      # the shared session, which Feast's Spark store reuses
    cfg = load_config(tmp_path / "ws", [f"publish.offline_store={offline_store}"])
    write_gold(cfg, USERS_V1, ITEMS, "1", T1, profile=False)
    store = _publish(cfg)
    got = store.get_online_features(features=ALICE_FEATURES, entity_rows=[{"user_id": "alice"}]).to_dict()
    assert got["interest_0"] == [[2, 0, 0, 0]] and got["profile"] == [None]
    joined = training_set(cfg, pd.DataFrame({"user_id": ["alice"], "event_timestamp": [pd.Timestamp(T2)]}),
                          views=["user_interests"])
    assert list(joined["user_interests__interest_0"][0]) == [2, 0, 0, 0]
    assert joined["user_interests__profile"][0] is None or np.all(pd.isna(joined["user_interests__profile"][0]))


def test_publish_older_version_and_missing_tables(tmp_path):
    from guim_features.config import load_config
    from guim_features.errors import GuimError

    cfg = load_config(tmp_path / "ws")
    with pytest.raises(GuimError, match="run `guim embed` first"):
        _publish(cfg)
    write_gold(cfg, USERS_V1, ITEMS, "1", T1)
    write_gold(cfg, USERS_V2, ITEMS, "2", T2)
    with pytest.raises(GuimError, match="'7' was not exported"):
        _publish(cfg, "7")
    store = _publish(cfg, "1")
    got = store.get_online_features(features=ALICE_FEATURES, entity_rows=[{"user_id": "alice"}]).to_dict()
    assert got["interest_0"] == [[2, 0, 0, 0]] and got["model_version"] == ["1"]


def test_embed_exports_every_user_and_item(tmp_path, spark, monkeypatch):
    """guim embed (as of now): every user, every item (a cold one from its content), stamped as documented."""
    import pyarrow as pa
    from deltalake import DeltaTable, write_deltalake
    from silver import write_silver

    from guim_features import export
    from guim_features.config import load_config
    from guim_features.embedder import load_embedder
    from guim_features.train import train_model

    cfg = load_config(tmp_path / "ws")
    info = write_silver(cfg.resolve("lakehouse"), users=12, items=20, events=8)
    # the bronze events behind those sequences (embed reads every user's history from bronze)
    ev = [(f"u{u}", f"i{i}", 1_700_000_000 + 3600 * j) for u, seq in enumerate(info["sequences"])
          for j, i in enumerate(seq)]
    write_deltalake(cfg.table("events"), pa.table({
        "event_id": [f"e{k}" for k in range(len(ev))], "user_id": [e[0] for e in ev], "item_id": [e[1] for e in ev],
        "behavior": ["pv"] * len(ev), "ts": pa.array([e[2] * 1_000_000 for e in ev], pa.timestamp("us", tz="UTC")),
        "ord": pa.array(range(len(ev)), pa.int64()), "source": ["test"] * len(ev)}))
    cold = {"item_idx": pa.array([500], pa.int32()), "item_id": ["cold"], "category_idx": pa.array([3], pa.int32()),
            "brand_idx": pa.array([2], pa.int32()), "shop_idx": pa.array([0], pa.int32()),
            "price_norm": pa.array([0.5], pa.float32()), "year_norm": pa.array([0.0], pa.float32()),
            "title_tokens": pa.array([[2]], pa.list_(pa.int32())), "tag_ids": pa.array([[3]], pa.list_(pa.int32())),
            "image": pa.array([[0.1] * 8], pa.list_(pa.float32()))}
    write_deltalake(cfg.table("item_features"), pa.table(cold), mode="append")
    res = train_model(cfg, overrides={"epochs": 1, "d": 8, "K": 2, "layers": 1, "heads": 1, "max_len": 8},
                      progress=False)
    args = argparse.Namespace(model_uri=f"models:/guim/{res.model_version}")   # one epoch: maybe not challenger
    assert export.run(cfg, args) == 0
    users = DeltaTable(cfg.table("user_embeddings")).to_pandas()
    items = DeltaTable(cfg.table("item_embeddings")).to_pandas()
    assert sorted(users["user_id"]) == sorted(f"u{i}" for i in range(12))
    assert len(items) == 21 and "cold" in set(items["item_id"])
    assert set(users["model_version"]) == set(items["model_version"]) == {res.model_version}
    assert set(items["event_timestamp"].astype("int64")) == {0}               # items: the epoch
    assert (users["event_timestamp"] > pd.Timestamp("2026-01-01", tz="UTC")).all()   # users: now
    assert all(np.asarray(w).sum() == pytest.approx(1, abs=1e-5) and len(w) == 2 for w in users["weights"])
    assert all(len(i) == 2 and all(len(v) == 8 for v in i) for i in users["interests"])
    # the Spark tasks compute what the embedder computes in one process
    emb = load_embedder(f"models:/guim/{res.model_version}", tracking_uri=cfg.mlflow_uri)
    feats = DeltaTable(cfg.table("item_features")).to_pandas()
    vectors = emb.encode_items(feats)
    if emb.config.get("normalize"):                     # cosine models are exported L2-normalised
        vectors = vectors / np.linalg.norm(vectors, axis=1, keepdims=True)
    direct = dict(zip(feats["item_id"], vectors))
    for item_id, vec in zip(items["item_id"], items["vector"]):
        assert np.allclose(vec, direct[item_id], atol=1e-5)
    # same version again: nothing added
    assert export.run(cfg, args) == 0
    assert len(DeltaTable(cfg.table("user_embeddings")).to_pandas()) == 12


def test_popular_items_counts_events_streamed(tmp_path):
    """Counts over many small Delta files (several batches): most frequent first, ties by id."""
    import pyarrow as pa
    from deltalake import write_deltalake

    from guim_features.config import load_config
    from guim_features.publish import popular_items

    cfg = load_config(tmp_path)
    for ids in (["a", "b", "b"], ["b", "c", "a"], ["b", "b", "d", "a", "d"]):   # b 5, a 3, d 2, c 1
        write_deltalake(cfg.table("events"), pa.table({"item_id": ids}), mode="append")
    assert popular_items(cfg, 3) == ["b", "a", "d"]
    assert popular_items(cfg, 10) == ["b", "a", "d", "c"]
    assert popular_items(load_config(tmp_path / "other"), 3) == []
