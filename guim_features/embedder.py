"""A trained GUIM ready for inference (docs/CONTRACTS.md "Model API"): numpy in, numpy out, CPU by default.

A checkpoint (``model.pt``) holds the model's arguments, its weights (with the catalogue's
feature bank) and ``meta`` (the TrainConfig it was trained with, the Delta versions it read,
its metrics), so ``load_embedder`` never needs the caller to restate hyper-parameters.
"""
from __future__ import annotations

import os
from pathlib import Path

import numpy as np

from .errors import GuimError

CHECKPOINT = "model.pt"
MIN_ROWS = 8          # smaller batches take other kernels whose rounding differs in the last bit


def bucket_widths(max_len: int) -> np.ndarray:
    """Sequence widths used for inference: 8, 16, 32, … below ``max_len``, then ``max_len``."""
    w = [x for x in (8, 16, 32, 64, 128, 256, 512, 1024) if x < max_len]
    return np.array(w + [max_len], np.int64)


class Embedder:
    """Wraps a GUIM module: ``encode_users``, ``encode_items``, ``score`` on numpy arrays."""

    def __init__(self, model, meta: dict | None = None, model_version: str | None = None, transitions=None):
        self.model = model.eval()
        self.transitions = transitions  # model.transitions.TransitionPrior (train.transition_window), or None
        self.meta = dict(meta or {})
        self.K, self.d = int(model.args["K"]), int(model.args["d"])
        self.max_len = int(model.args["max_len"])
        self.config = {**self.meta.get("train_config", {}), **model.args}
        self.model_version = model_version
        self._fold_in = None        # user_vector's FoldIn over the catalogue, built on first use

    @property
    def temperature(self) -> float:
        """The model's (learned or fixed) temperature tau; the ``lse`` score uses it."""
        return float(self.model.log_tau.detach().exp())

    def _device(self):
        return next(self.model.parameters()).device

    def encode_users(self, item_idx: list, behavior: list, gaps: list,
                     batch_size: int = 512) -> tuple[np.ndarray, np.ndarray]:
        """Per-user 1-D int arrays (the input part, time-ordered) -> interests (B, K, d), weights (B, K).

        Rows are grouped by length into widths 8, 16, 32, … ``max_len`` (a sequence of 5 events is
        encoded at width 8, not ``max_len``: the encoder is causal and left-padded, so the padding
        it skips would be masked anyway) and every chunk has at least :data:`MIN_ROWS` rows (padded
        with empty sequences). A row's vectors then depend only on its own events — not on which
        other rows share its batch — so re-encoding a user gives bit-identical vectors."""
        import torch

        from .data import left_pad

        if not (len(item_idx) == len(behavior) == len(gaps)):
            raise GuimError(f"encode_users: item_idx, behavior and gaps have different lengths "
                            f"({len(item_idx)}, {len(behavior)}, {len(gaps)})")
        n = len(item_idx)
        out_i = np.zeros((n, self.K, self.d), np.float32)
        out_w = np.zeros((n, self.K), np.float32)
        if n == 0:
            return out_i, out_w
        widths = bucket_widths(self.max_len)
        lengths = np.fromiter((min(len(s), self.max_len) for s in item_idx), np.int64, n)
        bucket = np.searchsorted(widths, lengths)                               # first width >= length
        dev = self._device()
        with torch.no_grad():
            for b in np.unique(bucket):
                rows = np.flatnonzero(bucket == b)
                w = int(widths[b])
                for s in range(0, len(rows), batch_size):
                    chunk = rows[s:s + batch_size]
                    fill = max(0, MIN_ROWS - len(chunk))
                    t = [torch.as_tensor(left_pad([x[i] for i in chunk] + [x[chunk[0]][:0]] * fill, w), device=dev)
                         for x in (item_idx, behavior, gaps)]
                    interests, weights = self.model.encode_users(*t)          # (b, K, d), (b, K)
                    out_i[chunk] = interests[:len(chunk)].float().cpu().numpy()
                    out_w[chunk] = weights[:len(chunk)].float().cpu().numpy()
        return out_i, out_w

    def user_vector(self, item_idx: list) -> np.ndarray:
        """Per-user 1-D int arrays of item_idx (the user's WHOLE history) -> (B, p) float32: the
        fixed-length vector a downstream model joins, over the user's distinct items (item_idx outside
        the training catalogue skipped; unlike ``encode_users`` every event counts, not the last
        ``max_len``). With a profile head (``train.profile_steps`` > 0, guim_features/model/profile.py):
        p = 2d, the head's vector then :meth:`fold_in`'s; without one: p = d, the fold-in alone. The
        head carries the history's co-occurrence, the fold-in GUIM's own item geometry; which of the
        two a probe needs depends on the data (guim_features/downstream/README.md, "User vector")."""
        sets = self._distinct(item_idx)
        if self.model.profile is None:
            return self._folded(sets)
        return np.concatenate([self.model.profile.encode(sets), self._folded(sets)], 1)

    def fold_in(self, item_idx: list) -> np.ndarray:
        """:func:`fold_in` of each user's distinct items over this model's catalogue -> (B, d) float32."""
        return self._folded(self._distinct(item_idx))

    def _distinct(self, item_idx: list) -> list:
        from .data import catalogue_items

        return [catalogue_items(s, int(self.model.args["n_items"])) for s in item_idx]

    def _folded(self, sets: list) -> np.ndarray:
        if self._fold_in is None:                         # the catalogue and its Gram matrix, once
            self._fold_in = FoldIn(self.catalogue())
        return self._fold_in(sets)

    def encode_items(self, item_features, batch_size: int = 4096) -> np.ndarray:
        """Rows in the item_features schema (pandas DataFrame) -> (N, d) float32."""
        import torch

        from .data import features_from_frame

        a, out, dev = self.model.args, [], self._device()
        with torch.no_grad():
            for s in range(0, len(item_features), batch_size):
                f = features_from_frame(item_features.iloc[s:s + batch_size], a["title_len"], a["tags_len"],
                                        a["image_dim"])
                t = {k: torch.as_tensor(v, device=dev) for k, v in f.items()}
                out.append(self.model.encode_items(t).float().cpu().numpy())  # (n, d)
        return np.concatenate(out) if out else np.zeros((0, self.d), np.float32)

    def catalogue(self) -> np.ndarray:
        """Vectors of the training catalogue indexed by item_idx (rows 0..2 are zeros) -> (V, d)."""
        import torch

        with torch.no_grad():
            v = self.model.catalogue().float().cpu().numpy()
        return np.concatenate([np.zeros((3, self.d), np.float32), v])

    def score(self, interests, weights, item_vectors) -> np.ndarray:
        """(B, K, d), (B, K), (N, d) -> (B, N) by the model's rule (``lse`` mixture by default, or ``max``)."""
        import torch

        with torch.no_grad():
            s = self.model.score(torch.as_tensor(np.asarray(interests, np.float32)),
                                 torch.as_tensor(np.asarray(weights, np.float32)),
                                 torch.as_tensor(np.asarray(item_vectors, np.float32)))
        return s.numpy()

    def rank_scores(self, scores: np.ndarray, last_items) -> np.ndarray:
        """(B, N) :meth:`score` output over the whole catalogue by item_idx (N = the model's n_items;
        -inf where an item must not rank) and (B,) each user's last item_idx, or (B, W) their latest
        items in time order (the prior follows ``transitions.follow`` of them) -> (B, N) ranking
        scores: with a fitted transition prior, the log of its blend with the model's softmax at the
        training temperature; without one (or weight 0), ``scores`` unchanged."""
        if self.transitions is None or self.transitions.weight <= 0:
            return scores
        return self.transitions.blend(np.asarray(scores, np.float32) / self.temperature, np.asarray(last_items))

    def save(self, path: str | os.PathLike) -> str:
        """Write the checkpoint (arguments, weights, meta, the transition prior if any) to ``path``; returns it."""
        import torch

        state = {k: v.detach().cpu() for k, v in self.model.state_dict().items()}
        Path(path).parent.mkdir(parents=True, exist_ok=True)
        ck = {"args": self.model.args, "state": state, "meta": self.meta}
        if self.transitions is not None:
            ck["transitions"] = self.transitions.state()
        torch.save(ck, path)
        return str(path)


