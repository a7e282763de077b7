"""Fast materialization: a vectorised write into Feast's own online-store tables.

Feast 0.67's ``materialize`` moves a 4 x 64-float user view at about 1,500 rows/s, most of it in
the file offline store's dask layer and per-row protobuf objects. Here the rows come straight
from the gold snapshot (Arrow), values are encoded to the exact ``ValueProto`` bytes with numpy
(one constant prefix + the raw little-endian floats), entity keys follow Feast's
``serialize_entity_key`` (version 3), and rows go to the same tables Feast reads:

- SQLite: ``<project>_<view>`` rows (entity_key, feature_name, value, value_text, event_ts, created_ts)
  upserted like ``SqliteOnlineStore.online_write_batch``;
- Redis: one hash per entity at ``serialize_entity_key(..) + project`` with field
  ``_ts:<view>`` (a protobuf Timestamp) and ``mmh3("<view>:<feature>")`` -> value bytes, like
  ``RedisOnlineStore.online_write_batch`` (``skip_dedup`` path).

Anything written here is read back by plain ``FeatureStore.get_online_features``; the tests
compare the bytes with Feast's own encoders. The interval is recorded in the registry, as
Feast's own materialization does. ``materialize`` is what ``guim publish`` calls; with
``publish.materialize=feast`` it runs Feast's ``materialize`` instead.
"""
from __future__ import annotations

import struct
import time
from contextlib import contextmanager
from datetime import datetime, timedelta, timezone
from typing import Callable, Sequence

import numpy as np

from .errors import GuimError

_STRING = 2          # feast ValueType.STRING
_FLOAT_LIST = 16     # ValueProto field number of float_list_val
_STRING_VAL = 2      # ValueProto field number of string_val
CHUNK = 5000         # rows per SQLite transaction / Redis pipeline


def _varint(n: int) -> bytes:
    out = bytearray()
    while True:
        b = n & 0x7F
        n >>= 7
        if n:
            out.append(b | 0x80)
        else:
            out.append(b)
            return bytes(out)


def encode_float_lists(arr: np.ndarray) -> list[bytes]:
    """``ValueProto(float_list_val=FloatList(val=row)).SerializeToString()`` for every row, vectorised."""
    arr = np.ascontiguousarray(arr, dtype="<f4")                   # (N, d)
    n, d = arr.shape
    inner = b"\x0a" + _varint(4 * d) if d else b""
    prefix = _varint(_FLOAT_LIST << 3 | 2) + _varint(len(inner) + 4 * d) + inner
    width = len(prefix) + 4 * d
    buf = np.empty((n, width), dtype=np.uint8)                       # (N, P + 4d)
    buf[:, :len(prefix)] = np.frombuffer(prefix, dtype=np.uint8)
    buf[:, len(prefix):] = arr.view(np.uint8).reshape(n, 4 * d)
    raw = buf.tobytes()
    return [raw[i * width:(i + 1) * width] for i in range(n)]


def encode_string(s: str) -> bytes:
    """``ValueProto(string_val=s).SerializeToString()``."""
    b = s.encode("utf-8")
    return _varint(_STRING_VAL << 3 | 2) + _varint(len(b)) + b


def entity_keys(join_key: str, ids: Sequence[str]) -> list[bytes]:
    """Feast ``serialize_entity_key`` (version 3) of a single string join key, for every id."""
    k = join_key.encode("utf-8")
    head = struct.pack("<III", 1, _STRING, len(k)) + k + struct.pack("<I", _STRING)
    out = []
    for i in ids:
        b = i.encode("utf-8")
        out.append(head + struct.pack("<I", len(b)) + b)
    return out


def _timestamp_proto(ts: datetime) -> bytes:
    from google.protobuf.timestamp_pb2 import Timestamp

    t = Timestamp()
    t.FromDatetime(ts if ts.tzinfo else ts.replace(tzinfo=timezone.utc))
    return t.SerializeToString()


def write_view(store, view_name: str, join_key: str, ids: Sequence[str], values: dict[str, list[bytes]],
               event_ts: Sequence[datetime], progress: Callable[[int], object] | None = None) -> int:
    """Write encoded feature ``values`` (feature -> one bytes per id) of ``view_name`` into the online store.

    ``event_ts``: one timezone-aware timestamp per id. Returns the number of entity rows written.
    """
    cfg = store.config
    if cfg.entity_key_serialization_version != 3:
        raise GuimError("fast materialization writes entity keys of version 3; set "
                        "entity_key_serialization_version: 3 in feature_store.yaml or --set publish.materialize=feast")
    view = store.get_feature_view(view_name)
    missing = {f.name for f in view.features} - set(values)
    if missing:
        raise GuimError(f"fast materialization of {view_name}: no values for {sorted(missing)}")
    keys = entity_keys(join_key, ids)
    kind = cfg.online_store.type
    if kind in ("sqlite", "feast.infra.online_stores.sqlite.SqliteOnlineStore"):
        _write_sqlite(store, view, keys, values, event_ts, progress)
    elif kind in ("redis", "feast.infra.online_stores.redis.RedisOnlineStore"):
        _write_redis(store, view, keys, values, event_ts, progress)
    else:
        raise GuimError(f"fast materialization supports the sqlite and redis online stores, not {kind!r}; "
                        "use --set publish.materialize=feast")
    return len(keys)


