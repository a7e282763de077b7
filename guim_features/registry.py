"""MLflow for GUIM: tracking, a thin pyfunc model, registration with alias ``challenger``.

Tracking and registry default to SQLite in the workspace (``cfg.mlflow_uri``; the
``MLFLOW_TRACKING_URI`` environment variable wins) with artifacts under
``<workspace>/mlartifacts``. A run logs every config value as a param, step and epoch metrics,
the config (YAML) and a PNG of the training curves, and tags the Delta versions of the silver
tables it read and the git commit. ``GuimPyfunc`` follows MLflow's ``examples/pyfunc``: the
weights come from the ``checkpoint`` artifact in ``load_context`` and the ``guim_features``
package is shipped with the model (``code_paths``), so ``mlflow.pyfunc.load_model`` works in a
fresh process.

Every run is registered as a new version; alias ``challenger`` moves to it only when it beats
the popularity ranking on the valid split (:func:`challenger_gate`). Tags on the version:
``gate.decision`` (accepted | refused), ``gate.reason``, ``gate.valid_recall_at_20.model`` and
``.popularity``.
"""
from __future__ import annotations

import dataclasses
import subprocess
import tempfile
import warnings
from pathlib import Path

import mlflow
import numpy as np
import pandas as pd

PACKAGE_DIR = Path(__file__).resolve().parent
USER_COLUMNS = ("item_idx", "behavior", "gaps")
ITEM_COLUMNS = ("item_idx", "category_idx", "brand_idx", "shop_idx", "price_norm", "year_norm",
                "title_tokens", "tag_ids", "image")


def setup(cfg, experiment: str) -> str:
    """Point MLflow at the workspace's tracking/registry store; returns the experiment id."""
    uri = cfg.mlflow_uri
    use_uri(uri)
    exp = mlflow.get_experiment_by_name(experiment)
    if exp is not None:
        return exp.experiment_id
    location = None
    if uri.startswith("sqlite:") or "://" not in uri:
        location = (Path(cfg.workspace).resolve() / "mlartifacts").as_uri()
    return mlflow.create_experiment(experiment, artifact_location=location)


def use_uri(uri: str) -> None:
    """Point MLflow's tracking and registry at ``uri`` *without* leaving it in MLFLOW_TRACKING_URI /
    MLFLOW_REGISTRY_URI (mlflow.set_*_uri writes them, and the environment variable would then
    override the next workspace's own database in the same process)."""
    import os

    saved = {k: os.environ.get(k) for k in ("MLFLOW_TRACKING_URI", "MLFLOW_REGISTRY_URI")}
    mlflow.set_tracking_uri(uri)
    mlflow.set_registry_uri(uri)
    for k, v in saved.items():
        if v is None:
            os.environ.pop(k, None)
        else:
            os.environ[k] = v


def git_commit() -> str:
    try:
        return subprocess.run(["git", "rev-parse", "HEAD"], cwd=PACKAGE_DIR, capture_output=True, text=True,
                              timeout=10).stdout.strip() or "unknown"
    except (OSError, subprocess.SubprocessError):
        return "unknown"


def _flat_params(cfg) -> dict:
    out = {}
    for f in dataclasses.fields(cfg):
        sec = getattr(cfg, f.name)
        if dataclasses.is_dataclass(sec):
            for k, v in dataclasses.asdict(sec).items():
                out[f"{f.name}.{k}"] = str(v)[:500]
    return out


