"""``guim embed``: batch inference with a registered model into the gold tables (issue 4, item 1).

Extract (silver ``user_sequences`` and ``item_features``) -> transform (Spark ``mapInArrow``: each
task loads the model checkpoint shipped with ``SparkContext.addFile`` and encodes Arrow batches;
pure functions of DataFrames) -> load (append one snapshot to gold ``user_embeddings`` and
``item_embeddings``, all rows stamped with the model version and one event_timestamp).

- Users: every user's latest sequence (``embed.sequence_part=all``: train+valid+test, the model
  keeps the newest max_len; ``train``: the train part only).
- Items: every row of ``item_features``, including items no one interacted with: their vectors
  come from content (hashed id bucket + fields), as the model defines.
- A model trained with ``normalize`` (cosine score) has its vectors L2-normalised here, so the
  dot product used downstream equals the model's score. The model's merge rule (max | lse) is
  recorded as tag ``score`` on the registered version; ``guim publish`` reads it.
- Re-running with a version already exported adds nothing (per table).

spark-submit: ``spark-submit --packages io.delta:delta-spark_4.2_2.13:4.4.1 --py-files guim_features.zip
spark_jobs/export_embeddings.py --workspace WS [--model-uri models:/guim/3]``.
"""
from __future__ import annotations

import hashlib
import os
import time
from datetime import datetime, timezone
from pathlib import Path

from .errors import GuimError

USER_SCHEMA = "user_id STRING, interests ARRAY<ARRAY<FLOAT>>, weights ARRAY<FLOAT>"
ITEM_SCHEMA = "item_id STRING, vector ARRAY<FLOAT>"
ITEM_INPUT = ["item_idx", "item_id", "category_idx", "brand_idx", "shop_idx", "price_norm", "year_norm",
              "title_tokens", "tag_ids", "image"]


def _load_task_model(file_name: str):
    """The embedder inside a Spark task (one thread per task: the tasks already fill the cores)."""
    import torch
    from pyspark import SparkFiles

    from .embedder import from_checkpoint

    torch.set_num_threads(1)
    return from_checkpoint(SparkFiles.get(file_name))


def _nested(values, inner: int, outer: int | None = None):
    """Flat float32 values -> list<float> of ``inner`` (or list<list<float>> of outer x inner)."""
    import numpy as np
    import pyarrow as pa

    flat = pa.array(np.ascontiguousarray(values, dtype=np.float32).ravel())
    arr = pa.ListArray.from_arrays(pa.array(np.arange(0, len(flat) + 1, inner, dtype=np.int32)), flat)
    if outer is None:
        return arr
    return pa.ListArray.from_arrays(pa.array(np.arange(0, len(arr) + 1, outer, dtype=np.int32)), arr)


def _l2(x):
    import numpy as np

    return x / np.clip(np.linalg.norm(x, axis=-1, keepdims=True), 1e-12, None)


def encode_users(sequences, file_name: str, part: str = "all", normalize: bool = False, batch_size: int = 512):
    """user_sequences DataFrame -> (user_id, interests K x d, weights K) DataFrame."""
    if part not in ("all", "train"):
        raise GuimError(f"embed.sequence_part={part!r}: expected all or train")

    def fn(batches):
        import numpy as np
        import pyarrow as pa

        from .schemas import TRAIN

        emb = _load_task_model(file_name)
        for b in batches:
            cols = {c: b.column(c).to_pylist() for c in ("item_idx", "behavior", "gaps", "split")}
            seqs = {c: [] for c in ("item_idx", "behavior", "gaps")}
            for i in range(b.num_rows):
                keep = (np.asarray(cols["split"][i]) == TRAIN) if part == "train" else slice(None)
                for c in seqs:
                    seqs[c].append(np.asarray(cols[c][i], dtype=np.int64)[keep])
            interests, weights = emb.encode_users(seqs["item_idx"], seqs["behavior"], seqs["gaps"],
                                                  batch_size=batch_size)           # (B, K, d), (B, K)
            if normalize:
                interests = _l2(interests)
            yield pa.RecordBatch.from_arrays(
                [b.column("user_id"), _nested(interests, emb.d, emb.K), _nested(weights, emb.K)],
                names=["user_id", "interests", "weights"])

    return sequences.select("user_id", "item_idx", "behavior", "gaps", "split").mapInArrow(fn, USER_SCHEMA)


def encode_items(item_features, file_name: str, normalize: bool = False, batch_size: int = 4096):
    """item_features DataFrame -> (item_id, vector d) DataFrame, every item (cold ones from content)."""

    def fn(batches):
        import pyarrow as pa

        emb = _load_task_model(file_name)
        for b in batches:
            vectors = emb.encode_items(b.to_pandas(), batch_size=batch_size)      # (N, d)
            if normalize:
                vectors = _l2(vectors)
            yield pa.RecordBatch.from_arrays([b.column("item_id"), _nested(vectors, emb.d)],
                                             names=["item_id", "vector"])

    return item_features.select(*ITEM_INPUT).mapInArrow(fn, ITEM_SCHEMA)


