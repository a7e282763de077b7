"""Tiny hand-written gold tables (user_embeddings, item_embeddings) for the publish/serve tests."""
from __future__ import annotations

from datetime import datetime, timezone

import pyarrow as pa

T1 = datetime(2026, 1, 1, tzinfo=timezone.utc)
T2 = datetime(2026, 2, 1, tzinfo=timezone.utc)

# d = 4, K = 2. Items are the unit axes and two mixtures: dot products are easy to do by hand.
ITEMS = {"axis0": [1, 0, 0, 0], "axis1": [0, 1, 0, 0], "axis2": [0, 0, 1, 0], "axis3": [0, 0, 0, 1],
         "mix01": [0.6, 0.6, 0, 0], "mix23": [0, 0, 0.5, 0.5]}
# user -> (interests K x d, weights K, profile d or None: a row from before profiles existed)
USERS_V1 = {"alice": ([[2, 0, 0, 0], [0, 0, 1, 0]], [0.75, 0.25], [0.5, 0, 0, -1]),
            "bob": ([[0, 0, 0, 1], [0, 1, 0, 0]], [0.5, 0.5], None)}
USERS_V2 = {"alice": ([[0, 0, 0, 3], [0, 1, 0, 0]], [0.1, 0.9], [0, 2, 0, 0.25]),
            "bob": ([[1, 0, 0, 0], [0, 0, 1, 0]], [0.5, 0.5], [1, 1, 0, 0])}


def user_table(users: dict, version: str, ts: datetime, profile: bool = True, seen: dict | None = None) -> pa.Table:
    """``profile=False``: a table written before the profile column existed; ``seen``: user -> seen
    item ids (None: a table written before the seen_items column existed)."""
    ids = list(users)
    extra = {"profile": pa.array([users[u][2] if len(users[u]) > 2 else None for u in ids],
                                 type=pa.list_(pa.float32()))} if profile else {}
    if seen is not None:
        extra["seen_items"] = pa.array([seen.get(u) for u in ids], type=pa.list_(pa.string()))
    return pa.table({
        "user_id": ids,
        "interests": pa.array([users[u][0] for u in ids], type=pa.list_(pa.list_(pa.float32()))),
        "weights": pa.array([users[u][1] for u in ids], type=pa.list_(pa.float32())),
        **extra,
        "model_version": [version] * len(ids),
        "event_timestamp": pa.array([ts] * len(ids), type=pa.timestamp("us", tz="UTC")),
        "snapshot_date": pa.array([ts.date()] * len(ids), type=pa.date32())})


def item_table(items: dict, version: str, ts: datetime) -> pa.Table:
    ids = list(items)
    return pa.table({
        "item_id": ids,
        "vector": pa.array([items[i] for i in ids], type=pa.list_(pa.float32())),
        "model_version": [version] * len(ids),
        "event_timestamp": pa.array([ts] * len(ids), type=pa.timestamp("us", tz="UTC")),
        "snapshot_date": pa.array([ts.date()] * len(ids), type=pa.date32())})


def write_gold(cfg, users=USERS_V1, items=ITEMS, version="1", ts=T1, item_ts=None, profile=True,
               seen=None) -> None:
    """Append one snapshot of both gold tables (partitioned as `guim embed` writes them), with delta-rs;
    ``profile=False``: a user table as written before the profile column existed; ``seen``: see
    :func:`user_table`."""
    from deltalake import write_deltalake

    parts = ["model_version", "snapshot_date"]
    if users:
        write_deltalake(cfg.table("user_embeddings"), user_table(users, version, ts, profile, seen), mode="append",
                        partition_by=parts, schema_mode="merge" if seen is not None else None)
    if items:
        write_deltalake(cfg.table("item_embeddings"), item_table(items, version, item_ts or ts), mode="append",
                        partition_by=parts)


def write_events(cfg, counts: dict) -> None:
    """A bronze events table where item i occurs counts[i] times (for the popularity fallback)."""
    from deltalake import write_deltalake

    rows = [(f"e{i}_{n}", "someone", i) for i, c in counts.items() for n in range(c)]
    write_deltalake(cfg.table("events"), pa.table({
        "event_id": [r[0] for r in rows], "user_id": [r[1] for r in rows], "item_id": [r[2] for r in rows],
        "behavior": ["pv"] * len(rows),
        "ts": pa.array([T1] * len(rows), type=pa.timestamp("us", tz="UTC")),
        "source": ["test"] * len(rows)}))
