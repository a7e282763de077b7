"""Approximate-nearest-neighbour index over item vectors, stamped with its model_version.

Faiss ``IndexHNSWFlat`` with the inner-product metric (GUIM scores a user interest u_k and an
item v by u_k . v). Search runs on ONE thread: on a 2-core laptop-class machine shared with other jobs, several threads
made a 4-query search ~50x slower (measured floors). The folder holds

- ``index.faiss``  the HNSW graph and vectors,
- ``vectors.npy``  the item vectors (N, d) float32, held in memory for exact re-scoring of candidates,
- ``items.npy``    item ids in index order,
- ``meta.json``    model_version, K, d, N, HNSW parameters, popular items (fallback), built_at,
  and ``transitions`` (weight, window, decay, follow, pairs) when the model carries a transition prior;
- ``transitions.npz`` only then: the prior P(next | last item) as CSR arrays over index rows
  (``indptr`` (N + 1,), ``indices``, ``values``), which ``guim recommend`` blends with the model.

``guim publish`` logs the same files to the MLflow run of the model version, under
``ann_index/v<version>`` (:func:`artifact_path`); :meth:`ItemIndex.from_mlflow` loads them back
anywhere that can reach the tracking server, with no access to the workspace.
"""
from __future__ import annotations

import json
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from .errors import GuimError

FILES = ("index.faiss", "vectors.npy", "items.npy", "meta.json")
PRIOR_FILE = "transitions.npz"


def files(meta: dict) -> tuple:
    """The files of an index folder with this meta (the prior's file only when it has one)."""
    return FILES[:-1] + ((PRIOR_FILE,) if meta.get("transitions") else ()) + FILES[-1:]


def artifact_path(model_version) -> str:
    """Where in its MLflow run the index of ``model_version`` lives."""
    return f"ann_index/v{model_version}"


def _faiss():
    import faiss

    faiss.omp_set_num_threads(1)
    return faiss