class RunLogger:
    """One MLflow run of ``guim train`` (re-opened by ``--resume``)."""

    def __init__(self, cfg, train_cfg, table_versions: dict, run_id: str | None = None):
        self.cfg, self.tc = cfg, train_cfg
        exp = setup(cfg, train_cfg.experiment)
        self.client = mlflow.MlflowClient()
        if run_id is None:
            run = self.client.create_run(exp, tags={"git_commit": git_commit(), "mlflow.runName": "guim-train",
                                                    **{f"delta_version.{k}": str(v)
                                                       for k, v in table_versions.items()}})
            self.run_id = run.info.run_id
            params = {**_flat_params(cfg), **{f"train.{k}": str(v) for k, v in
                                              dataclasses.asdict(train_cfg).items()}}
            items = [mlflow.entities.Param(k, v) for k, v in params.items()]
            for s in range(0, len(items), 100):
                self.client.log_batch(self.run_id, params=items[s:s + 100])
        else:
            self.run_id = run_id

    def step(self, metrics: dict, step: int) -> None:
        self._log(metrics, step)

    def epoch(self, rec: dict, step: int) -> None:
        self._log({k if k.startswith("valid_") else f"epoch_{k}": v for k, v in rec.items() if k != "epoch"},
                  rec["epoch"])

    def _log(self, metrics: dict, step: int) -> None:
        import time
        ts = int(time.time() * 1000)
        ms = [mlflow.entities.Metric(k.replace("@", "_at_"), float(v), ts, step) for k, v in metrics.items()
              if isinstance(v, (int, float)) and np.isfinite(v)]
        self.client.log_batch(self.run_id, metrics=ms)

    def finish(self, embedder, checkpoint: str, metrics: dict, history: list, register: bool = True) -> tuple:
        """Log final metrics, config, curves and the pyfunc model; register it, with alias
        ``challenger`` if :func:`challenger_gate` accepts ``metrics``.
        Returns (version or None, accepted, reason)."""
        import yaml

        self._log({f"final_{k}": v for k, v in metrics.items()}, 0)
        with tempfile.TemporaryDirectory() as tmp:
            (Path(tmp) / "train_config.yaml").write_text(yaml.safe_dump(dataclasses.asdict(self.tc)))
            (Path(tmp) / "config.yaml").write_text(yaml.safe_dump(dataclasses.asdict(self.cfg)))
            plot_curves(history, Path(tmp) / "training_curves.png")
            for f in ("train_config.yaml", "config.yaml", "training_curves.png"):
                self.client.log_artifact(self.run_id, str(Path(tmp) / f))
        with mlflow.start_run(run_id=self.run_id):
            info = log_pyfunc(embedder, checkpoint)
        accepted, reason = challenger_gate(metrics)
        version = None
        if register:
            key = GATE_METRIC.replace("@", "_at_")
            tags = {"gate.decision": "accepted" if accepted else "refused", "gate.reason": reason,
                    f"gate.{key}.model": f"{metrics[GATE_METRIC]:.6f}",
                    f"gate.{key}.popularity": f"{metrics['popularity_' + GATE_METRIC]:.6f}"}
            version = register_model(info.model_uri, self.tc.model_name, self.run_id, alias=accepted, tags=tags)
        self.client.set_terminated(self.run_id, "FINISHED")
        return version, accepted, reason


def plot_curves(history: list, path: Path) -> None:
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    ep = [r["epoch"] for r in history]
    fig, (a, b) = plt.subplots(1, 2, figsize=(9, 3.5))
    a.plot(ep, [r["loss"] for r in history], marker="o")
    a.set(xlabel="epoch", ylabel="train loss", title="InfoNCE loss")
    for k in ("valid_recall@20", "valid_ndcg@20"):
        b.plot(ep, [r[k] for r in history], marker="o", label=k)
    b.set(xlabel="epoch", title="valid full ranking")
    b.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=80)
    plt.close(fig)


def signature():
    """Inputs: user sequences or item features (every column optional); param ``kind``."""
    from mlflow.models import ModelSignature
    from mlflow.types.schema import AnyType, Array, ColSpec, DataType, ParamSchema, ParamSpec, Schema

    L, F = Array(DataType.long), Array(DataType.float)
    inputs = Schema([ColSpec(AnyType(), "item_idx", required=False),        # users: array; items: int
                     ColSpec(L, "behavior", required=False), ColSpec(L, "gaps", required=False),
                     *(ColSpec(DataType.long, c, required=False) for c in ("category_idx", "brand_idx", "shop_idx")),
                     *(ColSpec(DataType.float, c, required=False) for c in ("price_norm", "year_norm")),
                     ColSpec(L, "title_tokens", required=False), ColSpec(L, "tag_ids", required=False),
                     ColSpec(F, "image", required=False)])
    outputs = Schema([ColSpec(F, c, required=False) for c in ("interests", "weights", "vector")])
    return ModelSignature(inputs, outputs, ParamSchema([ParamSpec("kind", DataType.string, "auto")]))


