"""Every table of the lakehouse, declared once.

Schemas are Spark DDL strings so that this module imports nothing heavy; Spark code passes
them to ``createDataFrame``/``StructType.fromDDL``, and readers without Spark (the PyTorch
loader, Feast) use the column names. Layers: bronze (raw, validated), silver (model-ready),
gold (embeddings).
"""
from __future__ import annotations

# Reserved indices shared by every indexed vocabulary (item_index and categorical fields).
PAD, MASK, UNK = 0, 1, 2
FIRST_ITEM_INDEX = 3          # first real item_idx; 0..2 are reserved above
OOV = 1                       # categorical fields: 0 = missing/pad, 1 = out of vocabulary

# Split codes inside user_sequences.split
TRAIN, VALID, TEST = 0, 1, 2

SCHEMAS: dict[str, str] = {
    # -- bronze ---------------------------------------------------------------------------
    # One behaviour. event_id = sha1 of (user_id, item_id, behavior, ts): the merge key that
    # makes re-ingesting the same input a no-op. ord: position in the input (breaks ties of ts).
    "events": "event_id STRING, user_id STRING, item_id STRING, behavior STRING, ts TIMESTAMP, "
              "ord LONG, source STRING",
    # One item with its structured multi-modal content; fields a source lacks are null.
    "items": "item_id STRING, category STRING, brand STRING, shop STRING, price DOUBLE, year INT, "
             "title STRING, tags ARRAY<STRING>, image ARRAY<FLOAT>, source STRING",
    # One user; attributes are downstream labels only. planted_interests: synthetic ground truth.
    "users": "user_id STRING, age_bucket STRING, gender STRING, occupation STRING, "
             "purchase_power STRING, planted_interests ARRAY<STRING>, source STRING",
    # A rejected input row: where it came from, the raw row, why, when. row_id = sha1(source, table, raw).
    "quarantine": "row_id STRING, source STRING, target STRING, raw STRING, reason STRING, "
                  "ingested_at TIMESTAMP",
    # -- silver ---------------------------------------------------------------------------
    # item_id -> dense index, stable across runs (existing ids keep theirs; new ones append).
    "item_index": "item_id STRING, item_idx INT",
    # Categorical vocabularies per field (category, brand, shop, tag), stable like item_index.
    "vocab": "field STRING, value STRING, idx INT",
    # Normalisation statistics of numeric fields, recorded so serving applies the same ones.
    "feature_stats": "field STRING, transform STRING, mean DOUBLE, std DOUBLE",
    # Model-ready item content, one row per indexed item. <field>_idx per categorical field.
    "item_features": "item_idx INT, item_id STRING, category_idx INT, brand_idx INT, shop_idx INT, "
                     "price_norm FLOAT, year_norm FLOAT, title_tokens ARRAY<INT>, tag_ids ARRAY<INT>, "
                     "image ARRAY<FLOAT>",
    # Per user, time-ordered behaviours; split[i] in {TRAIN, VALID, TEST} for event i.
    # gaps[i] = log2-bucketed seconds since the previous event (0 for the first).
    "user_sequences": "user_id STRING, item_idx ARRAY<INT>, behavior ARRAY<INT>, ts ARRAY<LONG>, "
                      "gaps ARRAY<INT>, split ARRAY<INT>, n_train INT, n_valid INT, n_test INT, "
                      "last_ts TIMESTAMP",
    # Labels the model never sees: user attributes (+ planted interests) ...
    "labels_users": "user_id STRING, age_bucket STRING, gender STRING, occupation STRING, "
                    "purchase_power STRING, planted_interests ARRAY<STRING>",
    # ... item categories and tags ...
    "labels_items": "item_id STRING, item_idx INT, category STRING, tags ARRAY<STRING>",
    # ... and every interaction of the valid/test windows, with its behaviour.
    "labels_future": "user_id STRING, item_id STRING, item_idx INT, behavior STRING, ts TIMESTAMP, "
                     "split INT",
    # -- gold -----------------------------------------------------------------------------
    # One as-of snapshot per row: computed from the user's events before event_timestamp only.
    # Partitioned by (model_version, snapshot_date = the date of event_timestamp).
    # profile: the fixed-length vector for downstream models (null in rows of a model version
    # registered before its pyfunc had one). seen_items: the item ids of the user's events before
    # event_timestamp, newest first, distinct, at most embed.seen_max (null in rows written before it
    # existed or with seen_max 0): what a service excludes from recommendations.
    "user_embeddings": "user_id STRING, interests ARRAY<ARRAY<FLOAT>>, weights ARRAY<FLOAT>, "
                       "model_version STRING, event_timestamp TIMESTAMP, snapshot_date DATE, "
                       "profile ARRAY<FLOAT>, seen_items ARRAY<STRING>",
    # One snapshot per model version, stamped 1970-01-01 (valid at every instant; see export.py).
    "item_embeddings": "item_id STRING, vector ARRAY<FLOAT>, model_version STRING, "
                       "event_timestamp TIMESTAMP, snapshot_date DATE",
}

BRONZE = ("events", "items", "users", "quarantine")
SILVER = ("item_index", "vocab", "feature_stats", "item_features", "user_sequences",
          "labels_users", "labels_items", "labels_future")
GOLD = ("user_embeddings", "item_embeddings")


def columns(table: str) -> list[str]:
    """Column names of ``table`` in declared order."""
    out, depth, cur = [], 0, ""
    for ch in SCHEMAS[table]:  # split on top-level commas only (ARRAY<...> may nest)
        depth += ch == "<"
        depth -= ch == ">"
        if ch == "," and depth == 0:
            out.append(cur.strip().split(" ")[0])
            cur = ""
        else:
            cur += ch
    out.append(cur.strip().split(" ")[0])
    return out


def spark_schema(table: str):
    """The table's ``pyspark.sql.types.StructType`` (imports pyspark)."""
    from pyspark.sql.types import StructType
    return StructType.fromDDL(SCHEMAS[table])
