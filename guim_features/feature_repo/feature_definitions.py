"""Feast definitions of the GUIM embeddings.

Declarative, like Feast's own ``templates/local/feature_repo``: two entities, one feature view
per gold table, and a versioned feature service. ``guim publish`` copies this file into
``<workspace>/feature_repo`` and writes ``guim_model.json`` beside it; K (interests per user),
d (vector size) and the source locations are read from there, so the numbers come from the
model's own config and are never typed twice. NOTE: Feast has no nested-list type, so the
K interest vectors of a user are K features ``interest_0`` … ``interest_{K-1}`` (each d floats).
"""
import json
import os
from datetime import timedelta
from pathlib import Path

from feast import Entity, FeatureService, FeatureView, Field, FileSource, ValueType
from feast.types import Array, Float32, String

# Written by `guim publish`: {"K", "d", "model_version", "offline_store", "sources": {...}}
_MODEL_JSON = Path(os.environ.get("GUIM_MODEL_JSON", Path(__file__).with_name("guim_model.json")))
if not _MODEL_JSON.exists():
    raise FileNotFoundError(f"{_MODEL_JSON} not found: this is the template; `guim publish` writes the "
                            "applied repository (with K and d) into <workspace>/feature_repo")
_MODEL = json.loads(_MODEL_JSON.read_text())
K: int = _MODEL["K"]
D: int = _MODEL["d"]

user = Entity(name="user", join_keys=["user_id"], value_type=ValueType.STRING,
              description="A user of the behaviour log")
item = Entity(name="item", join_keys=["item_id"], value_type=ValueType.STRING,
              description="An item of the catalogue")


def _source(name: str):
    """The offline source of a gold table: Parquet snapshots (file store) or the Delta table via Spark."""
    src = _MODEL["sources"][name]
    if _MODEL["offline_store"] == "spark":
        from feast.infra.offline_stores.contrib.spark_offline_store.spark_source import SparkSource

        return SparkSource(name=f"{name}_source", query=src, timestamp_field="event_timestamp")
    return FileSource(name=f"{name}_source", path=src, timestamp_field="event_timestamp")


user_interests = FeatureView(
    name="user_interests",
    entities=[user],
    ttl=timedelta(0),  # 0 = never expires: an embedding stays current until the next snapshot
    schema=[Field(name=f"interest_{k}", dtype=Array(Float32), description=f"interest vector {k} ({D} floats)")
            for k in range(K)]
    + [Field(name="weights", dtype=Array(Float32), description=f"{K} mixture weights, sum 1"),
       Field(name="profile", dtype=Array(Float32),
             description=f"the user vector for downstream models, from the whole history ({2 * D} floats: "
                         f"the profile head's {D}, then the fold-in's {D}; {D} for a model without the head)"),
       Field(name="seen_items", dtype=Array(String),
             description="item ids of the user's events before the snapshot, distinct, newest first (at most "
                         "embed.seen_max): what to exclude from recommendations"),
       Field(name="model_version", dtype=String, description="registered model version that made the vectors")],
    source=_source("user_embeddings"),
    online=True,
    tags={"model": "guim", "K": str(K), "d": str(D)},
)

item_embedding = FeatureView(
    name="item_embedding",
    entities=[item],
    ttl=timedelta(0),
    schema=[Field(name="vector", dtype=Array(Float32), description=f"item vector ({D} floats)"),
            Field(name="model_version", dtype=String, description="registered model version that made the vector")],
    source=_source("item_embeddings"),
    online=True,
    tags={"model": "guim", "d": str(D)},
)

guim_embeddings_v1 = FeatureService(
    name="guim_embeddings_v1",
    features=[user_interests, item_embedding],
    description="GUIM user interest mixtures and item vectors, schema version 1",
)