def _write_sqlite(store, view, keys, values, event_ts, progress) -> None:
    from feast.infra.online_stores.helpers import compute_table_id

    cfg = store.config
    if getattr(cfg.online_store, "vector_enabled", False):
        raise GuimError("fast materialization does not fill SQLite vector columns; use --set publish.materialize=feast")
    conn = store._get_provider().online_store._get_conn(cfg)
    table = compute_table_id(cfg.project, view, cfg.registry.enable_online_feature_view_versioning)
    cols = [r[1] for r in conn.execute(f'PRAGMA table_info("{table}")')]
    if not cols:
        raise GuimError(f"online table {table} does not exist: run Feast apply first (guim publish does)")
    extra = [c for c in cols if c not in ("entity_key", "feature_name", "value", "value_text", "event_ts",
                                          "created_ts", "value_num", "vector_value")]
    if extra:
        raise GuimError(f"online table {table} has unexpected columns {extra}; use --set publish.materialize=feast")
    # value_text holds the text of string features (as Feast's extract_text_and_num does).
    text = {f.name: f.dtype.to_value_type().name == "STRING" for f in view.features}
    created = _sqlite_epochs([datetime.now(timezone.utc)])[0]
    sql = (f'INSERT INTO "{table}" (entity_key, feature_name, value, value_text, event_ts, created_ts) '
           "VALUES (?, ?, ?, ?, ?, ?) ON CONFLICT(entity_key, feature_name) DO UPDATE SET "
           "value = excluded.value, value_text = excluded.value_text, event_ts = excluded.event_ts, "
           "created_ts = excluded.created_ts")
    ts_text = _sqlite_epochs(event_ts)
    names = list(values)
    texts = {n: _string_texts(values[n]) if text.get(n) else None for n in names}
    order = sorted(range(len(keys)), key=keys.__getitem__)   # key order: B-tree inserts stay local
    for start in range(0, len(keys), CHUNK):
        stop = min(start + CHUNK, len(keys))
        rows = [(keys[i], n, values[n][i], texts[n][i] if texts[n] is not None else None, ts_text[i], created)
                for i in order[start:stop] for n in sorted(names)]
        with conn:
            conn.executemany(sql, rows)
        if progress:
            progress(stop - start)


def _write_redis(store, view, keys, values, event_ts, progress) -> None:
    from feast.infra.online_stores.helpers import _mmh3, compute_versioned_name

    cfg = store.config
    client = store._get_provider().online_store._get_client(cfg.online_store)
    name = compute_versioned_name(view, cfg.registry.enable_online_feature_view_versioning)
    project = cfg.project.encode("utf-8")
    fields = {n: _mmh3(f"{name}:{n}") for n in values}
    ts_key = f"_ts:{name}"
    ttl = cfg.online_store.key_ttl_seconds
    ts_cache: dict[datetime, bytes] = {}
    try:
        for start in range(0, len(keys), CHUNK):
            stop = min(start + CHUNK, len(keys))
            with client.pipeline(transaction=False) as pipe:
                for i in range(start, stop):
                    ts = event_ts[i]
                    tsb = ts_cache.get(ts) or ts_cache.setdefault(ts, _timestamp_proto(ts))
                    mapping = {ts_key: tsb}
                    for n, f in fields.items():
                        mapping[f] = values[n][i]
                    key = keys[i] + project
                    pipe.hset(key, mapping=mapping)
                    if ttl:
                        pipe.expire(name=key, time=ttl)
                pipe.execute()
            if progress:
                progress(stop - start)
    except Exception as e:  # redis.exceptions.ConnectionError and friends
        raise redis_error(cfg.online_store.connection_string, e) from None


def check_reachable(cfg) -> None:
    """Raise a clear GuimError when ``cfg.publish`` names a Redis online store that does not answer a
    PING (a SQLite store is a file in the workspace: nothing to check)."""
    if cfg.publish.online_store != "redis":
        return
    import redis
    from feast.infra.online_stores.redis import RedisOnlineStore

    conn = cfg.publish.redis
    nodes, params = RedisOnlineStore._parse_connection_string(conn)     # Feast's own reading of it
    if not nodes or not str(nodes[0].get("port", "")).isdigit():
        raise GuimError(f"publish.redis={conn!r}: expected host:port[,db=N][,password=...]")
    try:
        redis.Redis(host=nodes[0]["host"], port=int(nodes[0]["port"]), socket_connect_timeout=5,
                    socket_timeout=5, **params).ping()
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


