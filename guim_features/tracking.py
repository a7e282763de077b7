"""Where MLflow's tracking and registry point, set without leaking into the environment.

A module of its own so that the model wrapper (``embedder``) and the MLflow glue (``registry``)
can both use it without importing each other.
"""
from __future__ import annotations


def use_uri(uri: str) -> None:
    """Point MLflow's tracking and registry at ``uri`` *without* leaving it in MLFLOW_TRACKING_URI /
    MLFLOW_REGISTRY_URI (mlflow.set_*_uri writes them, and the environment variable would then
    override the next workspace's own database in the same process)."""
    import os

    import mlflow

    saved = {k: os.environ.get(k) for k in ("MLFLOW_TRACKING_URI", "MLFLOW_REGISTRY_URI")}
    mlflow.set_tracking_uri(uri)
    mlflow.set_registry_uri(uri)
    for k, v in saved.items():
        if v is None:
            os.environ.pop(k, None)
        else:
            os.environ[k] = v
