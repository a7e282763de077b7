"""MLflow for GUIM: tracking, a thin pyfunc model, registration with alias ``challenger``.

Tracking and registry default to SQLite in the workspace (``cfg.mlflow_uri``; the
``MLFLOW_TRACKING_URI`` environment variable wins) with artifacts under
``<workspace>/mlartifacts``. A run logs every config value as a param, step and epoch metrics,
the config (YAML) and a PNG of the training curves, and tags the Delta versions of the silver
tables it read and the git commit. ``GuimPyfunc`` follows MLflow's ``examples/pyfunc``: the
weights come from the ``checkpoint`` artifact in ``load_context`` and the ``guim_features``
package is shipped with the model (``code_paths``), so ``mlflow.pyfunc.load_model`` works in a
fresh process; the ``item_index`` artifact (item_id -> item_idx as trained) lets it take raw ids.

Every run is registered as a new version; alias ``challenger`` moves to it only when it beats
the popularity ranking on the valid split (:func:`challenger_gate`). Tags on the version:
``gate.decision`` (accepted | refused), ``gate.reason``, ``gate.valid_recall_at_20.model`` and
``.popularity``, and ``train.fingerprint`` (the silver tables read and the train config, so that
an identical rerun can be recognised: :func:`trained_version`).
"""
from __future__ import annotations

import dataclasses
import hashlib
import json
import subprocess
import tempfile
import warnings
from pathlib import Path

import mlflow
import numpy as np
import pandas as pd

from .tracking import use_uri  # noqa: F401  (registry.use_uri is used by callers)
from .versions import pinned

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
        self.cfg, self.tc, self.versions = cfg, train_cfg, table_versions
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

    def finish(self, embedder, checkpoint: str, metrics: dict, history: list, register: bool = True,
               fingerprint: str = "") -> tuple:
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
            items = write_item_map(self.cfg, self.versions.get("item_index"), Path(tmp) / "item_index.parquet")
            with mlflow.start_run(run_id=self.run_id):
                info = log_pyfunc(embedder, checkpoint, items)
        version, accepted, reason = None, False, ""
        if register:
            accepted, reason = challenger_gate(metrics)
            key = GATE_METRIC.replace("@", "_at_")
            tags = {"gate.decision": "accepted" if accepted else "refused", "gate.reason": reason,
                    f"gate.{key}.model": f"{metrics[GATE_METRIC]:.6f}",
                    f"gate.{key}.popularity": f"{metrics['popularity_' + GATE_METRIC]:.6f}",
                    "train.fingerprint": fingerprint}
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
    """Inputs: user sequences or item features (every column optional); outputs: ``interests``,
    ``weights`` and ``profile`` for users, ``vector`` for items; params ``kind``, ``max_item_idx`` and
    ``batch_size`` (see :class:`GuimPyfunc`)."""
    from mlflow.models import ModelSignature
    from mlflow.types.schema import AnyType, Array, ColSpec, DataType, ParamSchema, ParamSpec, Schema

    L, F = Array(DataType.long), Array(DataType.float)
    inputs = Schema([ColSpec(AnyType(), "item_idx", required=False),        # users: array; items: int
                     ColSpec(AnyType(), "item_id", required=False),         # the same as raw ids (strings)
                     ColSpec(L, "behavior", required=False), ColSpec(L, "gaps", required=False),
                     ColSpec(L, "history", required=False),                 # users: every item_idx, for profile
                     *(ColSpec(DataType.long, c, required=False) for c in ("category_idx", "brand_idx", "shop_idx")),
                     *(ColSpec(DataType.float, c, required=False) for c in ("price_norm", "year_norm")),
                     ColSpec(L, "title_tokens", required=False), ColSpec(L, "tag_ids", required=False),
                     ColSpec(F, "image", required=False)])
    outputs = Schema([ColSpec(F, c, required=False) for c in ("interests", "weights", "profile", "vector")])
    params = ParamSchema([ParamSpec("kind", DataType.string, "auto"),                # auto | users | items
                          ParamSpec("max_item_idx", DataType.long, 0),                # see GuimPyfunc
                          ParamSpec("batch_size", DataType.long, 0)])                 # rows per forward pass; 0 = default
    return ModelSignature(inputs, outputs, params)


