"""``guim sequences``: bronze -> silver (item_index, vocab, feature_stats, item_features,
user_sequences, labels_*). The Spark job ``spark_jobs/build_sequences.py`` runs the same
:func:`main`.

Extract (bronze Delta) -> pure transforms below (DataFrame in, DataFrame out, parameters as
arguments; tested on hand-written frames) -> load (Delta MERGE / overwrite). Incremental: the
events added since the last run (Delta time travel on ``events``) name the affected users; only
their sequences are rebuilt and MERGEd, which gives the same table as a full rebuild.
"""
from __future__ import annotations

import hashlib
import json
import time

from . import schemas
from .config import Config
from .errors import GuimError

STATE_KEY = "guim.sequences.state"   # Delta table property on user_sequences: what was built from what


# -- pure transforms ----------------------------------------------------------------------------

def dedupe_events(events):
    """Drop duplicate behaviours (same user, item, behaviour and instant)."""
    return events.dropDuplicates(["user_id", "item_id", "behavior", "ts"])


def append_index(existing, ids, key: str, idx: str, first: int):
    """New entries of an id -> index mapping: ids not in ``existing`` get, in sorted order, the
    indices after its maximum (``first`` on an empty mapping). Existing ids keep theirs.

    ``existing``: DataFrame(key, idx) or None; ``ids``: DataFrame with column ``key``.
    Returns only the new (key, idx) rows, so the caller appends them.
    """
    from pyspark.sql import Window
    from pyspark.sql import functions as F
    ids = ids.select(key).where(F.col(key).isNotNull()).distinct()
    if existing is None:
        start, new = first, ids
    else:
        start = (existing.agg(F.max(idx)).collect()[0][0] or first - 1) + 1
        new = ids.join(existing.select(key), key, "left_anti")
    w = Window.orderBy(key)
    return new.withColumn(idx, (F.row_number().over(w) + start - 1).cast("int"))


def update_vocab(existing, items, fields: list[str]):
    """New entries of the per-field vocabularies (field, value, idx) of categorical item fields and
    tags; indices start at 2 (0 pad, 1 OOV) and existing values keep theirs."""
    from pyspark.sql import functions as F
    out = None
    for f in list(fields) + ["tag"]:
        values = (items.select(F.explode("tags").alias("value")) if f == "tag"
                  else items.select(F.col(f).cast("string").alias("value")))
        old = existing.where(F.col("field") == f).select("value", "idx") if existing is not None else None
        v = append_index(old, values, "value", "idx", schemas.OOV + 1).withColumn("field", F.lit(f))
        out = v if out is None else out.unionByName(v)
    return out.select("field", "value", "idx")


def numeric_stats(items, fields: list[str]):
    """(field, transform, mean, std) for numeric item fields; price is log1p-transformed first."""
    from pyspark.sql import functions as F
    rows = []
    for f in fields:
        transform = "log1p" if f == "price" else "identity"
        x = F.log1p(F.col(f)) if transform == "log1p" else F.col(f).cast("double")
        rows.append(items.agg(F.lit(f).alias("field"), F.lit(transform).alias("transform"),
                              F.avg(x).alias("mean"), F.stddev_pop(x).alias("std")))
    out = rows[0]
    for r in rows[1:]:
        out = out.unionByName(r)
    return out


def build_item_features(items, index, vocab, stats_rows: list, cat_fields: list[str], title_buckets: int,
                        max_tokens: int, max_tags: int):
    """One row per indexed item: indexed categoricals, normalised numerics, hashed title, tags, image.

    Items seen only in events (no content row) get zeros/empties: the model falls back on the id.
    """
    from pyspark.sql import functions as F
    df = index.join(items, "item_id", "left")
    for f in cat_fields:
        voc = vocab.where(F.col("field") == f).select(F.col("value").alias(f), F.col("idx").alias(f"{f}_idx"))
        df = df.join(F.broadcast(voc), f, "left").withColumn(
            f"{f}_idx", F.when(F.col(f).isNull(), 0).otherwise(F.coalesce(f"{f}_idx", F.lit(schemas.OOV))))
    for r in stats_rows:
        x = F.log1p(F.col(r["field"])) if r["transform"] == "log1p" else F.col(r["field"]).cast("double")
        std = r["std"] if r["std"] else 1.0
        df = df.withColumn(f"{r['field']}_norm", F.coalesce((x - F.lit(r["mean"] or 0.0)) / F.lit(std), F.lit(0.0)))
    tokens = F.filter(F.split(F.lower(F.coalesce("title", F.lit(""))), "[^\\p{L}\\p{N}]+"), lambda t: t != "")
    df = df.withColumn("title_tokens", F.transform(F.slice(tokens, 1, max_tokens),
                                                   lambda t: (F.pmod(F.xxhash64(t), F.lit(title_buckets)) + 1)))
    tag_voc = vocab.where(F.col("field") == "tag").select(F.col("value").alias("tag"), F.col("idx").alias("tag_idx"))
    tags = (df.select("item_idx", F.posexplode(F.slice(F.coalesce("tags", F.array().cast("array<string>")), 1, max_tags))
                      .alias("pos", "tag"))
              .join(F.broadcast(tag_voc), "tag", "left")
              .groupBy("item_idx").agg(F.sort_array(F.collect_list(F.struct("pos", F.coalesce("tag_idx", F.lit(schemas.OOV))
                                                                              .alias("i")))).alias("t"))
              .select("item_idx", F.col("t.i").alias("tag_ids")))
    df = df.join(tags, "item_idx", "left").withColumn("tag_ids", F.coalesce("tag_ids", F.array().cast("array<int>")))
    for c in ("price_norm", "year_norm"):
        if c not in df.columns:
            df = df.withColumn(c, F.lit(0.0))
    return df