def fold_in(item_vectors: np.ndarray, items: list, alpha: float = 1.0, reg: float = 0.05) -> np.ndarray:
    """(V, d) item vectors by item_idx and per-user arrays of distinct item_idx -> (B, d) float32 user
    vectors: implicit ALS's closed-form fold-in (Hu, Koren & Volinsky 2008) with the unit-normalised
    item vectors Y as the fixed factors,

        x_u = (YᵀY + alpha Y_uᵀY_u + reg n_u I)⁻¹ (1 + alpha) Y_uᵀ1      (n_u = max(1, items of u)),

    i.e. a ridge regression of the user's item indicator on the item vectors: the whole history,
    de-correlated by the catalogue's Gram matrix. alpha and reg are the ALS baseline's
    (bench.als_alpha, bench.als_reg). Chosen on user_profile's valid users over the weighted mean
    of the K interests, the interests concatenated (query or weight order) and the history's mean
    item vector (guim_features/downstream/README.md, "User vector")."""
    return FoldIn(item_vectors, alpha, reg)(items)


class FoldIn:
    """:func:`fold_in` with the unit-normalised item vectors and their Gram matrix computed once
    (O(V d²)), so that folding in batch after batch of users costs O(n_u d² + d³) per user."""

    def __init__(self, item_vectors: np.ndarray, alpha: float = 1.0, reg: float = 0.05):
        y = np.asarray(item_vectors, np.float64)
        self.y = y / np.maximum(np.linalg.norm(y, axis=1, keepdims=True), 1e-12)   # (V, d)
        self.gram = self.y.T @ self.y                                               # (d, d)
        self.alpha, self.reg = alpha, reg

    def __call__(self, items: list) -> np.ndarray:
        """Per-user arrays of distinct item_idx -> (B, d) float32."""
        return als_fold_in(self.y, items, self.alpha, self.reg, self.gram).astype(np.float32)


