"""Online materialization: the newest gold rows of one model version -> Feast's online store.

Three ways, chosen by ``publish.materialize``:

- ``feast_write`` (default): Feast's public ``FeatureStore.write_to_online_store``, fed in chunks of
  pandas frames built column-wise from the gold snapshot (no Python loop over rows here). Feast
  converts each row to protobuf and writes it with its own online store, so whatever Feast stores is
  by construction what Feast reads. The materialized interval is recorded in the registry, as
  ``FeatureStore.materialize`` does.
- ``fast`` (opt-in): a vectorised writer into Feast's online tables, see ``materialize_fast.py``: the one
  module that depends on Feast's private storage layout, verified against named Feast versions only.
- ``feast``: ``FeatureStore.materialize`` from the epoch (reads the offline store again; the slowest).

Figures for each path are in the README (``python bench/online_write.py``).
"""
from __future__ import annotations

import time
from datetime import datetime, timedelta, timezone

from .errors import GuimError

PATHS = ("feast_write", "fast", "feast")
CHUNK = 5000      # rows per write_to_online_store call: one SQLite transaction / two Redis round trips
SLICE = 100_000   # gold user rows converted (and, on the fast path, encoded) at a time


def write_view(store, view_name: str, table, chunk: int = CHUNK, progress=None) -> int:
    """Write an Arrow ``table`` holding the view's Feast columns (join key, features, event_timestamp)
    with Feast's public ``write_to_online_store``, ``chunk`` rows per call; returns the rows written."""
    for start in range(0, table.num_rows, chunk):
        part = table.slice(start, chunk)
        store.write_to_online_store(view_name, df=part.to_pandas())
        if progress:
            progress(part.num_rows)
    return table.num_rows


def write_users(store, users, k: int, chunk: int = CHUNK, progress=None) -> int:
    """Gold user rows (one per user) -> the online user view, through Feast's public write."""
    from .views import USER_VIEW, matrix, user_columns

    got = matrix(users["interests"].slice(0, 1)).shape[1] if users.num_rows else k
    if got != k:
        raise GuimError(f"user vectors have K={got} interests, the feature view K={k}")
    return write_view(store, USER_VIEW, user_columns(users, k), chunk, progress)


def write_items(store, items, chunk: int = CHUNK, progress=None) -> int:
    """Gold item rows (one per item) -> the online item view, through Feast's public write."""
    from .views import ITEM_VIEW, item_columns

    return write_view(store, ITEM_VIEW, item_columns(items), chunk, progress)


def record_interval(store, view_name: str, start: datetime, end: datetime) -> None:
    """Record the materialized interval in the registry, as ``FeatureStore.materialize`` does."""
    view = store.get_feature_view(view_name)
    store.registry.apply_materialization(view, store.project, start, end)


def _span(table) -> tuple[datetime, datetime]:
    """[oldest, newest + 1 us) of a table's event_timestamp, as aware UTC datetimes."""
    import pyarrow as pa
    import pyarrow.compute as pc

    us = table["event_timestamp"].cast(pa.timestamp("us", tz="UTC")).cast(pa.int64())
    lo, hi = pc.min_max(us).values()
    epoch = datetime(1970, 1, 1, tzinfo=timezone.utc)
    return epoch + timedelta(microseconds=lo.as_py()), epoch + timedelta(microseconds=hi.as_py() + 1)


def check_path(cfg) -> str:
    """``cfg.publish.materialize``, checked before anything is written (the fast path: the Feast version too)."""
    path = cfg.publish.materialize
    if path not in PATHS:
        raise GuimError(f"publish.materialize={path!r}: expected one of {', '.join(PATHS)}")
    if path == "fast":
        from .materialize_fast import check_feast_version

        check_feast_version()
    return path


def materialize(cfg, store, users, items, k: int, progress=None) -> dict:
    """Newest snapshot rows -> online store by ``cfg.publish.materialize``; returns {view: rows},
    the seconds taken and, for the row-writing paths, the user rows/s."""
    from .views import ITEM_VIEW, USER_VIEW

    path = check_path(cfg)
    t0 = time.perf_counter()
    if path == "feast":
        # materialize (not _incremental): with ttl 0, _incremental looks back one year only, and
        # item vectors are stamped 1970-01-01; the sources hold one model version, so the newest
        # row per key since the epoch is that version's current snapshot
        store.materialize(start_date=datetime(1970, 1, 1, tzinfo=timezone.utc),
                          end_date=datetime.now(timezone.utc) + timedelta(seconds=1))
        return {"seconds": time.perf_counter() - t0, USER_VIEW: users.num_rows, ITEM_VIEW: items.num_rows}
    if path == "fast":
        from .materialize_fast import write_items as put_items, write_users as put_users
    else:
        put_users, put_items = write_users, write_items
    n_users = 0
    for start in range(0, users.num_rows, SLICE):   # converted slice by slice: bounded driver memory
        n_users += put_users(store, users.slice(start, SLICE), k, progress=progress)
    user_s = time.perf_counter() - t0
    put_items(store, items, progress=progress)
    for view, t in ((USER_VIEW, users), (ITEM_VIEW, items)):
        if t.num_rows:
            record_interval(store, view, *_span(t))
    return {"seconds": time.perf_counter() - t0, USER_VIEW: n_users, ITEM_VIEW: items.num_rows,
            "user_rows_per_s": n_users / max(user_s, 1e-9)}