def user_histories(events, index, behaviors: list[str], gap_buckets: int):
    """Per user, every event in time order: ``e`` = array of struct(t seconds, o, item_idx, b) and
    ``g`` = log2 time-gap buckets (0 for the first event). Events of items missing from ``index``
    are dropped; behaviour codes are 1-based positions in ``behaviors`` (0 = unknown).

    Shared by the silver sequences and the as-of embedding export, so both feed the model the same
    codes for the same events."""
    from pyspark.sql import functions as F
    ev = events.join(F.broadcast(index) if index is not None else index, "item_id", "inner")
    beh = F.array_position(F.array(*[F.lit(b) for b in behaviors]), F.col("behavior")).cast("int")
    ev = ev.select("user_id", F.unix_seconds("ts").alias("t"), F.coalesce("ord", F.lit(0)).alias("o"),
                   "item_idx", beh.alias("b"))
    seq = ev.groupBy("user_id").agg(F.array_sort(F.collect_list(F.struct("t", "o", "item_idx", "b"))).alias("e"))
    n = F.size("e")
    t = F.col("e.t")
    prev = F.concat(F.slice(t, 1, 1), F.slice(t, 1, F.greatest(n - 1, F.lit(0))))
    gaps = F.zip_with(t, prev, lambda a, b: F.least(F.floor(F.log2(a - b + 1)), F.lit(gap_buckets - 1)).cast("int"))
    return seq.select("user_id", "e", gaps.alias("g"))


def build_user_sequences(events, index, behaviors: list[str], max_len: int, split: str, valid_cutoff,
                         test_cutoff, gap_buckets: int, min_events: int):
    """Per user: time-ordered item indices, behaviour codes, timestamps, log2 time-gap buckets and a
    split code per event (leave-last-out, or global time cutoffs as timestamps). The train part is
    capped to its most recent ``max_len`` events, the valid and test parts to ``max_len`` each."""
    from pyspark.sql import functions as F
    seq = user_histories(events, index, behaviors, gap_buckets)
    n = F.size("e")
    if split == "leave_last_out":
        sp = F.transform("e", lambda x, i: F.when(i == n - 1, 2).when(i == n - 2, 1).otherwise(0))
    elif split == "time":
        vc, tc = F.unix_seconds(F.lit(valid_cutoff).cast("timestamp")), F.unix_seconds(F.lit(test_cutoff).cast("timestamp"))
        sp = F.transform("e", lambda x: F.when(x["t"] >= tc, 2).when(x["t"] >= vc, 1).otherwise(0))
    else:
        raise GuimError(f"sequences.split must be leave_last_out or time, not {split!r}")
    seq = seq.select("user_id", "e", sp.alias("s"), "g", n.alias("n"))
    cnt = lambda code: F.size(F.filter("s", lambda x: x == code))  # noqa: E731
    seq = seq.select("*", cnt(0).alias("nt"), cnt(1).alias("nv"), cnt(2).alias("ns"))
    seq = seq.where((F.col("n") >= min_events) & (F.col("nt") >= 1))
    start = F.greatest(F.col("nt") - max_len, F.lit(0))
    keep_v, keep_s = F.least("nv", F.lit(max_len)), F.least("ns", F.lit(max_len))

    def cap(a):
        return F.concat(F.slice(a, start + 1, F.col("nt") - start),
                        F.slice(a, F.col("nt") + 1, keep_v), F.slice(a, F.col("nt") + F.col("nv") + 1, keep_s))
    out = seq.select(
        "user_id", cap(F.col("e.item_idx")).alias("item_idx"), cap(F.col("e.b")).alias("behavior"),
        cap(F.col("e.t")).alias("ts"), cap(F.col("g")).alias("gaps"), cap(F.col("s")).alias("split"),
        (F.col("nt") - start).cast("int").alias("n_train"), keep_v.cast("int").alias("n_valid"),
        keep_s.cast("int").alias("n_test"), F.timestamp_seconds(F.element_at("e.t", -1)).alias("last_ts"))
    return out


