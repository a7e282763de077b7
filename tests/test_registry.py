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
    # the item map travels with the model
    shipped = client.list_artifacts(res.run_id, "model/artifacts")
    assert "item_index.parquet" in {a.path.rsplit("/", 1)[-1] for a in shipped}
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
    # the same users by raw id: write_silver names item_idx i "i<i>"; one event of an id the model
    # never saw, which must count as the unknown item (item_idx 2)
    by_id = users.assign(item_id=[[f"i{i}" for i in seq] for seq in users["item_idx"]]).drop(columns="item_idx")
    by_id.loc[0, "item_id"][0] = "no-such-item"
    by_id.to_pickle(tmp_path / "by_id.pkl")
    code = f"""
import mlflow, numpy as np, pandas as pd
mlflow.set_tracking_uri({cfg.mlflow_uri!r})
m = mlflow.pyfunc.load_model("models:/guim/1")
u = m.predict(pd.read_pickle({str(tmp_path / 'users.pkl')!r}))
it = m.predict(pd.read_pickle({str(tmp_path / 'items.pkl')!r}))
b = m.predict(pd.read_pickle({str(tmp_path / 'by_id.pkl')!r}))
np.save({str(tmp_path / 'i.npy')!r}, np.stack(u["interests"].to_list()))
np.save({str(tmp_path / 'w.npy')!r}, np.stack(u["weights"].to_list()))
np.save({str(tmp_path / 'v.npy')!r}, np.stack(it["vector"].to_list()))
np.save({str(tmp_path / 'b.npy')!r}, np.stack(b["interests"].to_list()))
"""
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300,
                         cwd=tmp_path)                                         # not the repo: code comes from the model
    assert out.returncode == 0, out.stderr[-3000:]
    emb = res.embedder
    interests, weights = emb.encode_users(list(users["item_idx"]), list(users["behavior"]), list(users["gaps"]))
    assert np.allclose(np.load(tmp_path / "i.npy"), interests.reshape(5, -1), atol=1e-5)
    assert np.allclose(np.load(tmp_path / "w.npy"), weights, atol=1e-6)
    assert np.allclose(np.load(tmp_path / "v.npy"), emb.encode_items(items), atol=1e-5)
    unknown_first = [np.concatenate([[2], seq[1:]]) if r == 0 else seq for r, seq in enumerate(users["item_idx"])]
    by_idx, _ = emb.encode_users(unknown_first, list(users["behavior"]), list(users["gaps"]))
    assert np.allclose(np.load(tmp_path / "b.npy"), by_idx.reshape(5, -1), atol=1e-5)
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


def test_model_pins_the_versions_it_was_trained_with(registered):
    import mlflow
    import pyarrow
    import torch
    import yaml

    from guim_features.registry import use_uri

    cfg, res = registered
    use_uri(cfg.mlflow_uri)
    reqs = open(mlflow.pyfunc.get_model_dependencies(f"models:/guim/{res.model_version}")).read().split()
    assert sorted(reqs) == sorted([f"torch=={torch.__version__.split('+')[0]}", f"numpy=={np.__version__}",
                                   f"pandas=={pd.__version__}", f"pyarrow=={pyarrow.__version__}",
                                   f"pyyaml=={yaml.__version__}",
                                   f"mlflow=={mlflow.__version__}"])


def _pyfunc(res):
    from guim_features.registry import GuimPyfunc

    pf = GuimPyfunc()
    pf.embedder = res.embedder
    # the fixture's catalogue, by hand: write_silver names item_idx 3..42 "i3".."i42"
    pf.item_map = pd.Series({f"i{i}": i for i in range(3, 43)})
    return pf


