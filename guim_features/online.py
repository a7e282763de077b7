"""Online materialization: the newest gold rows of one model version -> Feast's online store.

Three ways, chosen by ``publish.materialize``:

- ``feast_write`` (default): Feast's public ``FeatureStore.write_to_online_store``, fed in chunks of
  pandas frames built column-wise from the gold snapshot (no Python loop over rows here). Feast
  converts each row to protobuf and writes it with its own online store, so whatever Feast stores is
  by construction what Feast reads. The materialized interval is recorded in the registry, as
  ``FeatureStore.materialize`` does.
- ``fast`` (opt-in): a vectorised writer into Feast's online tables, see ``online_fast.py``: the one
  module that depends on Feast's private storage layout, verified against named Feast versions only.
- ``feast``: ``FeatureStore.materialize`` from the epoch (reads the offline store again; the slowest).

Figures for each path are in the README (``python bench/online_write.py``).
"""
from __future__ import annotations

import json
import time
from contextlib import contextmanager
from datetime import datetime, timedelta, timezone

from .errors import GuimError

PATHS = ("feast_write", "fast", "feast")
CHUNK = 5000      # rows per write_to_online_store call: one SQLite transaction / two Redis round trips


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
    from .publish import USER_VIEW, matrix, user_columns

    got = matrix(users["interests"].slice(0, 1)).shape[1] if users.num_rows else k
    if got != k:
        raise GuimError(f"user vectors have K={got} interests, the feature view K={k}")
    return write_view(store, USER_VIEW, user_columns(users, k), chunk, progress)


def write_items(store, items, chunk: int = CHUNK, progress=None) -> int:
    """Gold item rows (one per item) -> the online item view, through Feast's public write."""
    from .publish import ITEM_VIEW, item_columns

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
        from .online_fast import check_feast_version

        check_feast_version()
    return path


def materialize(cfg, store, users, items, k: int, progress=None) -> dict:
    """Newest snapshot rows -> online store by ``cfg.publish.materialize``; returns {view: rows},
    the seconds taken and, for the row-writing paths, the user rows/s."""
    from .publish import ITEM_VIEW, USER_VIEW

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
        from .online_fast import write_items as put_items, write_users as put_users
    else:
        put_users, put_items = write_users, write_items
    n_users = put_users(store, users, k, progress=progress)
    user_s = time.perf_counter() - t0
    put_items(store, items, progress=progress)
    for view, t in ((USER_VIEW, users), (ITEM_VIEW, items)):
        if t.num_rows:
            record_interval(store, view, *_span(t))
    return {"seconds": time.perf_counter() - t0, USER_VIEW: n_users, ITEM_VIEW: items.num_rows,
            "user_rows_per_s": n_users / max(user_s, 1e-9)}


def redis_address(connection_string: str) -> tuple[str, int, dict]:
    """(host, port, client keyword arguments) of a Feast Redis connection string
    ``host:port[,key=value...]`` (the format of Feast's ``connection_string``; values are read as
    JSON where they parse, e.g. ``db=1``, ``ssl=true``)."""
    parts = connection_string.split(",")
    nodes = [p for p in parts if "=" not in p]
    host, _, port = nodes[0].rpartition(":") if nodes else ("", "", "")
    if not host or not port.isdigit():
        raise GuimError(f"publish.redis={connection_string!r}: expected host:port[,db=N][,password=...]")
    params = {}
    for p in parts:
        if "=" in p:
            key, value = p.split("=", 1)
            try:
                params[key] = json.loads(value)
            except ValueError:
                params[key] = value
    return host, int(port), params


def check_reachable(cfg) -> None:
    """Raise a clear GuimError when ``cfg.publish`` names a Redis online store that does not answer a
    PING (a SQLite store is a file in the workspace: nothing to check)."""
    if cfg.publish.online_store != "redis":
        return
    import redis

    conn = cfg.publish.redis
    host, port, params = redis_address(conn)
    try:
        redis.Redis(host=host, port=port, socket_connect_timeout=5, socket_timeout=5, **params).ping()
    except Exception as e:
        err = redis_error(conn, e)
        raise (err if isinstance(err, GuimError) else GuimError(f"Redis online store at {conn}: {e}")) from None


def redis_error(connection_string: str, e: Exception) -> Exception:
    """A plain message when Redis cannot be reached; other errors pass through unchanged."""
    import redis

    if isinstance(e, (redis.exceptions.ConnectionError, redis.exceptions.TimeoutError, ConnectionError)):
        return GuimError(f"Redis online store at {connection_string} is not reachable ({e}). Start redis-server "
                         "there, or set publish.redis=host:port, or use --set publish.online_store=sqlite")
    return e


@contextmanager
def redis_server(port: int = 0):
    """A throw-away ``redis-server`` on loopback (no persistence) for tests and benchmarks; yields host:port."""
    import shutil
    import socket
    import subprocess

    import redis

    if shutil.which("redis-server") is None:
        raise GuimError("redis-server not found: apt-get install redis-server")
    if not port:
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            port = s.getsockname()[1]
    proc = subprocess.Popen(["redis-server", "--port", str(port), "--bind", "127.0.0.1", "--save", "",
                             "--appendonly", "no"], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        for _ in range(200):
            try:
                redis.Redis(port=port).ping()
                break
            except redis.exceptions.ConnectionError:
                time.sleep(0.05)
        else:
            raise GuimError(f"redis-server did not start on port {port}")
        yield f"127.0.0.1:{port}"
    finally:
        proc.terminate()
        proc.wait(10)