def als_fold_in(factors: np.ndarray, items: list, alpha: float, reg: float, gram: np.ndarray | None = None):
    """The fold-in of :func:`fold_in` with the item ``factors`` (V, r) taken as they are -> (B, r)
    float64: the ALS baseline's user vectors from Spark's item factors, and GUIM's from its own.
    ``gram``: factorsᵀ factors when the caller already has it."""
    y = np.asarray(factors, np.float64)
    gram, eye = (y.T @ y if gram is None else gram), np.eye(y.shape[1])     # (r, r)
    out = np.zeros((len(items), y.shape[1]))
    for b, i in enumerate(items):
        yu = y[np.asarray(i, np.int64)]                                      # (n_u, r)
        out[b] = np.linalg.solve(gram + alpha * yu.T @ yu + reg * max(len(yu), 1) * eye, (1 + alpha) * yu.sum(0))
    return out


def from_checkpoint(path: str | os.PathLike, model_version: str | None = None, device: str = "cpu") -> Embedder:
    import torch

    from .model import GUIM
    from .model.transitions import TransitionPrior

    ck = torch.load(path, map_location=device, weights_only=True)
    model = GUIM(ck["args"])
    model.load_state_dict(ck["state"])
    prior = TransitionPrior.from_state(ck["transitions"]) if "transitions" in ck else None
    return Embedder(model.to(device), ck.get("meta"), model_version or ck.get("meta", {}).get("model_version"),
                    transitions=prior)


def _find_checkpoint(folder: Path) -> Path:
    hits = sorted(folder.rglob(CHECKPOINT))
    if not hits:
        raise GuimError(f"no {CHECKPOINT} under {folder}: not a GUIM model")
    return hits[0]


def _missing_hint(client, name: str, alias: str) -> str:
    """What to do when ``models:/name@alias`` does not resolve: name the newest version that the
    popularity gate kept from alias challenger, if that is why."""
    import mlflow

    try:
        versions = client.search_model_versions(f"name = '{name}'")
    except mlflow.exceptions.MlflowException:
        versions = []
    newest = max(versions, key=lambda mv: int(mv.version), default=None)
    if alias == "challenger" and newest is not None and newest.tags.get("gate.decision") == "refused":
        return (f"version {newest.version} was registered without alias {alias!r} because it is not better than "
                f"popularity ({newest.tags.get('gate.reason', '')}); train a better model, or pass "
                f"--model-uri models:/{name}/{newest.version} to use it anyway")
    return "train one with `guim train`"


def load_embedder(model_uri: str, tracking_uri: str | None = None, device: str = "cpu") -> Embedder:
    """``models:/guim@challenger``, ``models:/guim/3``, ``runs:/<id>/model``, a pyfunc folder or a model.pt."""
    p = Path(model_uri)
    if "://" not in model_uri and ":/" not in model_uri:
        if p.is_file():
            return from_checkpoint(p, device=device)
        if p.is_dir():
            return from_checkpoint(_find_checkpoint(p), device=device)
        raise GuimError(f"model {model_uri!r} not found (expected models:/NAME@ALIAS, runs:/ID/model or a path)")
    import mlflow

    if tracking_uri:
        from .tracking import use_uri
        use_uri(tracking_uri)
    version = None
    if model_uri.startswith("models:/"):
        name, _, ref = model_uri[len("models:/"):].partition("@")
        client = mlflow.MlflowClient()
        try:
            if ref:
                version = client.get_model_version_by_alias(name, ref).version
            elif "/" in name:
                version = name.split("/", 1)[1]
        except mlflow.exceptions.MlflowException as e:
            raise GuimError(f"model {model_uri!r} not in the registry at {mlflow.get_registry_uri()} "
                            f"({e.message.splitlines()[0]}); {_missing_hint(client, name, ref)}") from None
    try:
        local = Path(mlflow.artifacts.download_artifacts(artifact_uri=model_uri))
    except mlflow.exceptions.MlflowException as e:
        raise GuimError(f"cannot load {model_uri!r}: {e.message.splitlines()[0]}") from None
    return from_checkpoint(_find_checkpoint(local), model_version=version and str(version), device=device)
