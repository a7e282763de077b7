"""``guim promote``: the gate's rule, and the alias moved (or not) in a real MLflow registry."""
from __future__ import annotations

import pytest
from deltalake import write_deltalake

from guim_features.cli import main
from guim_features.config import load_config
from guim_features.errors import GuimError
from guim_features.promote import gate

from test_bench_metrics import tiny

HEAD = ["next_item.recall@20", "item_demand.spearman"]


def test_gate_accepts_better_or_equal_and_small_drops():
    old = {"next_item.recall@20": 0.20, "item_demand.spearman": 0.60}
    d = gate(old, {"next_item.recall@20": 0.20, "item_demand.spearman": 0.595}, "next_item.recall@20", 0.01, HEAD)
    assert d.accepted


def test_gate_refuses_a_primary_drop_and_names_a_regressed_task():
    old = {"next_item.recall@20": 0.20, "item_demand.spearman": 0.60}
    d = gate(old, {"next_item.recall@20": 0.199, "item_demand.spearman": 0.70}, "next_item.recall@20", 0.01, HEAD)
    assert not d.accepted and "primary metric next_item.recall@20" in d.reason
    d = gate(old, {"next_item.recall@20": 0.25, "item_demand.spearman": 0.58}, "next_item.recall@20", 0.01, HEAD)
    assert not d.accepted and "task item_demand regressed" in d.reason and "0.6000 -> 0.5800" in d.reason
    with pytest.raises(GuimError, match="primary_metric 'user_profile.mean'"):
        gate(old, old, "user_profile.mean", 0.01, HEAD)


@pytest.fixture
def registry(workspace, monkeypatch):
    """A workspace with tiny silver tables and model 'guim' in its SQLite registry; returns a
    function adding a version with bench tags measured on these tables."""
    from mlflow import MlflowClient

    from guim_features.downstream.data import BenchData

    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    d = tiny()
    cfg = load_config(workspace)
    frames = {"item_index": d.labels_items[["item_id", "item_idx"]], "labels_users": d.labels_users,
              "labels_items": d.labels_items, "labels_future": d.labels_future}
    import pandas as pd
    frames["user_sequences"] = pd.DataFrame({"user_id": d.user_ids, **{k: [s[k] for s in d.seqs] for k in
                                             ("item_idx", "behavior", "gaps", "split")}})
    for name, df in frames.items():
        write_deltalake(cfg.table(name), df)
    fingerprint = BenchData.load(cfg).fingerprint
    client = MlflowClient(cfg.mlflow_uri, cfg.mlflow_uri)
    client.create_registered_model("guim")
    art = workspace / "art"
    art.mkdir()

    def add(recall, spearman, alias):
        v = client.create_model_version("guim", str(art)).version
        for k, val in (("bench.next_item.recall_at_20", recall), ("bench.item_demand.spearman", spearman),
                       ("bench.data", fingerprint)):
            client.set_model_version_tag("guim", v, k, str(val))
        client.set_registered_model_alias("guim", alias, v)
        return v

    return client, add


def test_promote_refuses_then_accepts(workspace, registry, capsys):
    client, add = registry
    v1 = add(0.20, 0.60, "champion")
    v2 = add(0.22, 0.50, "challenger")            # better primary, item_demand drops 0.10 > 0.01
    assert main(["promote", "--workspace", str(workspace)]) == 1
    out = capsys.readouterr().out
    assert "refused" in out and "task item_demand regressed" in out
    assert client.get_model_version_by_alias("guim", "champion").version == v1
    tags = client.get_model_version("guim", v2).tags
    assert tags["promote.decision"] == "refused" and "item_demand" in tags["promote.reason"]
    assert float(tags["promote.item_demand.spearman.challenger"]) == 0.5
    assert float(tags["promote.item_demand.spearman.champion"]) == 0.6

    v3 = add(0.21, 0.595, "challenger")           # within tolerance
    assert main(["promote", "--workspace", str(workspace), "--dry-run"]) == 0
    assert client.get_model_version_by_alias("guim", "champion").version == v1   # dry run moves nothing
    assert main(["promote", "--workspace", str(workspace)]) == 0
    assert client.get_model_version_by_alias("guim", "champion").version == v3
    assert client.get_model_version("guim", v3).tags["promote.decision"] == "accepted"


def test_first_challenger_becomes_champion_and_missing_one_is_a_clear_error(workspace, registry, capsys):
    client, add = registry
    assert main(["promote", "--workspace", str(workspace)]) == 2
    assert "no version of model 'guim' has alias 'challenger'" in capsys.readouterr().err
    v1 = add(0.1, 0.1, "challenger")
    assert main(["promote", "--workspace", str(workspace)]) == 0
    assert client.get_model_version_by_alias("guim", "champion").version == v1
