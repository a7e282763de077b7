"""The published Feast views: their names, gold Arrow rows -> the views' columns, and the Arrow
list columns both are made of.

Shared by ``publish`` (the repository, the offline sources) and the online writers, which would
otherwise import each other.
"""
from __future__ import annotations

import numpy as np

USER_VIEW, ITEM_VIEW, SERVICE = "user_interests", "item_embedding", "guim_embeddings_v1"


def matrix(column, inner: int | None = None) -> np.ndarray:
    """A list<float> column -> (N, d) or a list<list<float>> column -> (N, K, d) float32."""
    import pyarrow as pa
    import pyarrow.compute as pc

    col = column.combine_chunks() if isinstance(column, pa.ChunkedArray) else column
    n, depth, flat = len(col), 0, col
    while pa.types.is_list(flat.type) or pa.types.is_large_list(flat.type):
        flat, depth = pc.list_flatten(flat), depth + 1
    values = flat.to_numpy(zero_copy_only=False).astype(np.float32)
    if depth == 1:
        return values.reshape(n, -1)                                         # (N, d)
    k = len(col[0]) if n else 0
    return values.reshape(n, k, -1)                                          # (N, K, d)


def user_columns(users, k: int):
    """Gold user rows -> Feast columns: user_id, interest_0..interest_{K-1}, weights, profile,
    seen_items, model_version, ts (us). ``profile`` and ``seen_items`` are null where the gold rows
    have none (a table or model version from before they existed)."""
    import pyarrow as pa

    inter = matrix(users["interests"])                                       # (N, K, d)
    n, d = inter.shape[0], inter.shape[2] if inter.ndim == 3 else 0
    offsets = pa.array(np.arange(0, n * d + 1, d, dtype=np.int32) if d else np.zeros(n + 1, np.int32))
    cols = {"user_id": users["user_id"]}
    for i in range(k):                          # list<float> columns built from flat buffers, no Python rows
        cols[f"interest_{i}"] = pa.ListArray.from_arrays(offsets, pa.array(inter[:, i, :].ravel()))
    cols["weights"] = users["weights"].cast(pa.list_(pa.float32()))
    cols["profile"] = (users["profile"].cast(pa.list_(pa.float32())) if "profile" in users.column_names
                       else pa.nulls(n, pa.list_(pa.float32())))
    cols["seen_items"] = (users["seen_items"].cast(pa.list_(pa.string())) if "seen_items" in users.column_names
                          else pa.nulls(n, pa.list_(pa.string())))
    cols["model_version"] = users["model_version"]
    cols["event_timestamp"] = users["event_timestamp"].cast(pa.timestamp("us", tz="UTC"))
    return pa.table(cols)


def item_columns(items):
    """Gold item rows -> Feast columns: item_id, vector, model_version, ts (us)."""
    import pyarrow as pa

    return pa.table({"item_id": items["item_id"], "vector": items["vector"].cast(pa.list_(pa.float32())),
                     "model_version": items["model_version"],
                     "event_timestamp": items["event_timestamp"].cast(pa.timestamp("us", tz="UTC"))})


def nested_lists(values, inner: int, outer: int | None = None):
    """Flat float32 values -> list<float> of ``inner`` (or list<list<float>> of outer x inner)."""
    import pyarrow as pa

    flat = pa.array(np.ascontiguousarray(values, dtype=np.float32).ravel())
    arr = pa.ListArray.from_arrays(pa.array(np.arange(0, len(flat) + 1, inner, dtype=np.int32)), flat)
    if outer is None:
        return arr
    return pa.ListArray.from_arrays(pa.array(np.arange(0, len(arr) + 1, outer, dtype=np.int32)), arr)
