"""Serving the way users already serve, with real processes on loopback: Feast's HTTP feature
server (``feast serve``) on the published repository, MLflow's scoring server (``mlflow models
serve``) on ``models:/guim@champion``, and the item index loaded from its MLflow run in a fresh
Python process.

One tiny registered model; its vectors for three users and every item are written to gold by
hand (no Spark) and published, so the expectations below are the gold rows read back with
delta-rs, not anything our online code computes.
"""
from __future__ import annotations

import argparse
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from contextlib import contextmanager
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from gold import T1, write_gold

TINY = {"d": 16, "K": 3, "layers": 1, "heads": 2, "batch_size": 32, "epochs": 1, "warmup_steps": 5, "threads": 2}
USERS = ["u0", "u1", "u2"]


def _input_parts(cfg) -> pd.DataFrame:
    """user_id and the input part (TRAIN + VALID) of item_idx, behavior, gaps, as silver holds them."""
    from deltalake import DeltaTable

    df = DeltaTable(cfg.table("user_sequences")).to_pandas()
    df = df[df["user_id"].isin(USERS)].set_index("user_id").loc[USERS]
    keep = [np.asarray(s) < 2 for s in df["split"]]
    return pd.DataFrame({"user_id": USERS, **{c: [np.asarray(v)[k].astype(np.int64) for v, k in zip(df[c], keep)]
                                              for c in ("item_idx", "behavior", "gaps")}})


@pytest.fixture(scope="module")
def served(tmp_path_factory):
    """A workspace with model version 1 (alias champion), its gold rows for USERS and every item,
    published (Feast repo on SQLite, item index logged to the version's run)."""
    import mlflow
    from deltalake import DeltaTable
    from silver import write_silver

    from guim_features import publish
    from guim_features.config import load_config
    from guim_features.train import train_model

    ws = tmp_path_factory.mktemp("serve") / "ws"
    write_silver(ws / "lakehouse", users=40, items=30, events=10)
    cfg = load_config(ws)
    res = train_model(cfg, overrides=TINY, progress=False)
    assert res.model_version == "1"
    mlflow.MlflowClient(cfg.mlflow_uri, cfg.mlflow_uri).set_registered_model_alias("guim", "champion", "1")
    seqs = _input_parts(cfg)
    emb = res.embedder
    interests, weights = emb.encode_users(list(seqs["item_idx"]), list(seqs["behavior"]), list(seqs["gaps"]))
    feats = DeltaTable(cfg.table("item_features")).to_pandas()
    vectors = emb.encode_items(feats)
    write_gold(cfg, {u: (interests[i].tolist(), weights[i].tolist()) for i, u in enumerate(USERS)},
               {item: v.tolist() for item, v in zip(feats["item_id"], vectors)}, "1", T1)
    publish.run(cfg, argparse.Namespace(model_version=None))
    return cfg, seqs


def _gold(cfg, table: str, key: str) -> dict:
    from deltalake import DeltaTable

    return {r[key]: r for r in DeltaTable(cfg.table(table)).to_pandas().to_dict("records")}


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _binary(name: str) -> str:
    """The console script installed beside this interpreter (else on PATH); skip when absent."""
    here = Path(sys.executable).with_name(name)
    path = str(here) if here.exists() else shutil.which(name)
    if path is None:
        pytest.skip(f"`{name}` is not installed (no {here} and none on PATH)")
    return path


@contextmanager
def server(cmd: list[str], ready_url: str, log: Path, env: dict | None = None, timeout: float = 240):
    """Run ``cmd`` in its own process group until ``ready_url`` answers 200; always stop the group."""
    with open(log, "wb") as out:
        proc = subprocess.Popen(cmd, stdout=out, stderr=subprocess.STDOUT, env={**os.environ, **(env or {})},
                                start_new_session=True)
    try:
        deadline = time.monotonic() + timeout
        while True:
            if proc.poll() is not None:
                pytest.fail(f"{cmd[0]} exited with {proc.returncode}:\n{log.read_text()[-3000:]}")
            try:
                with urllib.request.urlopen(ready_url, timeout=2) as r:
                    if r.status == 200:
                        break
            except (urllib.error.URLError, ConnectionError, TimeoutError):
                pass
            if time.monotonic() > deadline:
                pytest.fail(f"{ready_url} not ready after {timeout:.0f}s:\n{log.read_text()[-3000:]}")
            time.sleep(0.5)
        yield
    finally:
        os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(30)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(10)


def post(url: str, body: dict) -> tuple[int, dict]:
    req = urllib.request.Request(url, json.dumps(body).encode(), {"Content-Type": "application/json"})
    try:
        with urllib.request.urlopen(req, timeout=120) as r:
            return r.status, json.loads(r.read())
    except urllib.error.HTTPError as e:
        return e.code, json.loads(e.read() or b"{}")