warnings.filterwarnings("ignore", message=".*Add type hints to the `predict` method.*")  # old-style predict on purpose


class GuimPyfunc(mlflow.pyfunc.PythonModel):
    """DataFrame of user sequences -> interests (K*d) + weights (K); of item features -> vector (d)."""

    def load_context(self, context):
        from guim_features.embedder import from_checkpoint

        self.embedder = from_checkpoint(context.artifacts["checkpoint"])

    def predict(self, context, model_input, params=None):
        from guim_features.errors import GuimError

        df = model_input if isinstance(model_input, pd.DataFrame) else pd.DataFrame(model_input)
        kind = (params or {}).get("kind", "auto")
        if kind == "auto":
            kind = "users" if ("behavior" in df.columns or "gaps" in df.columns or (
                len(df) and "item_idx" in df.columns and np.ndim(df["item_idx"].iloc[0]) == 1)) else "items"
        if kind == "items":
            return pd.DataFrame({"vector": list(self.embedder.encode_items(df))})
        if kind != "users":
            raise GuimError(f"kind={kind!r} is not one of auto, users, items")
        if "item_idx" not in df.columns:
            raise GuimError(f"user input needs an item_idx column (got {list(df.columns)})")
        seqs = [np.asarray(v, np.int64) for v in df["item_idx"]]
        other = {c: [np.asarray(v, np.int64) for v in df[c]] if c in df.columns else
                 [np.zeros(len(s), np.int64) for s in seqs] for c in ("behavior", "gaps")}
        interests, weights = self.embedder.encode_users(seqs, other["behavior"], other["gaps"])
        return pd.DataFrame({"interests": list(interests.reshape(len(df), -1)), "weights": list(weights)})


def log_pyfunc(embedder, checkpoint: str):
    """Log the pyfunc model (name ``model``) in the active run; returns mlflow's ModelInfo."""
    example = pd.DataFrame({"item_idx": [np.array([3, 4, 5], np.int64), np.array([4], np.int64)],
                            "behavior": [np.array([1, 1, 2], np.int64), np.array([1], np.int64)],
                            "gaps": [np.array([0, 3, 5], np.int64), np.array([0], np.int64)]})
    return mlflow.pyfunc.log_model(name="model", python_model=GuimPyfunc(), artifacts={"checkpoint": checkpoint},
                                   code_paths=[str(PACKAGE_DIR)], signature=signature(), input_example=example,
                                   pip_requirements=["torch", "numpy", "pandas", "pyyaml", "mlflow"])


def register_model(model_uri: str, name: str, run_id: str | None = None, alias: bool = True,
                   tags: dict | None = None) -> str:
    """Register ``model_uri`` as a new version of ``name`` (with ``tags``) and, if ``alias``, point
    alias ``challenger`` at it."""
    mv = mlflow.register_model(model_uri, name, tags={"run_id": run_id or "", **(tags or {})})
    if alias:
        mlflow.MlflowClient().set_registered_model_alias(name, "challenger", mv.version)
    return str(mv.version)


GATE_METRIC = "valid_recall@20"


def challenger_gate(metrics: dict) -> tuple[bool, str]:
    """(accepted, reason): a run earns alias ``challenger`` only when its valid Recall@20 is higher
    than the popularity ranking's on the same valid split (``popularity_valid_recall@20``, see
    ``train.popularity_metrics``). A model no better than counting items has learned nothing a
    user could not get for free, so it is not served by default."""
    model, pop = metrics[GATE_METRIC], metrics["popularity_" + GATE_METRIC]
    accepted = model > pop
    return accepted, f"valid Recall@20 {model:.4f} {'>' if accepted else '<='} popularity {pop:.4f}"