@dataclass
class ItemIndex:
    """HNSW index + item ids + vectors of ONE model version."""

    index: object                    # faiss.IndexHNSWFlat (inner product)
    item_ids: np.ndarray             # (N,) str, row i of the index is item_ids[i]
    vectors: np.ndarray              # (N, d) float32
    meta: dict = field(default_factory=dict)
    transitions: dict | None = None  # {"indptr", "indices", "values"}: P(row j | last row i), CSR over rows

    def successors(self, row: int) -> tuple[np.ndarray, np.ndarray]:
        """(rows, P(row | ``row``)) of the items the prior says follow index row ``row`` (empty without one)."""
        if self.transitions is None or not 0 <= row < len(self.item_ids):
            return np.empty(0, np.int64), np.empty(0, np.float32)
        ptr = self.transitions["indptr"]
        lo, hi = int(ptr[row]), int(ptr[row + 1])
        return self.transitions["indices"][lo:hi], self.transitions["values"][lo:hi]

    @property
    def model_version(self) -> str:
        return self.meta["model_version"]

    @classmethod
    def build(cls, item_ids, vectors: np.ndarray, model_version: str, m: int = 32, ef_construction: int = 80,
              ef_search: int = 64, **extra) -> "ItemIndex":
        """Build the HNSW graph over ``vectors`` (N, d); ``extra`` is kept in meta (K, popular, …)."""
        faiss = _faiss()
        vectors = np.ascontiguousarray(vectors, dtype=np.float32)          # (N, d)
        if vectors.ndim != 2 or len(vectors) == 0:
            raise GuimError(f"cannot index item vectors of shape {vectors.shape}: expected (N>0, d)")
        if len(item_ids) != len(vectors):
            raise GuimError(f"{len(item_ids)} item ids for {len(vectors)} vectors")
        index = faiss.IndexHNSWFlat(vectors.shape[1], m, faiss.METRIC_INNER_PRODUCT)
        index.hnsw.efConstruction = ef_construction
        index.hnsw.efSearch = ef_search
        index.add(vectors)
        meta = {"model_version": str(model_version), "n": int(len(vectors)), "d": int(vectors.shape[1]),
                "m": m, "ef_construction": ef_construction, "ef_search": ef_search,
                "built_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()), **extra}
        return cls(index, np.asarray(item_ids).astype(str), vectors, meta)

    def save(self, folder: str | Path) -> Path:
        """Write every file under a temporary name, then rename them in place (meta.json last)."""
        import os

        folder = Path(folder)
        folder.mkdir(parents=True, exist_ok=True)
        _faiss().write_index(self.index, str(folder / "index.faiss.tmp"))
        with open(folder / "vectors.npy.tmp", "wb") as f:
            np.save(f, self.vectors)
        with open(folder / "items.npy.tmp", "wb") as f:
            np.save(f, self.item_ids)
        if self.transitions is not None:
            with open(folder / f"{PRIOR_FILE}.tmp", "wb") as f:
                np.savez(f, **self.transitions)
        (folder / "meta.json.tmp").write_text(json.dumps(self.meta, indent=1))
        for name in files(self.meta):
            os.replace(folder / f"{name}.tmp", folder / name)
        if not self.meta.get("transitions"):
            (folder / PRIOR_FILE).unlink(missing_ok=True)       # an earlier version's prior is not this one's
        return folder

    @classmethod
    def load(cls, folder: str | Path) -> "ItemIndex":
        folder = Path(folder)
        if not (folder / "meta.json").exists():
            raise GuimError(f"no item index at {folder}: run `guim publish` first")
        faiss = _faiss()
        meta = json.loads((folder / "meta.json").read_text())
        index = faiss.read_index(str(folder / "index.faiss"))
        index.hnsw.efSearch = meta["ef_search"]
        prior = None
        if meta.get("transitions"):
            with np.load(folder / PRIOR_FILE) as z:
                prior = {k: z[k] for k in ("indptr", "indices", "values")}
        return cls(index, np.load(folder / "items.npy"), np.load(folder / "vectors.npy"), meta, prior)

    @classmethod
    def from_mlflow(cls, model_version, model_name: str = "guim", run_id: str | None = None,
                    tracking_uri: str | None = None, dst_path: str | None = None) -> "ItemIndex":
        """The index ``guim publish`` logged for registered ``model_name`` version ``model_version``,
        downloaded from its MLflow run (``run_id``, or the run the registry records for the version)
        into ``dst_path`` (default: a new temporary folder)."""
        import mlflow
        from mlflow.exceptions import MlflowException

        try:
            if run_id is None:
                client = mlflow.MlflowClient(tracking_uri=tracking_uri, registry_uri=tracking_uri)
                run_id = client.get_model_version(model_name, str(model_version)).run_id
            local = mlflow.artifacts.download_artifacts(run_id=run_id, artifact_path=artifact_path(model_version),
                                                        dst_path=dst_path, tracking_uri=tracking_uri)
        except MlflowException as e:
            raise GuimError(f"no item index of {model_name} version {model_version} in MLflow "
                            f"({e.message.splitlines()[0]}); `guim publish` logs it") from None
        meta = Path(local) / "meta.json"
        missing = [f for f in (files(json.loads(meta.read_text())) if meta.exists() else FILES)
                   if not (Path(local) / f).exists()]
        if missing:
            raise GuimError(f"the item index logged to run {run_id} lacks {', '.join(missing)}: publish the "
                            f"version again (`guim publish --model-version {model_version}`)")
        return cls.load(local)

    def search(self, queries: np.ndarray, n: int) -> tuple[np.ndarray, np.ndarray]:
        """Top-``n`` rows by inner product for each query (Q, d) -> scores (Q, n), rows (Q, n); -1 = none."""
        q = np.ascontiguousarray(queries, dtype=np.float32)                  # (Q, d)
        if q.shape[-1] != self.vectors.shape[1]:
            raise GuimError(f"query vectors have d={q.shape[-1]}, the item index d={self.vectors.shape[1]}")
        return self.index.search(q, min(n, len(self.item_ids)))
