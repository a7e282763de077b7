"""Opt-in vectorised online write (``publish.materialize=fast``) into Feast's own online tables.

Feast's public ``write_to_online_store`` builds protobuf objects row by row (see the README for the
measured rates); here values are encoded to the exact ``ValueProto`` bytes with numpy (one constant
prefix + the raw little-endian floats), entity keys follow Feast's ``serialize_entity_key``
(version 3), and rows go to the tables Feast reads, written the way Feast's own writers write them:

- SQLite, like ``SqliteOnlineStore.online_write_batch``: an upsert per (entity_key, feature_name) of
  value, value_text (the text of string features), value_num (only where Feast writes it: the
  table has the column and ``enable_openai_compatible_store`` is on; NULL for list and string
  features), event_ts in whole seconds (Feast's SQLite adapter stores
  ``int(naive_utc.timestamp())``) and created_ts NULL (the views have no created-timestamp column).
  Feast's SQLite writer always overwrites, so does this one.
- Redis, like ``RedisOnlineStore.online_write_batch``: one hash per entity at
  ``serialize_entity_key(..) + project`` with ``_ts:<view>`` (a protobuf Timestamp, microseconds
  kept) and ``mmh3("<view>:<feature>")`` -> value bytes. Feast keeps the newer row: unless
  ``skip_dedup`` is set, a row is written only when its event time is later than the stored one
  and than an earlier row of the same key in the batch (an equal time is skipped; a stored time
  of exactly the epoch counts as none, as in Feast).

This is the one module that depends on Feast's private storage layout and imports private Feast
names (the provider's online store connection/client, ``helpers._mmh3``). It runs only on the
Feast versions in ``VERIFIED_FEAST``; ``tests/test_materialize_fast.py`` writes the same rows through
Feast's public write and through this module and compares the stored bytes per key.
"""
from __future__ import annotations

import struct
from datetime import datetime, timedelta, timezone
from typing import Callable, Sequence

import numpy as np

from .errors import GuimError

VERIFIED_FEAST = ("0.67.0",)   # Feast releases whose online layout this module was compared against
_STRING = 2          # feast ValueType.STRING
_FLOAT_LIST = 16     # ValueProto field number of float_list_val
_STRING_VAL = 2      # ValueProto field number of string_val
CHUNK = 5000         # rows per SQLite transaction / Redis pipeline


def check_feast_version(version: str | None = None) -> None:
    """Refuse a Feast release this writer was not verified against (its storage layout may differ)."""
    if version is None:
        from importlib.metadata import version as installed

        version = installed("feast")
    if version not in VERIFIED_FEAST:
        raise GuimError(f"publish.materialize=fast writes Feast's online tables directly and is verified "
                        f"against Feast {', '.join(VERIFIED_FEAST)} only, not {version}: use "
                        "--set publish.materialize=feast_write (Feast's public write path)")


# -- encoders ----------------------------------------------------------------------------------------
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


# -- writers -----------------------------------------------------------------------------------------
def write_view(store, view_name: str, join_key: str, ids: Sequence[str], values: dict[str, list[bytes]],
               event_us: np.ndarray, progress: Callable[[int], object] | None = None) -> int:
    """Write encoded feature ``values`` (feature -> one bytes per id) of ``view_name`` into the online
    store; ``event_us``: event time per id in microseconds since the epoch (UTC). Returns the rows given."""
    check_feast_version()
    cfg = store.config
    if cfg.entity_key_serialization_version != 3:
        raise GuimError("fast materialization writes entity keys of version 3; set "
                        "entity_key_serialization_version: 3 in feature_store.yaml or use "
                        "--set publish.materialize=feast_write")
    view = store.get_feature_view(view_name)
    if {f.name for f in view.features} != set(values):
        raise GuimError(f"fast materialization of {view_name}: values for {sorted(values)}, the view has "
                        f"{sorted(f.name for f in view.features)}")
    keys = entity_keys(join_key, ids)
    kind = cfg.online_store.type
    if kind in ("sqlite", "feast.infra.online_stores.sqlite.SqliteOnlineStore"):
        _write_sqlite(store, view, keys, values, event_us, progress)
    elif kind in ("redis", "feast.infra.online_stores.redis.RedisOnlineStore"):
        _write_redis(store, view, keys, values, event_us, progress)
    else:
        raise GuimError(f"fast materialization supports the sqlite and redis online stores, not {kind!r}; "
                        "use --set publish.materialize=feast_write")
    return len(keys)