def future_labels(sequences, index, behaviors: list[str]):
    """Every valid/test interaction, exploded, with item_id and behaviour name (labels_future)."""
    from pyspark.sql import functions as F
    names = F.array(*[F.lit(b) for b in behaviors])
    ex = sequences.select("user_id", F.posexplode("split").alias("pos", "split"), "item_idx", "behavior", "ts")
    ex = ex.where(F.col("split") > 0).select(
        "user_id", "split", F.element_at("item_idx", F.col("pos") + 1).alias("item_idx"),
        F.element_at(names, F.element_at("behavior", F.col("pos") + 1)).alias("behavior"),
        F.timestamp_seconds(F.element_at("ts", F.col("pos") + 1)).alias("ts"))
    return ex.join(F.broadcast(index), "item_idx", "left")


def time_cutoffs(events, valid_cutoff: str, test_cutoff: str) -> tuple[str, str]:
    """The configured cutoffs, or the 90% / 95% quantiles of event time when left empty."""
    from pyspark.sql import functions as F
    if valid_cutoff and test_cutoff:
        return valid_cutoff, test_cutoff
    q = events.select(F.unix_seconds("ts").alias("t")).approxQuantile("t", [0.9, 0.95], 0.0001)
    import datetime as dt
    iso = lambda s: dt.datetime.fromtimestamp(s, dt.timezone.utc).strftime("%Y-%m-%d %H:%M:%S")  # noqa: E731
    return valid_cutoff or iso(q[0]), test_cutoff or iso(q[1])


# -- the job --------------------------------------------------------------------------------------

def _read_state(spark, path: str) -> dict | None:
    from . import delta
    if not delta.exists(spark, path):
        return None
    props = spark.sql(f"SHOW TBLPROPERTIES delta.`{path}`").collect()
    for r in props:
        if r["key"] == STATE_KEY:
            return json.loads(r["value"])
    return None


def _write_state(spark, path: str, state: dict) -> None:
    value = json.dumps(state, sort_keys=True).replace("'", "")
    spark.sql(f"ALTER TABLE delta.`{path}` SET TBLPROPERTIES ('{STATE_KEY}' = '{value}')")


def _empty(spark, table: str):
    return spark.createDataFrame([], schemas.spark_schema(table))