warnings.filterwarnings("ignore", message=".*Add type hints to the `predict` method.*")  # old-style predict on purpose


def _invalid(message: str):
    """The error a caller gets for bad input (MLflow serving answers it with HTTP 400)."""
    from mlflow.exceptions import MlflowException
    from mlflow.protos.databricks_pb2 import INVALID_PARAMETER_VALUE

    return MlflowException(message, error_code=INVALID_PARAMETER_VALUE)


def _show(value) -> str:
    text = repr(value)
    return text if len(text) <= 60 else text[:57] + "..."


def _int_array(value, column: str, row: int) -> np.ndarray:
    """One row's array of integers (integral floats accepted), or an error naming the column and row."""
    if value is None or np.ndim(value) != 1:
        raise _invalid(f"{column}: row {row} is {_show(value)}; expected an array of integers, one per event")
    a = np.asarray(value)
    if a.dtype.kind in "iu" or len(a) == 0 or (
            a.dtype.kind == "f" and np.isfinite(a).all() and (a == np.round(a)).all()):
        return a.astype(np.int64)
    raise _invalid(f"{column}: row {row} is {_show(value)}; expected an array of integers, one per event")


def _in_range(a: np.ndarray, column: str, row: int, lo: int, hi: int, meaning: str) -> None:
    bad = np.flatnonzero((a < lo) | (a > hi))
    if len(bad):
        raise _invalid(f"{column}: row {row} has {a[bad[0]]} at position {bad[0]}; expected {lo}..{hi} ({meaning})")


def _scalar_int(value, column: str, row: int) -> int:
    if isinstance(value, (int, np.integer)) and not isinstance(value, bool) and value >= 0:
        return int(value)
    if isinstance(value, (float, np.floating)) and np.isfinite(value) and value == round(value) and value >= 0:
        return int(value)
    raise _invalid(f"{column}: row {row} is {_show(value)}; expected one item index (an integer >= 0) per row")


def _raw_id(value, column: str, row: int) -> str:
    if isinstance(value, str) or (isinstance(value, (int, np.integer)) and not isinstance(value, bool)):
        return str(value)
    raise _invalid(f"{column}: row {row} holds {_show(value)}; expected raw item ids (strings)")


