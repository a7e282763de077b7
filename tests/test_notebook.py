"""notebooks/quickstart.ipynb runs top to bottom on a tiny published workspace (issue 4, item 8)."""
from __future__ import annotations

import argparse
import os
from pathlib import Path

import pyarrow as pa
import pytest

from gold import ITEMS, T1, USERS_V1, write_gold

NOTEBOOK = Path(__file__).resolve().parents[1] / "notebooks" / "quickstart.ipynb"


def test_quickstart_notebook_executes(tmp_path):
    nbformat = pytest.importorskip("nbformat")
    nbclient = pytest.importorskip("nbclient")
    from deltalake import write_deltalake

    from guim_features import publish
    from guim_features.config import load_config

    ws = tmp_path / "ws"
    cfg = load_config(ws)
    write_gold(cfg, USERS_V1, ITEMS, "1", T1)
    write_deltalake(cfg.table("labels_items"), pa.table({
        "item_id": list(ITEMS), "item_idx": pa.array(range(3, 3 + len(ITEMS)), pa.int32()),
        "category": ["a", "a", "b", "b", "a", "c"], "tags": pa.array([[]] * len(ITEMS), pa.list_(pa.string()))}))
    pairs = [("alice", "axis0", "buy"), ("alice", "axis3", "pv"), ("alice", "mix01", "buy"),
             ("bob", "axis1", "pv"), ("bob", "mix23", "buy"), ("bob", "axis2", "pv")]
    write_deltalake(cfg.table("labels_future"), pa.table({
        "user_id": [p[0] for p in pairs], "item_id": [p[1] for p in pairs],
        "item_idx": pa.array([3] * 6, pa.int32()), "behavior": [p[2] for p in pairs],
        "ts": pa.array([T1] * 6, pa.timestamp("us", tz="UTC")), "split": pa.array([2] * 6, pa.int32())}))
    publish.run(cfg, argparse.Namespace(model_version=None))

    nb = nbformat.read(NOTEBOOK, as_version=4)
    os.environ["GUIM_WORKSPACE"] = str(ws)
    try:
        nbclient.NotebookClient(nb, timeout=300, kernel_name="python3",
                                resources={"metadata": {"path": str(tmp_path)}}).execute()
    finally:
        os.environ.pop("GUIM_WORKSPACE", None)
    text = "\n".join(o.get("text", "") for c in nb.cells if c.cell_type == "code" for o in c.get("outputs", []))
    assert "training set: 6 rows, K=2, positives=3" in text
    assert "top 5 for user" in text and "model version 1" in text
    assert "item map: 6 items, 3 categories" in text
    assert (ws / "reports" / "item_map.png").stat().st_size > 1000
