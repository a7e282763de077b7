"""notebooks/quickstart.ipynb runs top to bottom on a real point-in-time workspace: synthetic log,
time split, a model trained before the cutoff, as-of snapshots backfilled over the label window."""
from __future__ import annotations

import os
import re
from pathlib import Path

import pytest

NOTEBOOK = Path(__file__).resolve().parents[1] / "notebooks" / "quickstart.ipynb"
SETS = ["ingest.users=500", "ingest.items=150", "ingest.events_per_user=60",
        "sequences.split=time", "sequences.valid_cutoff=2026-01-24", "sequences.test_cutoff=2026-01-27",
        "train.epochs=10", "train.d=32", "train.layers=1", "train.heads=1"]


@pytest.mark.slow
def test_quickstart_notebook_leak_free_and_leaky(tmp_path, spark):
    nbformat = pytest.importorskip("nbformat")
    nbclient = pytest.importorskip("nbclient")
    from guim_features.cli import main

    ws = str(tmp_path / "ws")
    sets = [a for s in SETS for a in ("--set", s)]
    for cmd in (["ingest"], ["sequences"], ["train"],
                ["embed", "--backfill", "2026-01-27", "2026-02-01", "--every", "6h"],
                ["embed"], ["publish"]):
        assert main(cmd + ["--workspace", ws] + sets) == 0, cmd

    nb = nbformat.read(NOTEBOOK, as_version=4)
    # run where Jupyter runs it (notebooks/) with a workspace given relative to the repository root
    os.environ["GUIM_WORKSPACE"] = os.path.relpath(ws, NOTEBOOK.parents[1])
    try:
        nbclient.NotebookClient(nb, timeout=600, kernel_name="python3",
                                resources={"metadata": {"path": str(NOTEBOOK.parent)}}).execute()
    finally:
        os.environ.pop("GUIM_WORKSPACE", None)
    text = "\n".join(o.get("text", "") for c in nb.cells if c.cell_type == "code" for o in c.get("outputs", []))
    print(text)
    rows = re.search(r"training set: (\d+) rows for (\d+) labels", text)
    assert rows and rows.group(1) == rows.group(2) and int(rows.group(1)) > 100
    honest = float(re.search(r"leak-free AUC (\d\.\d+)", text).group(1))
    leaky = float(re.search(r"leaky AUC +(\d\.\d+)", text).group(1))
    assert 0 < honest < 1 and 0 < leaky <= 1
    assert "top 5 for user" in text and "model version 1" in text
    assert "item map:" in text and (Path(ws) / "reports" / "item_map.png").stat().st_size > 1000
