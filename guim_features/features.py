"""Point-in-time correct training sets from the published Feast store: one row per entity row, one
model version.

``training_set(cfg, entity_df)`` is ``FeatureStore.get_historical_features`` with two guarantees
Feast's offline stores do not give on their own:

- **Exactly one output row per entity row, in the entity frame's order**, with nulls where no
  snapshot existed yet. Feast 0.67's file (dask) store drops an entity row whose every feature
  row is newer than it, and keeps one row per (join keys of the first view, timestamp) — two
  labels of one user at the same instant for different items collapse into one. Here each
  feature view is joined separately on its distinct (join key, timestamp) pairs, which Feast
  neither drops nor collapses wrongly, and the results are mapped back onto every entity row.
- **One model version.** The published sources hold the history of one model version (see
  ``publish.write_repo``); every returned ``<view>__model_version`` is checked against it, and a
  mixed result (a hand-edited or foreign repository) is refused rather than returned.
"""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from .errors import GuimError

ROW = "__guim_row"


def published_version(cfg) -> str:
    """The model version the workspace's Feast store serves (written by ``guim publish``)."""
    from .publish import repo_dir

    meta = Path(repo_dir(cfg)) / "guim_model.json"
    if not meta.exists():
        raise GuimError(f"no published Feast repository at {repo_dir(cfg)}: run `guim publish` first")
    return str(json.loads(meta.read_text())["model_version"])


def check_versions(df, model_version: str, columns: list[str]) -> None:
    """Raise when any non-null value of ``columns`` differs from ``model_version``, naming the row."""
    for c in columns:
        col = df[c]
        bad = col.notna() & (col.astype(str) != str(model_version))
        if bad.any():
            i = int(np.flatnonzero(bad.to_numpy())[0])
            found = sorted(set(col[bad].astype(str)))
            raise GuimError(f"training set mixes model versions: column {c} holds {found} where version "
                            f"{model_version} was pinned (first at entity row {i}); vectors of different "
                            "models live in different spaces — publish one version (guim publish --model-version V)")


def _timestamps(entity_df, column: str):
    import pandas as pd

    if column not in entity_df.columns:
        raise GuimError(f"entity frame has no {column!r} column (the instant each label happened)")
    ts = entity_df[column]
    if not pd.api.types.is_datetime64_any_dtype(ts):
        try:
            ts = pd.to_datetime(ts, utc=True, format="ISO8601")
        except (ValueError, TypeError) as e:
            raise GuimError(f"entity frame column {column!r} is not a timestamp ({e})") from None
    if ts.isna().any():
        raise GuimError(f"entity frame column {column!r} has {int(ts.isna().sum())} missing timestamps "
                        f"(first at row {int(np.flatnonzero(ts.isna().to_numpy())[0])})")
    ts = ts.dt.tz_localize("UTC") if ts.dt.tz is None else ts.dt.tz_convert("UTC")
    return ts.astype("datetime64[us, UTC]")


def training_set(cfg, entity_df, model_version: str | None = None, views: list[str] | None = None,
                 timestamp_column: str = "event_timestamp", store=None):
    """``entity_df`` (join keys, ``event_timestamp`` = when each label happened, any label columns)
    -> the same rows, same order and index, plus ``<view>__<feature>`` columns of the snapshot that
    was current at each row's instant (nulls before a user's first snapshot).

    ``model_version``: the version to pin (default: the published one; another raises, naming the
    command that publishes it). ``views``: feature views to join (default: those of the feature
    service ``guim_embeddings_v1`` whose join keys the frame has)."""
    import pandas as pd
    from feast import FeatureStore

    from .publish import SERVICE, repo_dir

    served = published_version(cfg)
    version = served if model_version is None else str(model_version)
    if version != served:
        raise GuimError(f"the Feast store at {repo_dir(cfg)} serves model version {served}, not {version}: "
                        f"run `guim publish --model-version {version}` first")
    store = store or FeatureStore(repo_path=str(repo_dir(cfg)))
    ts = _timestamps(entity_df, timestamp_column)
    chosen = views
    if views is None:
        views = [p.name for p in store.get_feature_service(SERVICE).feature_view_projections]
    out = entity_df.copy()
    version_columns = []
    for name in views:
        view = store.get_feature_view(name)
        keys = [e.name for e in view.entity_columns]
        missing = [k for k in keys if k not in entity_df.columns]
        if missing and chosen is None:
            continue                                    # e.g. a user-only frame skips the item view
        if missing:
            raise GuimError(f"entity frame lacks {missing} needed by feature view {name}")
        for k in keys:
            if entity_df[k].isna().any():
                raise GuimError(f"entity frame column {k!r} has missing ids "
                                f"(first at row {int(np.flatnonzero(entity_df[k].isna().to_numpy())[0])})")
        frame = pd.DataFrame({**{k: entity_df[k].astype(str).to_numpy() for k in keys},
                              "event_timestamp": ts.to_numpy()})
        group = frame.groupby(keys + ["event_timestamp"], sort=False).ngroup().to_numpy()   # row -> pair
        pairs = frame.drop_duplicates(keys + ["event_timestamp"]).reset_index(drop=True)
        pairs[ROW] = np.arange(len(pairs))
        pairs["event_timestamp"] = pairs["event_timestamp"].dt.tz_convert("UTC")
        features = [f"{name}:{f.name}" for f in view.features]
        got = store.get_historical_features(entity_df=pairs, features=features, full_feature_names=True).to_df()
        if got[ROW].duplicated().any():
            raise GuimError(f"Feast returned several rows for one entity row of view {name}")
        cols = [f"{name}__{f.name}" for f in view.features]
        got = got.set_index(ROW).reindex(np.arange(len(pairs)))          # rows Feast dropped: nulls
        for c in cols:
            out[c] = got[c].to_numpy()[group]
        version_columns += [c for c in cols if c.endswith("__model_version")]
    if not version_columns:
        raise GuimError(f"entity frame has none of the join keys of {views}")
    check_versions(out, version, version_columns)
    return out