class GuimPyfunc(mlflow.pyfunc.PythonModel):
    """DataFrame of user sequences -> interests (K*d) + weights (K) + profile (d); of item features
    -> vector (d).

    ``profile`` is ``Embedder.user_vector``: the fixed-length vector a downstream model should join
    (the profile head over every item the user touched; the fold-in for a model without one). It reads the optional
    ``history`` column (item_idx arrays, the user's whole history, any order, repeats allowed) when
    given, else the items of the sequence itself; items outside the training catalogue are skipped.

    One output row per input row, in order; bad input raises an MlflowException naming the column
    and the row. Items are given as ``item_idx`` (the silver index) or ``item_id`` (raw ids, mapped
    with the item_index the model was trained on; an id it never saw becomes item_idx 2, the
    reserved unknown item). With both columns, ``item_idx`` is used.

    Params: ``kind`` (auto | users | items); ``max_item_idx`` (default 0 = none): the largest
    ``item_idx`` of the silver ``item_index`` the caller's indices come from. A user's ``item_idx``
    from ``n_items`` up to it is an item added to the index after training, encoded as
    ``Embedder.encode_users`` does (a hashed id bucket, no content); ``guim embed`` passes it so its
    snapshots equal the embedder's. Without it such an index is refused, since a caller who does not
    hold the silver index should send raw ids. ``batch_size``: rows per forward pass (0 = the
    embedder's default); the vectors do not depend on it.

    ``GUIM_TORCH_THREADS`` in the environment of ``load_context`` sets torch's thread count (``guim
    embed`` sets 1 for its Spark tasks, which already fill the cores)."""

    item_map = None         # pandas Series item_id -> item_idx (the ``item_index`` artifact)

    def load_context(self, context):
        import os

        import pyarrow.parquet as pq

        from guim_features.embedder import from_checkpoint

        if os.environ.get("GUIM_TORCH_THREADS", "").isdigit() and int(os.environ["GUIM_TORCH_THREADS"]) > 0:
            import torch

            torch.set_num_threads(int(os.environ["GUIM_TORCH_THREADS"]))
        self.embedder = from_checkpoint(context.artifacts["checkpoint"])
        if "item_index" in context.artifacts:
            t = pq.read_table(context.artifacts["item_index"])
            self.item_map = pd.Series(t["item_idx"].to_numpy().astype(np.int64),
                                      index=t["item_id"].to_numpy(zero_copy_only=False))

    def _map_ids(self, ids: list) -> np.ndarray:
        """Raw item ids -> item_idx as trained; unknown ids -> UNK (2)."""
        from guim_features.schemas import UNK

        if self.item_map is None:
            raise _invalid("item_id: this model version was logged without its item map; pass item_idx instead")
        pos = self.item_map.index.get_indexer(ids)
        return np.where(pos >= 0, self.item_map.to_numpy()[pos], UNK).astype(np.int64)

    def _sequences(self, df, max_item_idx: int = 0) -> list:
        """Per-row item_idx arrays of a users frame, validated (or mapped from item_id)."""
        if "item_idx" in df.columns:
            return self._item_idx_arrays(df, "item_idx", max_item_idx)
        rows = []
        for r, v in enumerate(df["item_id"]):
            if v is None or isinstance(v, str) or np.ndim(v) != 1:
                raise _invalid(f"item_id: row {r} is {_show(v)}; expected an array of raw item ids, one per event")
            rows.append([_raw_id(x, "item_id", r) for x in v])
        flat = self._map_ids([x for ids in rows for x in ids])
        return np.split(flat, np.cumsum([len(ids) for ids in rows])[:-1]) if rows else []

    def _item_idx_arrays(self, df, column: str, max_item_idx: int = 0) -> list:
        """Per-row arrays of item_idx in ``column``, each checked against this model's catalogue
        (and the items added to the index since, up to ``max_item_idx``)."""
        from guim_features.schemas import UNK

        n_items = int(self.embedder.model.args["n_items"])
        rows = [_int_array(v, column, r) for r, v in enumerate(df[column])]
        hi = max(n_items - 1, int(max_item_idx))
        meaning = ("this model's items" + (f" and items added to the index since, from {n_items}"
                                           if hi >= n_items else "")
                   + "; 0 and 1 are reserved, 2 = unknown item; give raw ids as item_id to have them mapped")
        for r, s in enumerate(rows):
            _in_range(s, column, r, UNK, hi, meaning)
        return rows

    def _users(self, df, max_item_idx: int = 0, batch_size: int = 0) -> pd.DataFrame:
        a = self.embedder.model.args
        seqs = self._sequences(df, max_item_idx)
        ids = "item_idx" if "item_idx" in df.columns else "item_id"
        other = {}
        for c, hi, meaning in (("behavior", int(a["n_behaviors"]), "behaviour codes in the order of ingest.behaviors, "
                                                                    "0 = unknown"),
                               ("gaps", int(a["gap_buckets"]) - 1, "log2 time-gap buckets")):
            if c not in df.columns:
                other[c] = [np.zeros(len(s), np.int64) for s in seqs]
                continue
            other[c] = [_int_array(v, c, r) for r, v in enumerate(df[c])]
            for r, (v, s) in enumerate(zip(other[c], seqs)):
                if len(v) != len(s):
                    raise _invalid(f"{c}: row {r} has {len(v)} values but {ids} has {len(s)}; the arrays of a row "
                                   f"hold one value per event")
                _in_range(v, c, r, 0, hi, meaning)
        interests, weights = self.embedder.encode_users(seqs, other["behavior"], other["gaps"],
                                                        **({"batch_size": batch_size} if batch_size > 0 else {}))
        history = seqs
        if "history" in df.columns:
            if ids != "item_idx":
                raise _invalid("history: holds item_idx values, so it needs the sequence as item_idx too "
                               "(got item_id)")
            history = self._item_idx_arrays(df, "history", max_item_idx)
        return pd.DataFrame({"interests": list(interests.reshape(len(df), -1)), "weights": list(weights),
                             "profile": list(self.embedder.user_vector(history))})

    def _items(self, df, batch_size: int = 0) -> pd.DataFrame:
        if "item_idx" in df.columns:
            idx = [_scalar_int(v, "item_idx", r) for r, v in enumerate(df["item_idx"])]
        else:
            idx = self._map_ids([_raw_id(v, "item_id", r) for r, v in enumerate(df["item_id"])])
        df = df.assign(item_idx=np.asarray(idx, np.int64))
        return pd.DataFrame({"vector": list(self.embedder.encode_items(
            df, **({"batch_size": batch_size} if batch_size > 0 else {})))})

    def predict(self, context, model_input, params=None):
        df = model_input if isinstance(model_input, pd.DataFrame) else pd.DataFrame(model_input)
        params = params or {}
        kind = params.get("kind", "auto")
        if kind not in ("auto", "users", "items"):
            raise _invalid(f"kind={kind!r} is not one of auto, users, items")
        batch_size = int(params.get("batch_size") or 0)
        ids = next((c for c in ("item_idx", "item_id") if c in df.columns), None)
        if ids is None:
            raise _invalid(f"the input needs an item_idx column (or item_id with raw ids); got columns "
                           f"{list(df.columns)} (MLflow drops columns the model's signature does not name)")
        if kind == "auto":
            kind = "users" if ("behavior" in df.columns or "gaps" in df.columns or (
                len(df) and not isinstance(df[ids].iloc[0], str) and np.ndim(df[ids].iloc[0]) == 1)) else "items"
        if kind == "users":
            return self._users(df, int(params.get("max_item_idx") or 0), batch_size)
        return self._items(df, batch_size)


