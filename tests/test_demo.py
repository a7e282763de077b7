"""guim demo end to end in a fresh workspace, at a small size."""
from __future__ import annotations

import pytest


@pytest.mark.slow
def test_demo_end_to_end(tmp_path, spark, capsys, monkeypatch):
    import mlflow
    from deltalake import DeltaTable

    from guim_features.ann import ItemIndex
    from guim_features.cli import main
    from guim_features.config import load_config
    from guim_features.publish import ann_dir

    ws = tmp_path / "demo"
    # trained enough to beat popularity, which alias challenger and the demo's publishing ask for
    sets = ["ingest.users=120", "ingest.items=80", "ingest.events_per_user=15", "demo.train_epochs=10",
            "train.batch_size=16", "train.warmup_steps=5", "train.d=16", "train.layers=1", "train.heads=1",
            "demo.k=5"]
    argv = ["demo", "--workspace", str(ws)] + [a for s in sets for a in ("--set", s)]
    assert main(argv) == 0
    out = capsys.readouterr().out
    cfg = load_config(ws)
    seqs = DeltaTable(cfg.table("user_sequences")).to_pandas()
    feats = DeltaTable(cfg.table("item_features")).to_pandas()
    users = DeltaTable(cfg.table("user_embeddings")).to_pandas()
    items = DeltaTable(cfg.table("item_embeddings")).to_pandas()
    # one embedding per user sequence and per item (cold items included), all of model version 1
    assert sorted(users["user_id"]) == sorted(seqs["user_id"]) and len(users) > 100
    assert sorted(items["item_id"]) == sorted(feats["item_id"])
    assert set(users["model_version"]) == {"1"} == set(items["model_version"])
    index = ItemIndex.load(ann_dir(cfg))
    assert index.model_version == "1" and index.meta["n"] == len(feats)
    # the index is logged to the model's MLflow run
    client = mlflow.MlflowClient(tracking_uri=cfg.mlflow_uri)
    run_id = client.get_model_version("guim", "1").run_id
    assert {a.path for a in client.list_artifacts(run_id, "ann_index/v1")} >= {"ann_index/v1/meta.json"}
    lines = out.splitlines()
    at = [i for i, line in enumerate(lines) if line.startswith("top 5 for user")]
    assert at and "(model version 1; " in lines[at[0]]
    # the recommendation excludes what the user had events with: every distinct item of their events
    user = lines[at[0]].split()[4]
    events = DeltaTable(cfg.table("events")).to_pandas()
    seen = set(events.loc[events["user_id"] == user, "item_id"])
    assert f"; {min(len(seen), 500)} seen items excluded" in lines[at[0]] and seen
    # a prior the model chose is served counted over every event before the snapshot (now): all of them
    prior = index.meta.get("transitions")
    assert prior is None or (prior["events"] == len(events) and "transition prior from" in lines[at[0]])
    shown = [line.split()[1] for line in lines[at[0] + 2:at[0] + 7]]
    assert len(shown) == 5 and not set(shown) & seen
    assert "== summary" in out and "guim recommend" in out
    assert client.get_model_version("guim", "1").tags["gate.decision"] == "accepted"

    # a rerun on the same data and config: the version is reused, gold gains nothing
    assert main(argv) == 0
    out = capsys.readouterr().out
    assert "model version 1 was trained on these silver tables with this configuration: reusing it" in out
    assert [str(mv.version) for mv in client.search_model_versions("name = 'guim'")] == ["1"]
    assert DeltaTable(cfg.table("user_embeddings")).to_pandas()["user_id"].value_counts().max() == 1
    assert len(DeltaTable(cfg.table("item_embeddings")).to_pandas()) == len(feats)
    assert "(model version 1; " in out