def _sqlite_epochs(ts: Sequence[datetime]) -> list[int]:
    """Feast 0.67's SQLite adapter stores ``int(to_naive_utc(ts).timestamp())`` (whole seconds)."""
    cache: dict[datetime, int] = {}
    out = []
    for t in ts:
        s = cache.get(t)
        if s is None:
            naive = t.astimezone(timezone.utc).replace(tzinfo=None) if t.tzinfo else t
            s = cache[t] = int(naive.timestamp())
        out.append(s)
    return out


def _string_texts(encoded: list[bytes]) -> list[str]:
    """Decode ``encode_string`` bytes back to text (value_text column), cached: values repeat."""
    from feast.protos.feast.types.Value_pb2 import Value

    cache: dict[bytes, str] = {}
    out = []
    for b in encoded:
        s = cache.get(b)
        if s is None:
            v = Value()
            v.ParseFromString(b)
            s = cache[b] = v.string_val
        out.append(s)
    return out


def record_interval(store, view_name: str, start: datetime, end: datetime) -> None:
    """Record the materialized interval in the registry, as ``FeatureStore.materialize`` does."""
    view = store.get_feature_view(view_name)
    store.registry.apply_materialization(view, store.project, start, end)


def materialize(cfg, store, users, items, k: int, progress=None) -> dict:
    """Newest snapshot rows -> online store; returns {view: rows} and the user rows/s."""
    from .publish import ITEM_VIEW, USER_VIEW, matrix

    if cfg.publish.materialize == "feast":
        t0 = time.perf_counter()
        # materialize (not _incremental): with ttl 0, _incremental looks back one year only, and
        # item vectors are stamped 1970-01-01; the sources hold one model version, so the newest
        # row per key since the epoch is that version's current snapshot
        store.materialize(start_date=datetime(1970, 1, 1, tzinfo=timezone.utc),
                          end_date=datetime.now(timezone.utc) + timedelta(seconds=1))
        return {"seconds": time.perf_counter() - t0, USER_VIEW: users.num_rows, ITEM_VIEW: items.num_rows}
    if cfg.publish.materialize != "fast":
        raise GuimError(f"publish.materialize={cfg.publish.materialize!r}: expected fast or feast")
    t0 = time.perf_counter()
    n_users = write_users(store, users, k, progress)
    user_s = time.perf_counter() - t0
    vec = matrix(items["vector"])                                            # (M, d)
    write_view(store, ITEM_VIEW, "item_id", items["item_id"].to_pylist(),
                      {"vector": encode_float_lists(vec),
                       "model_version": _strings(items["model_version"])}, _times(items), progress)
    for view, t in ((USER_VIEW, users), (ITEM_VIEW, items)):
        ts = _times(t)
        record_interval(store, view, min(ts), max(ts) + timedelta(microseconds=1))
    return {"seconds": time.perf_counter() - t0, USER_VIEW: n_users, ITEM_VIEW: items.num_rows,
            "user_rows_per_s": n_users / max(user_s, 1e-9)}


def write_users(store, users, k: int, progress=None) -> int:
    """Vectorised write of gold user rows (one per user) into the online user view."""
    from .publish import USER_VIEW, matrix

    inter = matrix(users["interests"])                                       # (N, K, d)
    if inter.shape[1] != k:
        raise GuimError(f"user vectors have K={inter.shape[1]} interests, the feature view K={k}")
    values = {f"interest_{i}": encode_float_lists(inter[:, i, :]) for i in range(k)}
    values["weights"] = encode_float_lists(matrix(users["weights"]))         # (N, K)
    values["model_version"] = _strings(users["model_version"])
    return write_view(store, USER_VIEW, "user_id", users["user_id"].to_pylist(), values,
                             _times(users), progress)


def _strings(column) -> list[bytes]:
    cache: dict = {}
    return [cache.get(s) or cache.setdefault(s, encode_string(s)) for s in column.to_pylist()]


def _times(table) -> list[datetime]:
    """event_timestamp as aware UTC datetimes, one object per distinct instant (snapshots share one)."""
    import pyarrow as pa

    us = table["event_timestamp"].cast(pa.timestamp("us", tz="UTC")).cast(pa.int64()).to_numpy()
    uniq, inv = np.unique(us, return_inverse=True)
    epoch = datetime(1970, 1, 1, tzinfo=timezone.utc)
    dts = [epoch + timedelta(microseconds=int(u)) for u in uniq]
    return [dts[i] for i in inv.tolist()]


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