def test_item_index_from_the_mlflow_run_in_a_fresh_process(served, tmp_path):
    """The run holds every file of the index; a new process that only knows the tracking URI loads it
    and finds the same neighbours as the workspace's index."""
    import mlflow

    from guim_features.ann import FILES, ItemIndex
    from guim_features.publish import ann_dir

    cfg, _ = served
    client = mlflow.MlflowClient(cfg.mlflow_uri, cfg.mlflow_uri)
    run_id = client.get_model_version("guim", "1").run_id
    logged = {a.path.rsplit("/", 1)[-1] for a in client.list_artifacts(run_id, "ann_index/v1")}
    assert logged == {p.name for p in ann_dir(cfg).iterdir()} and logged >= set(FILES)   # with the prior's file
    index = ItemIndex.load(ann_dir(cfg))
    queries = np.random.default_rng(0).normal(size=(4, index.vectors.shape[1])).astype(np.float32)
    _, rows = index.search(queries, 5)
    expected = [[str(index.item_ids[r]) for r in row] for row in rows]
    np.save(tmp_path / "q.npy", queries)
    code = f"""
import json, numpy as np
from guim_features.ann import ItemIndex
index = ItemIndex.from_mlflow("1", tracking_uri={cfg.mlflow_uri!r}, dst_path={str(tmp_path / 'dl')!r})
_, rows = index.search(np.load({str(tmp_path / 'q.npy')!r}), 5)
print(json.dumps({{"ids": [[str(index.item_ids[r]) for r in row] for row in rows],
                  "version": index.model_version, "n": len(index.vectors)}}))
"""
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300, cwd=tmp_path)
    assert out.returncode == 0, out.stderr[-3000:]
    got = json.loads(out.stdout.strip().splitlines()[-1])
    assert got["version"] == "1" and got["n"] == 30
    assert got["ids"] == expected


def _features(response: dict) -> dict:
    """Feast's /get-online-features answer -> {feature name: [value per entity row]}."""
    names = response["metadata"]["feature_names"]
    return {n: r["values"] for n, r in zip(names, response["results"])}


@pytest.mark.slow
def test_feast_serve_returns_the_gold_mixture(served, tmp_path):
    from guim_features.publish import SERVICE, repo_dir

    cfg, _ = served
    port = _free_port()
    cmd = [_binary("feast"), "-c", str(repo_dir(cfg)), "serve", "-h", "127.0.0.1", "-p", str(port), "--no-access-log"]
    with server(cmd, f"http://127.0.0.1:{port}/health", tmp_path / "feast.log"):
        status, body = post(f"http://127.0.0.1:{port}/get-online-features",
                            {"feature_service": SERVICE, "full_feature_names": True,   # both views have model_version
                             "entities": {"user_id": ["u2", "u0"], "item_id": ["i5", "i9"]}})
    assert status == 200, body
    got = _features(body)
    users, items = _gold(cfg, "user_embeddings", "user_id"), _gold(cfg, "item_embeddings", "item_id")
    K, d = TINY["K"], TINY["d"]
    u, i = "user_interests__", "item_embedding__"
    assert sorted(n for n in got if n.startswith(u + "interest_")) == [f"{u}interest_{k}" for k in range(K)]
    for row, (user, item) in enumerate([("u2", "i5"), ("u0", "i9")]):
        for k in range(K):
            assert len(got[f"{u}interest_{k}"][row]) == d
            assert np.allclose(got[f"{u}interest_{k}"][row], users[user]["interests"][k], rtol=1e-6, atol=1e-7)
        assert np.allclose(got[u + "weights"][row], users[user]["weights"], rtol=1e-6, atol=1e-7)
        assert np.allclose(got[i + "vector"][row], items[item]["vector"], rtol=1e-6, atol=1e-7)
    assert got[u + "model_version"] == got[i + "model_version"] == ["1", "1"]


@pytest.mark.slow
def test_mlflow_models_serve_scores_sequences(served, tmp_path):
    """REST scoring of models:/guim@champion: K interests x d floats and K weights summing to 1 per
    user, equal to the user's gold row; an item_idx out of range is a 400 naming the column."""
    cfg, seqs = served
    port = _free_port()
    cmd = [_binary("mlflow"), "models", "serve", "-m", "models:/guim@champion", "--env-manager", "local",
           "-h", "127.0.0.1", "-p", str(port)]
    url = f"http://127.0.0.1:{port}"
    two = seqs.iloc[[1, 2]]
    good = {"dataframe_split": {"columns": ["item_idx", "behavior", "gaps"],
                                "data": [[r.item_idx.tolist(), r.behavior.tolist(), r.gaps.tolist()]
                                         for r in two.itertuples()]}}
    bad = {"dataframe_split": {"columns": ["item_idx"], "data": [[[3, 4]], [[5, 1_000_000]]]}}
    with server(cmd, f"{url}/ping", tmp_path / "mlflow.log", env={"MLFLOW_TRACKING_URI": cfg.mlflow_uri}):
        status, body = post(f"{url}/invocations", good)
        bad_status, bad_body = post(f"{url}/invocations", bad)
    assert status == 200, body
    K, d = TINY["K"], TINY["d"]
    users = _gold(cfg, "user_embeddings", "user_id")
    assert len(body["predictions"]) == 2
    for pred, user in zip(body["predictions"], two["user_id"]):
        assert len(pred["interests"]) == K * d and len(pred["weights"]) == K
        assert sum(pred["weights"]) == pytest.approx(1, abs=1e-5) and min(pred["weights"]) >= 0
        assert np.allclose(np.reshape(pred["interests"], (K, d)), np.stack(users[user]["interests"]), atol=1e-5)
        assert np.allclose(pred["weights"], users[user]["weights"], atol=1e-6)
    assert bad_status == 400, bad_body
    assert bad_body["error_code"] == "INVALID_PARAMETER_VALUE"
    assert "item_idx: row 1 has 1000000 at position 1" in bad_body["message"]