def _datetimes(event_us: np.ndarray) -> tuple[list[int], list[datetime]]:
    """(index into the distinct instants per row, the distinct instants as aware UTC datetimes):
    snapshots share one instant, so per-instant work is done once."""
    uniq, inv = np.unique(np.asarray(event_us, dtype=np.int64), return_inverse=True)
    epoch = datetime(1970, 1, 1, tzinfo=timezone.utc)
    return inv.tolist(), [epoch + timedelta(microseconds=int(u)) for u in uniq]


def _write_sqlite(store, view, keys, values, event_us, progress) -> None:
    from feast.infra.online_stores.helpers import compute_table_id

    cfg = store.config
    if getattr(cfg.online_store, "vector_enabled", False):
        raise GuimError("fast materialization does not fill SQLite vector columns; "
                        "use --set publish.materialize=feast_write")
    conn = store._get_provider().online_store._get_conn(cfg)
    table = compute_table_id(cfg.project, view, cfg.registry.enable_online_feature_view_versioning)
    have = [r[1] for r in conn.execute(f'PRAGMA table_info("{table}")')]
    if not have:
        raise GuimError(f"online table {table} does not exist: run Feast apply first (guim publish does)")
    cols = ["entity_key", "feature_name", "value", "value_text"]
    if getattr(cfg.online_store, "enable_openai_compatible_store", False) and "value_num" in have:
        cols.append("value_num")                        # NULL for list and string features, as Feast writes
    cols += ["event_ts", "created_ts"]
    extra = set(have) - set(cols) - {"value_num", "vector_value"}
    if extra:
        raise GuimError(f"online table {table} has unexpected columns {sorted(extra)}; "
                        "use --set publish.materialize=feast_write")
    sql = (f'INSERT INTO "{table}" ({", ".join(cols)}) VALUES ({", ".join("?" * len(cols))}) '
           "ON CONFLICT(entity_key, feature_name) DO UPDATE SET "
           + ", ".join(f"{c} = excluded.{c}" for c in cols[2:]))
    text = {f.name: f.dtype.to_value_type().name == "STRING" for f in view.features}
    names = sorted(values)
    texts = {n: _string_texts(values[n]) if text[n] else None for n in names}
    inv, instants = _datetimes(event_us)
    # Feast's SQLite adapter: int(datetime.timestamp()) of the naive UTC time (whole seconds)
    seconds = [int(t.replace(tzinfo=None).timestamp()) for t in instants]
    num = (None,) if "value_num" in cols else ()
    order = sorted(range(len(keys)), key=keys.__getitem__)   # key order keeps B-tree inserts local; stable
    for start in range(0, len(keys), CHUNK):
        stop = min(start + CHUNK, len(keys))
        rows = [(keys[i], n, values[n][i], texts[n][i] if texts[n] is not None else None)
                + num + (seconds[inv[i]], None)
                for i in order[start:stop] for n in names]
        with conn:
            conn.executemany(sql, rows)
        if progress:
            progress(stop - start)


