"""MLflow tracking + registry + pyfunc, against a real SQLite-backed MLflow."""
from __future__ import annotations

import json
import os
import subprocess
import sys

import numpy as np
import pandas as pd
import pytest

from guim_features.config import load_config

TINY = {"d": 16, "layers": 1, "heads": 2, "batch_size": 32, "epochs": 2, "warmup_steps": 5, "threads": 2}


@pytest.fixture(scope="module")
def registered(tmp_path_factory):
    from silver import write_silver

    from guim_features.train import train_model

    ws = tmp_path_factory.mktemp("reg") / "ws"
    write_silver(ws / "lakehouse", users=50, items=40, events=10)
    cfg = load_config(ws)
    res = train_model(cfg, overrides=TINY, progress=False)
    return cfg, res


def user_frame(cfg) -> pd.DataFrame:
    """Input parts (TRAIN + VALID) of the first users, as pandas reads them from Delta (int32 arrays)."""
    from deltalake import DeltaTable

    df = DeltaTable(cfg.table("user_sequences")).to_pandas().head(5)
    keep = [s < 2 for s in df["split"]]
    return pd.DataFrame({c: [v[k] for v, k in zip(df[c], keep)] for c in ("item_idx", "behavior", "gaps")})


def test_run_is_logged_and_registered(registered):
    import mlflow

    cfg, res = registered
    assert res.model_version == "1" and res.run_id
    client = mlflow.MlflowClient(cfg.mlflow_uri)
    run = client.get_run(res.run_id)
    assert run.data.params["train.K"] == "4" and run.data.params["train.d"] == "16"
    assert run.data.params["sequences.max_len"] == "50"                        # all config, not only train
    assert run.data.tags["delta_version.user_sequences"] == "0"
    assert "git_commit" in run.data.tags
    assert len(client.get_metric_history(res.run_id, "valid_ndcg_at_20")) == 2
    assert "final_test_recall_at_20" in run.data.metrics
    arts = {a.path for a in client.list_artifacts(res.run_id)}
    assert {"training_curves.png", "config.yaml", "train_config.yaml"} <= arts
    # alias challenger follows the comparison with popularity recorded on the version
    mv = client.get_model_version("guim", "1")
    model, pop = (float(mv.tags[f"gate.valid_recall_at_20.{w}"]) for w in ("model", "popularity"))
    assert model == pytest.approx(res.metrics["valid_recall@20"], abs=1e-6)
    assert mv.tags["gate.decision"] == ("accepted" if model > pop else "refused")
    assert ("challenger" in mv.aliases) == (model > pop)
    assert cfg.mlflow_uri.startswith("sqlite:///") and cfg.mlflow_uri.endswith("mlflow.db")
    # training must not leave its URI in the environment (it would hijack the next workspace's runs)
    assert os.environ.get("MLFLOW_TRACKING_URI") != cfg.mlflow_uri


def test_fresh_process_reproduces_the_trainers_embeddings(registered, tmp_path):
    cfg, res = registered
    users = user_frame(cfg)
    from deltalake import DeltaTable
    items = DeltaTable(cfg.table("item_features")).to_pandas().head(7)
    users.to_pickle(tmp_path / "users.pkl")
    items.to_pickle(tmp_path / "items.pkl")
    code = f"""
import mlflow, numpy as np, pandas as pd
mlflow.set_tracking_uri({cfg.mlflow_uri!r})
m = mlflow.pyfunc.load_model("models:/guim/1")
u = m.predict(pd.read_pickle({str(tmp_path / 'users.pkl')!r}))
it = m.predict(pd.read_pickle({str(tmp_path / 'items.pkl')!r}))
np.save({str(tmp_path / 'i.npy')!r}, np.stack(u["interests"].to_list()))
np.save({str(tmp_path / 'w.npy')!r}, np.stack(u["weights"].to_list()))
np.save({str(tmp_path / 'v.npy')!r}, np.stack(it["vector"].to_list()))
"""
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300,
                         cwd=tmp_path)                                         # not the repo: code comes from the model
    assert out.returncode == 0, out.stderr[-3000:]
    emb = res.embedder
    interests, weights = emb.encode_users(list(users["item_idx"]), list(users["behavior"]), list(users["gaps"]))
    assert np.allclose(np.load(tmp_path / "i.npy"), interests.reshape(5, -1), atol=1e-5)
    assert np.allclose(np.load(tmp_path / "w.npy"), weights, atol=1e-6)
    assert np.allclose(np.load(tmp_path / "v.npy"), emb.encode_items(items), atol=1e-5)
    # item vectors from content equal the catalogue rows the trainer scores with
    assert np.allclose(emb.encode_items(items), emb.catalogue()[items["item_idx"].to_numpy()], atol=1e-5)


def test_load_embedder_from_registry_and_errors(registered):
    from guim_features.embedder import load_embedder
    from guim_features.errors import GuimError

    cfg, res = registered
    emb = load_embedder("models:/guim/1", tracking_uri=cfg.mlflow_uri)
    assert emb.model_version == "1" and emb.K == 4 and emb.d == 16 and emb.config["max_len"] == 50
    with pytest.raises(GuimError, match="not in the registry"):
        load_embedder("models:/guim@nope", tracking_uri=cfg.mlflow_uri)
    with pytest.raises(GuimError, match="not found"):
        load_embedder("/no/such/model.pt")


def test_pyfunc_kinds_and_bad_input(registered):
    from guim_features.errors import GuimError
    from guim_features.registry import GuimPyfunc

    cfg, res = registered
    pf = GuimPyfunc()
    pf.embedder = res.embedder
    out = pf.predict(None, pd.DataFrame({"item_idx": [np.array([3, 4], np.int32)]}))   # behaviour/gaps optional
    assert list(out.columns) == ["interests", "weights"] and len(out["interests"][0]) == 4 * 16
    out = pf.predict(None, pd.DataFrame({"item_idx": [3, 10_000]}), params={"kind": "items"})   # unseen id
    assert list(out.columns) == ["vector"] and np.isfinite(np.stack(out["vector"])).all()
    with pytest.raises(GuimError, match="kind"):
        pf.predict(None, pd.DataFrame({"item_idx": [3]}), params={"kind": "shops"})


def test_a_second_run_is_a_new_version_and_the_challenger_only_if_it_beats_popularity(registered):
    import mlflow

    from guim_features.train import train_model

    cfg, _ = registered
    client = mlflow.MlflowClient(cfg.mlflow_uri, cfg.mlflow_uri)
    before = client.get_registered_model("guim").aliases.get("challenger")
    res = train_model(cfg, overrides={**TINY, "epochs": 1, "K": 1}, progress=False)
    assert res.model_version == "2"
    beats = res.metrics["valid_recall@20"] > res.metrics["popularity_valid_recall@20"]
    assert res.challenger == beats
    assert client.get_registered_model("guim").aliases.get("challenger") == ("2" if beats else before)
    assert json.loads(json.dumps(res.metrics))["epochs"] == 1