def stamp(df, model_version: str, ts: datetime):
    """Add model_version and event_timestamp (microseconds, UTC) columns."""
    from pyspark.sql import functions as F

    return df.withColumn("model_version", F.lit(model_version)).withColumn(
        "event_timestamp", F.lit(ts).cast("timestamp"))


def exported(spark, path: str, model_version: str) -> bool:
    """Whether the gold table at ``path`` already holds a snapshot of ``model_version``."""
    from . import delta

    if not delta.exists(spark, path):
        return False
    return spark.read.format("delta").load(path).filter(f"model_version = '{model_version}'").limit(1).count() > 0


def _spread(df, partitions: int):
    """At least ``partitions`` Spark tasks (one model copy each); big tables keep their own split."""
    return df.repartition(partitions) if df.rdd.getNumPartitions() < partitions else df


def _appended(spark, path: str) -> int:
    """Rows written by the last commit (Delta's operation metrics; no second scan)."""
    from delta.tables import DeltaTable

    metrics = DeltaTable.forPath(spark, path).history(1).collect()[0]["operationMetrics"] or {}
    return int(metrics.get("numOutputRows", 0))


def _tag_model(cfg, emb) -> None:
    """Record the model's score rule and temperature on its registered version (publish reads them)."""
    from .publish import _client, model_name

    client = _client(cfg)
    if client is None or not emb.model_version:
        return
    from mlflow.exceptions import MlflowException

    try:
        client.set_model_version_tag(model_name(cfg), str(emb.model_version), "score",
                                     str(emb.config.get("score", "max")))
        client.set_model_version_tag(model_name(cfg), str(emb.model_version), "temperature",
                                     f"{emb.temperature:.6g}")
    except MlflowException:
        pass


def run(cfg, args) -> int:
    """CLI entry: ``guim embed [--model-uri URI]``."""
    from . import delta
    from .embedder import load_embedder
    from .spark import get_spark

    t0 = time.perf_counter()
    uri = getattr(args, "model_uri", None) or cfg.embed.model_uri
    emb = load_embedder(uri, tracking_uri=cfg.mlflow_uri)
    version = emb.model_version
    if not version:
        raise GuimError(f"model {uri!r} has no registered version; export a registered model "
                        f"(models:/{getattr(cfg.train, 'model_name', 'guim')}/N or @alias)")
    spark = get_spark(cfg.spark)
    paths = {n: cfg.table(n) for n in ("user_embeddings", "item_embeddings")}
    todo = {n: not exported(spark, p, version) for n, p in paths.items()}
    if not any(todo.values()):
        print(f"model version {version} is already exported to {paths['user_embeddings']} and "
              f"{paths['item_embeddings']}: nothing added")
        return 0
    # ship the checkpoint to every executor (works on a cluster as well as in local mode)
    # named by content: a Spark session refuses a second, different file under a name it has shipped
    tmp = Path(cfg.resolve("embed_cache")) / f"model_v{version}.pt.tmp"
    emb.save(tmp)
    digest = hashlib.sha1(tmp.read_bytes()).hexdigest()[:12]
    ckpt = tmp.with_name(f"model_v{version}_{digest}.pt")
    os.replace(tmp, ckpt)
    spark.sparkContext.addFile(str(ckpt))
    normalize = bool(emb.config.get("normalize", False))
    ts = datetime.now(timezone.utc).replace(microsecond=0)
    counts = {}
    n_part = max(1, cfg.embed.partitions)
    if todo["user_embeddings"]:
        seq = _spread(delta.read(spark, cfg.table("user_sequences"), "user_sequences"), n_part)
        users = stamp(encode_users(seq, ckpt.name, cfg.embed.sequence_part, normalize, cfg.embed.batch_size),
                      version, ts)
        delta.conform(users, "user_embeddings").write.format("delta").mode("append").save(paths["user_embeddings"])
        counts["users"] = _appended(spark, paths["user_embeddings"])
    if todo["item_embeddings"]:
        feats = _spread(delta.read(spark, cfg.table("item_features"), "item_features"), n_part)
        items = stamp(encode_items(feats, ckpt.name, normalize, cfg.embed.batch_size), version, ts)
        delta.conform(items, "item_embeddings").write.format("delta").mode("append").save(paths["item_embeddings"])
        counts["items"] = _appended(spark, paths["item_embeddings"])
    _tag_model(cfg, emb)
    print(f"exported model version {version} (K={emb.K}, d={emb.d}) at {ts:%Y-%m-%d %H:%M:%S} UTC: "
          + ", ".join(f"{v} {k}" for k, v in counts.items())
          + f" -> {cfg.resolve(cfg.paths.lakehouse)} ({time.perf_counter() - t0:.1f}s)")
    return 0