def test_pyfunc_kinds_and_item_ids(registered):
    from mlflow.exceptions import MlflowException

    cfg, res = registered
    pf = _pyfunc(res)
    out = pf.predict(None, pd.DataFrame({"item_idx": [np.array([3, 4], np.int32)]}))   # behaviour/gaps optional
    assert list(out.columns) == ["interests", "weights", "profile"] and len(out["interests"][0]) == 4 * 16
    assert len(out["profile"][0]) == 2 * 16                   # the profile head's d, then the fold-in's d
    out = pf.predict(None, pd.DataFrame({"item_idx": [3, 10_000]}), params={"kind": "items"})   # unseen id
    assert list(out.columns) == ["vector"] and np.isfinite(np.stack(out["vector"])).all()
    with pytest.raises(MlflowException, match="kind"):
        pf.predict(None, pd.DataFrame({"item_idx": [3]}), params={"kind": "shops"})
    # raw ids: known ones map to their index, an unknown one to 2; one row out per row in, empty included
    seqs = {"item_idx": [[3, 4, 5], [2, 40], []], "behavior": [[1, 2, 1], [1, 1], []], "gaps": [[0, 4, 4], [0, 9], []]}
    by_idx = pf.predict(None, pd.DataFrame(seqs))
    by_id = pf.predict(None, pd.DataFrame({**seqs, "item_id": [["i3", "i4", "i5"], ["zzz", "i40"], []]}).drop(
        columns="item_idx"))
    assert len(by_idx) == len(by_id) == 3
    assert np.allclose(np.stack(by_idx["interests"]), np.stack(by_id["interests"]), atol=1e-6)
    items = pf.predict(None, pd.DataFrame({"item_id": ["i7", "zzz"]}))
    same = pf.predict(None, pd.DataFrame({"item_idx": [7, 2]}))
    assert np.allclose(np.stack(items["vector"]), np.stack(same["vector"]))


def test_pyfunc_takes_items_added_after_training_only_when_told_the_index_size(registered):
    """An item_idx past the model's catalogue (42) is an item the silver index gained after training:
    refused by default, encoded as the embedder does (hashed id bucket) under max_item_idx."""
    from mlflow.exceptions import MlflowException

    _, res = registered
    pf = _pyfunc(res)
    seqs = pd.DataFrame({"item_idx": [[3, 45], [44]], "behavior": [[1, 1], [2]], "gaps": [[0, 4], [0]]})
    with pytest.raises(MlflowException, match=r"item_idx: row 0 has 45 at position 1; expected 2\.\.42"):
        pf.predict(None, seqs)
    with pytest.raises(MlflowException, match=r"item_idx: row 0 has 45 at position 1; expected 2\.\.44"):
        pf.predict(None, seqs, params={"max_item_idx": 44})
    out = pf.predict(None, seqs, params={"max_item_idx": 45, "batch_size": 1})
    interests, weights = res.embedder.encode_users([np.array([3, 45]), np.array([44])], [np.array([1, 1]), np.array([2])],
                                                   [np.array([0, 4]), np.array([0])])
    assert np.array_equal(np.stack(out["interests"]), interests.reshape(2, -1))
    assert np.array_equal(np.stack(out["weights"]), weights)


def test_pyfunc_profile_folds_in_the_history_column(registered):
    """profile = Embedder.user_vector of the ``history`` column (the whole history), else of the
    sequence; a set of items: order and repeats do not change it, the window does not bound it."""
    from mlflow.exceptions import MlflowException

    _, res = registered
    pf = _pyfunc(res)
    out = pf.predict(None, pd.DataFrame({"item_idx": [[5, 6], [5, 6], [6, 5, 5]],
                                         "history": [[3, 4, 5, 6], [6, 5, 4, 3, 3], [5, 6]]}))
    p = np.stack(out["profile"])                                              # (3, 16)
    assert np.array_equal(p[0], p[1])                                         # same items, other order
    assert np.allclose(p[0], res.embedder.user_vector([np.array([3, 4, 5, 6])])[0], atol=1e-6)
    assert np.allclose(p[2], res.embedder.user_vector([np.array([5, 6])])[0], atol=1e-6)
    assert not np.allclose(p[0], p[2], atol=1e-3)                            # the older items count
    no_history = pf.predict(None, pd.DataFrame({"item_idx": [[6, 5, 5]]}))
    assert np.array_equal(np.stack(no_history["profile"])[0], p[2])         # the sequence's own items
    with pytest.raises(MlflowException, match=r"history: row 0 has 99 at position 1; expected 2\.\.42"):
        pf.predict(None, pd.DataFrame({"item_idx": [[5]], "history": [[5, 99]]}))
    with pytest.raises(MlflowException, match="history: holds item_idx values"):
        pf.predict(None, pd.DataFrame({"item_id": [["i5"]], "history": [[5]]}))


GOOD = {"item_idx": [[3, 4], [5, 6, 7]], "behavior": [[1, 1], [1, 2, 9]], "gaps": [[0, 3], [0, 1, 31]]}