def _write_redis(store, view, keys, values, event_us, progress) -> None:
    from google.protobuf.timestamp_pb2 import Timestamp

    from feast.infra.online_stores.helpers import _mmh3, compute_versioned_name

    from .redis_store import redis_error

    cfg = store.config
    client = store._get_provider().online_store._get_client(cfg.online_store)
    name = compute_versioned_name(view, cfg.registry.enable_online_feature_view_versioning)
    project = cfg.project.encode("utf-8")
    fields = {n: _mmh3(f"{name}:{n}") for n in values}
    ts_key = f"_ts:{name}"
    ttl = cfg.online_store.key_ttl_seconds
    dedup = not getattr(cfg.online_store, "skip_dedup", False)
    inv, instants = _datetimes(event_us)
    ts_bytes, ts_nanos = [], []
    for t in instants:
        p = Timestamp()
        p.FromDatetime(t)
        ts_bytes.append(p.SerializeToString())
        ts_nanos.append(p.seconds * 1_000_000_000 + p.nanos)
    stored: dict[bytes, int] = {}                       # decoded stored _ts, per distinct bytes

    def nanos(raw: bytes) -> int:
        if raw not in stored:
            p = Timestamp()
            p.ParseFromString(raw)
            stored[raw] = p.seconds * 1_000_000_000 + p.nanos
        return stored[raw]

    try:
        for start in range(0, len(keys), CHUNK):
            stop = min(start + CHUNK, len(keys))
            rkeys = [keys[i] + project for i in range(start, stop)]
            with client.pipeline(transaction=False) as pipe:
                if dedup:
                    for key in rkeys:
                        pipe.hmget(key, ts_key)
                    prev = [r[0] for r in pipe.execute()]
                latest: dict[bytes, int] = {}           # newest time queued in this batch, per key
                for j, key in enumerate(rkeys):
                    i = start + j
                    new = ts_nanos[inv[i]]
                    if dedup:
                        seen = max(nanos(prev[j]) if prev[j] else 0, latest.get(key, 0))
                        if seen and new <= seen:        # older, or the same instant: keep the stored row
                            continue
                        latest[key] = new
                    mapping = {ts_key: ts_bytes[inv[i]]}
                    for n, f in fields.items():
                        mapping[f] = values[n][i]
                    pipe.hset(key, mapping=mapping)
                    if ttl:
                        pipe.expire(name=key, time=ttl)
                pipe.execute()
            if progress:
                progress(stop - start)
    except Exception as e:  # redis.exceptions.ConnectionError and friends
        raise redis_error(cfg.online_store.connection_string, e) from None


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


# -- gold rows -> views ------------------------------------------------------------------------------
def _event_us(table) -> np.ndarray:
    import pyarrow as pa

    return table["event_timestamp"].cast(pa.timestamp("us", tz="UTC")).cast(pa.int64()).to_numpy()


def _strings(column) -> list[bytes]:
    cache: dict = {}
    return [cache.get(s) or cache.setdefault(s, encode_string(s)) for s in column.to_pylist()]


def _optional_float_lists(table, column: str) -> list[bytes]:
    """A list<float> column that may be missing or hold nulls -> serialised ValueProtos, an empty
    ValueProto (Feast's null) for a missing value."""
    import pyarrow as pa
    import pyarrow.compute as pc

    if column not in table.column_names:
        return [b""] * table.num_rows
    col = table[column].combine_chunks() if isinstance(table[column], pa.ChunkedArray) else table[column]
    present = np.flatnonzero(pc.is_valid(col).to_numpy(zero_copy_only=False))
    out = [b""] * len(col)
    if len(present):
        from .views import matrix

        for i, v in zip(present, encode_float_lists(matrix(col.take(pa.array(present))))):
            out[i] = v
    return out


def _optional_string_lists(table, column: str) -> list[bytes]:
    """A list<string> column that may be missing or hold nulls -> serialised
    ``ValueProto(string_list_val=...)``, an empty ValueProto (Feast's null) for a missing value."""
    from feast.protos.feast.types.Value_pb2 import StringList, Value

    if column not in table.column_names:
        return [b""] * table.num_rows
    return [b"" if v is None else Value(string_list_val=StringList(val=v)).SerializeToString()
            for v in table[column].to_pylist()]


def write_users(store, users, k: int, progress=None) -> int:
    """Gold user rows (one per user) -> the online user view, vectorised."""
    from .views import USER_VIEW, matrix

    inter = matrix(users["interests"])                                       # (N, K, d)
    if inter.shape[1] != k:
        raise GuimError(f"user vectors have K={inter.shape[1]} interests, the feature view K={k}")
    values = {f"interest_{i}": encode_float_lists(inter[:, i, :]) for i in range(k)}
    values["weights"] = encode_float_lists(matrix(users["weights"]))         # (N, K)
    values["profile"] = _optional_float_lists(users, "profile")
    values["seen_items"] = _optional_string_lists(users, "seen_items")
    values["model_version"] = _strings(users["model_version"])
    return write_view(store, USER_VIEW, "user_id", users["user_id"].to_pylist(), values, _event_us(users),
                      progress)


def write_items(store, items, progress=None) -> int:
    """Gold item rows (one per item) -> the online item view, vectorised."""
    from .views import ITEM_VIEW, matrix

    values = {"vector": encode_float_lists(matrix(items["vector"])),          # (M, d)
              "model_version": _strings(items["model_version"])}
    return write_view(store, ITEM_VIEW, "item_id", items["item_id"].to_pylist(), values, _event_us(items),
                      progress)