def main(cfg: Config, full: bool = False, spark=None, quiet: bool = False) -> dict:
    """Build or update every silver table; returns counts and what was done."""
    from pyspark.sql import functions as F

    from . import delta
    from .spark import get_spark

    t0 = time.time()
    from .spark import ensure_sql_defaults
    spark = ensure_sql_defaults(spark or get_spark(cfg.spark))
    sc, behaviors = cfg.sequences, list(cfg.ingest.behaviors)
    events = delta.read(spark, cfg.table("events"), "events")
    items_path, users_path = cfg.table("items"), cfg.table("users")
    items = delta.read(spark, items_path, "items") if delta.exists(spark, items_path) else _empty(spark, "items")
    users = delta.read(spark, users_path, "users") if delta.exists(spark, users_path) else None
    versions = {"events": delta.version(spark, cfg.table("events")),
                "items": delta.version(spark, items_path) if delta.exists(spark, items_path) else -1,
                "users": delta.version(spark, users_path) if users is not None else -1}
    fp = hashlib.sha1(json.dumps([vars(sc), behaviors], sort_keys=True, default=str).encode()).hexdigest()[:16]
    seq_path = cfg.table("user_sequences")
    state = _read_state(spark, seq_path)
    unchanged = state and state.get("config") == fp and all(
        (delta.changed_since(spark, cfg.table(t), state[t]) is False) if v >= 0 and state.get(t, -1) >= 0
        else v == state.get(t, -1) for t, v in versions.items())
    if not full and unchanged:  # nothing new in bronze since the last build (no-op commits ignored)
        if not quiet:
            print(f"silver tables are up to date with bronze (events v{versions['events']}); nothing to do")
        return {"mode": "up-to-date", "seconds": time.time() - t0}
    can_increment = sc.split == "leave_last_out" or (sc.valid_cutoff and sc.test_cutoff)
    incremental = bool(not full and state and state.get("config") == fp and can_increment)
    if incremental:
        old = spark.read.format("delta").option("versionAsOf", state["events"]).load(cfg.table("events"))
        new_events = dedupe_events(events.join(old.select("event_id"), "event_id", "left_anti")).persist()
    else:
        new_events = events   # bronze is already unique by event_id (its MERGE key): no extra shuffle

    # item index and vocabularies: append-only MERGEs keep existing indices
    ids = items.select("item_id").unionByName(new_events.select("item_id"))
    idx_path = cfg.table("item_index")
    old_index = delta.read(spark, idx_path, "item_index") if delta.exists(spark, idx_path) else None
    delta.append(append_index(old_index, ids, "item_id", "item_idx", schemas.FIRST_ITEM_INDEX),
                 idx_path, "item_index")
    index = delta.read(spark, idx_path, "item_index").persist()
    voc_path = cfg.table("vocab")
    old_vocab = delta.read(spark, voc_path, "vocab") if delta.exists(spark, voc_path) else None
    delta.append(update_vocab(old_vocab, items, sc.categorical_fields), voc_path, "vocab")
    vocab = delta.read(spark, voc_path, "vocab")
    stats = numeric_stats(items, sc.numeric_fields)
    stats_rows = [r.asDict() for r in stats.collect()]
    delta.overwrite(stats, cfg.table("feature_stats"), "feature_stats")
    feats = build_item_features(items, index, vocab, stats_rows, sc.categorical_fields, sc.title_buckets,
                                sc.title_max_tokens, sc.max_tags)
    delta.overwrite(feats, cfg.table("item_features"), "item_features")

    # user sequences: all users, or only those with new events
    valid_cut, test_cut = (time_cutoffs(events, sc.valid_cutoff, sc.test_cutoff) if sc.split == "time"
                           else ("", ""))
    if incremental:
        affected = new_events.select("user_id").distinct()
        source = events.join(affected, "user_id", "left_semi")
        source = dedupe_events(source)
    else:
        source = new_events
    seq = build_user_sequences(source, index, behaviors, sc.max_len, sc.split, valid_cut, test_cut,
                               sc.gap_buckets, sc.min_events)
    fut_path = cfg.table("labels_future")
    if incremental and delta.exists(spark, seq_path):
        from delta.tables import DeltaTable
        seq = delta.conform(seq, "user_sequences").persist()
        n_users = seq.count()
        (DeltaTable.forPath(spark, seq_path).alias("t").merge(seq.alias("s"), "t.user_id = s.user_id")
         .whenMatchedUpdateAll().whenNotMatchedInsertAll().execute())
        (DeltaTable.forPath(spark, fut_path).alias("t").merge(affected.alias("s"), "t.user_id = s.user_id")
         .whenMatchedDelete().execute())
        delta.conform(future_labels(seq, index, behaviors), "labels_future").write.format("delta") \
            .mode("append").save(fut_path)
        seq.unpersist()
    else:
        delta.overwrite(seq, seq_path, "user_sequences")
        seq = delta.read(spark, seq_path, "user_sequences")
        n_users = seq.count()
        delta.overwrite(future_labels(seq, index, behaviors), fut_path, "labels_future")

    # labels the model never sees
    if users is not None:
        delta.overwrite(users, cfg.table("labels_users"), "labels_users")
    delta.overwrite(index.join(items.select("item_id", "category", "tags"), "item_id", "left"),
                    cfg.table("labels_items"), "labels_items")
    _write_state(spark, seq_path, {"config": fp, **versions})
    out = {"mode": "incremental" if incremental else "full", "new_events": new_events.count(),  # cached/cheap
           "users_rebuilt": n_users, "items": index.count(), "seconds": time.time() - t0,
           "cutoffs": [valid_cut, test_cut] if sc.split == "time" else None}
    if incremental:
        new_events.unpersist()
    index.unpersist()
    if not quiet:
        print(f"sequences ({out['mode']}): {out['new_events']:,} new events, {out['users_rebuilt']:,} user "
              f"sequences written, {out['items']:,} items indexed"
              + (f", time cutoffs valid>={valid_cut} test>={test_cut}" if sc.split == "time" else "")
              + f" ({out['seconds']:.1f}s)\nsilver tables in {cfg.table('')}")
    return out


def run(cfg: Config, args) -> int:
    from . import delta

    delta.require(cfg.table("events"), "events")        # before Spark starts
    main(cfg, full=getattr(args, "full", False))
    return 0