@pytest.mark.parametrize("change, column, message", [
    ({"behavior": [[1, 1], [1, 10, 1]]}, "behavior", r"behavior: row 1 has 10 at position 1; expected 0\.\.9"),
    ({"item_idx": [[3, 10**6], [5, 6, 7]]}, "item_idx", r"item_idx: row 0 has 1000000 at position 1; expected 2\.\.42"),
    ({"item_idx": [[3, 0], [5, 6, 7]]}, "item_idx", r"item_idx: row 0 has 0 at position 1; expected 2\.\.42"),
    ({"gaps": [[0, 3], [0, 99, 1]]}, "gaps", r"gaps: row 1 has 99 at position 1; expected 0\.\.31"),
    ({"gaps": [[0, 3], [0, 1]]}, "gaps", r"gaps: row 1 has 2 values but item_idx has 3"),
    ({"behavior": [[1, 1, 1], [1, 2, 9]]}, "behavior", r"behavior: row 0 has 3 values but item_idx has 2"),
    ({"item_idx": [[3, 4], None]}, "item_idx", r"item_idx: row 1 is None; expected an array of integers"),
    ({"item_idx": [[3, 4], [5, "x", 7]]}, "item_idx", r"item_idx: row 1 is .*'x'.*; expected an array of integers"),
    ({"item_idx": [[3, 4], [5.5, 6, 7]]}, "item_idx", r"item_idx: row 1 is .*5\.5.*; expected an array of integers"),
])
def test_pyfunc_names_the_column_and_row_of_bad_user_input(registered, change, column, message):
    from mlflow.exceptions import MlflowException

    _, res = registered
    with pytest.raises(MlflowException, match=message):
        _pyfunc(res).predict(None, pd.DataFrame({**GOOD, **change}))


def test_pyfunc_bad_item_input_and_frames_without_item_columns(registered):
    from mlflow.exceptions import MlflowException

    _, res = registered
    pf = _pyfunc(res)
    assert len(pf.predict(None, pd.DataFrame(GOOD))) == 2                       # the frame the cases above spoil
    with pytest.raises(MlflowException, match=r"item_idx: row 1 is -4; expected one item index"):
        pf.predict(None, pd.DataFrame({"item_idx": [3, -4]}), params={"kind": "items"})
    with pytest.raises(MlflowException, match=r"item_idx: row 2 is nan"):
        pf.predict(None, pd.DataFrame({"item_idx": [3.0, 4.0, np.nan]}), params={"kind": "items"})
    with pytest.raises(MlflowException, match=r"item_id: row 0 is 'i3'; expected an array of raw item ids"):
        pf.predict(None, pd.DataFrame({"item_id": ["i3"]}), params={"kind": "users"})
    with pytest.raises(MlflowException, match=r"needs an item_idx column \(or item_id"):
        pf.predict(None, pd.DataFrame({"user": ["u1"], "items": [[3, 4]]}))
    pf.item_map = None                                                          # a model logged without the map
    with pytest.raises(MlflowException, match="without its item map; pass item_idx"):
        pf.predict(None, pd.DataFrame({"item_id": [["i3"]]}))


def test_loaded_pyfunc_refuses_a_frame_mlflow_strips_to_nothing(registered, monkeypatch):
    """Columns the signature does not name are dropped by MLflow before predict: such a frame
    used to come back as zero rows."""
    import mlflow
    from mlflow.exceptions import MlflowException

    from guim_features.registry import use_uri

    cfg, _ = registered
    use_uri(cfg.mlflow_uri)
    monkeypatch.setattr(sys, "path", list(sys.path))                 # loading prepends the model's code folder
    m = mlflow.pyfunc.load_model("models:/guim/1")
    with pytest.raises(MlflowException, match="needs an item_idx column"):
        m.predict(pd.DataFrame({"user_id": ["u1", "u2"], "sequence": [[3, 4], [5]]}))
    with pytest.raises(MlflowException, match="behavior: row 0 has 10 at position 0"):
        m.predict(pd.DataFrame({"item_idx": [[3]], "behavior": [[10]], "gaps": [[0]]}))


def test_a_second_run_is_a_new_version_and_the_challenger_only_if_it_beats_popularity(registered):
    import mlflow

    from guim_features.train import train_model

    cfg, _ = registered
    client = mlflow.MlflowClient(cfg.mlflow_uri, cfg.mlflow_uri)
    challenger = lambda: str(client.get_registered_model("guim").aliases.get("challenger"))  # noqa: E731
    before = challenger()
    res = train_model(cfg, overrides={**TINY, "epochs": 1, "K": 1}, progress=False)
    assert res.model_version == "2"
    beats = res.metrics["valid_recall@20"] > res.metrics["popularity_valid_recall@20"]
    assert res.challenger == beats
    assert challenger() == ("2" if beats else before)
    assert json.loads(json.dumps(res.metrics))["epochs"] == 1