def log_pyfunc(embedder, checkpoint: str, item_index: str | None = None):
    """Log the pyfunc model (name ``model``) in the active run, with the ``item_index`` Parquet file
    (item_id -> item_idx) when given; returns mlflow's ModelInfo."""
    from .schemas import FIRST_ITEM_INDEX

    last = int(embedder.model.args["n_items"]) - 1
    seq = [np.arange(FIRST_ITEM_INDEX, min(FIRST_ITEM_INDEX + 3, last + 1), dtype=np.int64), np.array([last])]
    example = pd.DataFrame({"item_idx": seq, "behavior": [np.ones(len(s), np.int64) for s in seq],
                            "gaps": [np.zeros(len(s), np.int64) for s in seq]})
    artifacts = {"checkpoint": checkpoint, **({"item_index": item_index} if item_index else {})}
    return mlflow.pyfunc.log_model(name="model", python_model=GuimPyfunc(), artifacts=artifacts,
                                   code_paths=[str(PACKAGE_DIR)], signature=signature(), input_example=example,
                                   pip_requirements=pinned(["torch", "numpy", "pandas", "pyarrow", "pyyaml",
                                                            "mlflow"]))


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


def training_fingerprint(cfg, train_cfg) -> str:
    """sha1 of what a run's result depends on: each silver table it reads (Delta table id and
    version) and the effective train config."""
    from .data import table_versions

    what = {"tables": table_versions(cfg, with_id=True), "train": dataclasses.asdict(train_cfg)}
    return hashlib.sha1(json.dumps(what, sort_keys=True, default=str).encode()).hexdigest()


def trained_version(cfg, train_cfg):
    """The newest registered version of ``train_cfg.model_name`` trained on exactly the current silver
    tables with exactly ``train_cfg`` (its ``train.fingerprint`` tag), or None."""
    from mlflow.exceptions import MlflowException

    fp = training_fingerprint(cfg, train_cfg)
    client = mlflow.MlflowClient(cfg.mlflow_uri, cfg.mlflow_uri)
    try:
        found = client.search_model_versions(f"name = '{train_cfg.model_name}'")
    except MlflowException:
        return None
    hits = [mv for mv in found if mv.tags.get("train.fingerprint") == fp]
    return max(hits, key=lambda mv: int(mv.version)) if hits else None


def write_item_map(cfg, version, path: Path) -> str:
    """The silver ``item_index`` (item_id, item_idx) at Delta ``version`` (the one trained on) as Parquet."""
    import pyarrow.parquet as pq

    from .data import delta_table

    dt = delta_table(cfg, "item_index")
    if version is not None:
        dt.load_as_version(version)
    pq.write_table(dt.to_pyarrow_table(columns=["item_id", "item_idx"]), path)
    return str(path)
