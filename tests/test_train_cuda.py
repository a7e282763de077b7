"""The GPU path of the trainer: bf16 autocast, pinned-memory batches, torch.compile (guarded).

Runs only where CUDA is visible; elsewhere it is reported as skipped with the reason. To check a
machine with an accelerator by hand:
``guim train --set train.device=cuda --set train.epochs=2`` on any workspace (``guim demo`` builds one).
"""
from __future__ import annotations

import math

import pytest
import torch

from guim_features.config import load_config

pytestmark = pytest.mark.skipif(not torch.cuda.is_available(),
                                reason="no CUDA device visible: the GPU training path is not exercised here")


@pytest.mark.parametrize("compile_mode", ["off", "on"])
def test_cuda_training_learns_and_returns_a_cpu_model(tmp_path, compile_mode):
    """Same data and settings as the CPU quality test (test_train.py): K = 4 must beat a hand-written
    popularity ranking twice, with bf16 autocast and, in one case, the compiled loss."""
    from silver import write_silver
    from test_train import TINY, popularity_recall20

    from guim_features.train import train_model

    info = write_silver(tmp_path / "ws" / "lakehouse", users=240, items=120, categories=6, events=30, seed=3)
    res = train_model(load_config(tmp_path / "ws"),
                      overrides={**TINY, "K": 4, "device": "cuda", "amp": True, "compile": compile_mode},
                      mlflow_log=False, register=False, progress=False)
    assert all(math.isfinite(r["loss"]) for r in res.history)
    assert res.metrics["test_recall@20"] >= 2 * popularity_recall20(info), res.metrics
    assert all(p.device.type == "cpu" for p in res.embedder.model.parameters())
