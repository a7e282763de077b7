"""``guim embed``: point-in-time (as-of) snapshots of user mixtures and item vectors in gold.

A snapshot of user ``u`` as of instant ``T`` is the model's mixture computed from ``u``'s
events with ``ts < T`` only (the newest ``max_len`` of them), and the ``profile`` vector (of every
item ``u`` touched before ``T``; ``Embedder.user_vector``), stamped
``event_timestamp = T``.
Feast's point-in-time join then gives a label at time ``t`` the newest snapshot with
``T <= t``: it never sees the label's own event or anything after it.

- ``guim embed`` = ``guim embed --as-of now``; ``--as-of TIME`` is repeatable and
  ``--backfill START END --every 1d`` adds START, START+1d, … up to END. All as-of times of one
  command run as **one** Spark job: each user's history is read and sorted once, and every as-of
  window of it is cut from that one array.
- **Incremental**: a user gets a row at ``T`` only when their history before ``T`` differs from
  the one behind their previous snapshot of the same model version (or they have none). An
  unchanged user keeps the older row, which the point-in-time join finds — the vectors would be
  bit-identical anyway (same events in, same vectors out; see ``Embedder.encode_users``). Users
  with no event before ``T`` get no row for it; an as-of time already exported adds nothing.
- Histories come from bronze ``events`` (not silver ``user_sequences``, whose train part is capped
  to the newest ``max_len`` events *now* and would lose the events a past window needs), with the
  same item indices, behaviour codes and time-gap buckets as the silver sequences
  (:func:`guim_features.sequences.user_histories`). As-of times are whole seconds (UTC), the
  resolution of those sequences, so ``ts < T`` is exact.
- Items: one snapshot per model version, stamped :data:`ITEM_STAMP` (1970-01-01 UTC). An item
  vector is a function of the model and the item's content, not of any event time, so it is
  valid at every instant a user snapshot of the same version is; stamping it at the earliest
  instant lets the point-in-time join find it for every as-of snapshot, including ones
  backfilled later into the past. Items no one interacted with get vectors from their content.
- Gold tables are partitioned by ``model_version`` and ``snapshot_date`` so that publishing and
  the Spark offline store read one version (and the dates they need) only.
- The model runs as ``mlflow.pyfunc.spark_udf(spark, "models:/guim/<version>", env_manager="local")``
  of the registered version the URI names when the command starts (an alias moving mid-job changes
  nothing): the same pyfunc, input checks and signature a REST or batch caller gets, and MLflow
  ships the model to the executors. The as-of windows are cut in an Arrow step first
  (:func:`as_of_windows`), fed to the UDF as the pyfunc's input columns, and its flat output
  (``interests`` K*d) is nested K x d afterwards (:func:`shape_users`; L2-normalised there for
  cosine models, in numpy float32 as the model scores). Items added to the
  index after training keep the embedder's encoding (hashed id bucket) through the pyfunc's
  ``max_item_idx`` param. (Cost against shipping a torch checkpoint to the tasks: README, Publish.)

spark-submit: ``spark-submit --packages "$(python -m guim_features.versions)" --py-files guim_features.zip
spark_jobs/export_embeddings.py --workspace WS [--model-uri models:/guim/3] [--as-of …] [--backfill …]``.
"""
from __future__ import annotations

import re
import time
from datetime import datetime, timedelta, timezone

import numpy as np

from .errors import GuimError
from .views import nested_lists

ITEM_STAMP = datetime(1970, 1, 1, tzinfo=timezone.utc)
PARTITIONS = ["model_version", "snapshot_date"]
USER_SCHEMA = ("user_id STRING, interests ARRAY<ARRAY<FLOAT>>, weights ARRAY<FLOAT>, profile ARRAY<FLOAT>, "
               "seen_items ARRAY<STRING>, as_of LONG")
ITEM_SCHEMA = "item_id STRING, vector ARRAY<FLOAT>"
WINDOW_SCHEMA = ("user_id STRING, as_of LONG, item_idx ARRAY<LONG>, behavior ARRAY<LONG>, gaps ARRAY<LONG>, "
                 "history ARRAY<LONG>, seen_items ARRAY<STRING>")
USER_RESULT = "interests ARRAY<FLOAT>, weights ARRAY<FLOAT>, profile ARRAY<FLOAT>"   # the pyfunc's output (flat K*d)
USER_RESULT_V0 = "interests ARRAY<FLOAT>, weights ARRAY<FLOAT>"   # a version registered before profile existed
ITEM_RESULT = "vector ARRAY<FLOAT>"
# item_features columns the pyfunc reads, cast to the types its signature declares
ITEM_INPUT = {"item_idx": "long", "category_idx": "long", "brand_idx": "long", "shop_idx": "long",
              "price_norm": "float", "year_norm": "float", "title_tokens": "array<long>", "tag_ids": "array<long>",
              "image": "array<float>"}
_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 7 * 86400}


# -- as-of times ---------------------------------------------------------------------------------

def parse_time(text: str, now: datetime | None = None) -> datetime:
    """``now``, an ISO date (``2017-12-01``) or date-time (naive = UTC) -> UTC, whole seconds (floor)."""
    text = str(text).strip()
    if text.lower() == "now":
        t = now or datetime.now(timezone.utc)
    else:
        try:
            t = datetime.fromisoformat(text.replace("Z", "+00:00"))
        except ValueError:
            raise GuimError(f"as-of time {text!r}: expected now, YYYY-MM-DD or YYYY-MM-DDTHH:MM[:SS][+HH:MM]") from None
    t = t.replace(tzinfo=timezone.utc) if t.tzinfo is None else t.astimezone(timezone.utc)
    return t.replace(microsecond=0)


def parse_every(text: str) -> timedelta:
    """``1d``, ``6h``, ``30m``, ``90s``, ``1w`` -> timedelta (positive)."""
    m = re.fullmatch(r"\s*(\d+)\s*([smhdw])\s*", str(text))
    if not m or int(m.group(1)) == 0:
        raise GuimError(f"--every {text!r}: expected a positive interval such as 1d, 12h, 30m or 1w")
    return timedelta(seconds=int(m.group(1)) * _UNITS[m.group(2)])


def as_of_times(as_of=None, backfill=None, every: str = "1d", now: datetime | None = None) -> list[datetime]:
    """The sorted, distinct as-of instants of one command (``now`` when nothing is given).

    ``backfill`` = (START, END): START, START + every, … while <= END (both ends included)."""
    now = now or datetime.now(timezone.utc)
    out = [parse_time(t, now) for t in (as_of or [])]
    if backfill:
        start, end = parse_time(backfill[0], now), parse_time(backfill[1], now)
        if end < start:
            raise GuimError(f"--backfill {backfill[0]} {backfill[1]}: END is before START")
        step = parse_every(every)
        n = int((end - start) / step) + 1
        if n > 100_000:
            raise GuimError(f"--backfill with --every {every} makes {n:,} as-of times; choose a longer interval")
        out += [start + i * step for i in range(n)]
    return sorted(set(out)) if out else [parse_time("now", now)]


def plan_snapshots(t: np.ndarray, existing: np.ndarray, times: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Which as-of snapshots one user needs: (as-of times, events before each) to encode.

    ``t``: the user's event times, sorted (seconds); ``existing``: as-of times of their snapshots
    already in gold for this model version; ``times``: the as-of times asked for (seconds). A time
    needs a row when the user has events before it, it is not in ``existing``, and the number of
    events before it differs from that before the previous instant of ``existing`` ∪ ``times``
    (an unchanged history keeps the previous row; histories only grow, so equal counts mean
    equal histories)."""
    grid = np.union1d(existing, times)
    n = np.searchsorted(t, grid, side="left")                                   # events with ts < instant
    prev = np.concatenate([[0], n[:-1]])
    keep = np.isin(grid, times) & ~np.isin(grid, existing) & (n > 0) & (n != prev)
    return grid[keep], n[keep]


# -- Spark transforms (pure DataFrame -> DataFrame) ----------------------------------------------

def _l2(x):
    return x / np.clip(np.linalg.norm(x, axis=-1, keepdims=True), 1e-12, None)


def _lists(col) -> tuple[np.ndarray, np.ndarray]:
    """An Arrow list column -> (flat values, offsets) without Python objects."""
    import pyarrow as pa

    col = col.combine_chunks() if isinstance(col, pa.ChunkedArray) else col
    offsets = col.offsets.to_numpy()
    values = col.values.to_numpy(zero_copy_only=False)
    return values, offsets


def histories(events, index, behaviors: list, gap_buckets: int, before_s: int, snapshots=None,
              first_s: int | None = None):
    """Per user (with an event before ``before_s``): item_idx, behavior, gaps and t (seconds) arrays
    of every event before ``before_s`` in time order, plus ``existing``: as-of times (seconds) of
    their snapshots already in gold (``snapshots``: the gold rows of this model version, or None).

    With ``first_s`` (the earliest as-of time asked for), users whose newest snapshot is older than
    ``first_s`` and who have no event since it are left out before any history is built: every
    as-of time after an unchanged snapshot keeps it, so the daily run sorts and ships only the
    users with new events."""
    from pyspark.sql import functions as F

    from .sequences import user_histories

    ev = events.where(F.col("ts") < F.timestamp_seconds(F.lit(before_s)))
    if snapshots is None:
        h = user_histories(ev, index, behaviors, gap_buckets)
        existing = None
    else:
        existing = snapshots.groupBy("user_id").agg(
            F.collect_list(F.unix_seconds("event_timestamp")).alias("existing"),
            F.max(F.unix_seconds("event_timestamp")).alias("s_last"))
        if first_s is not None:
            last_event = ev.groupBy("user_id").agg(F.max(F.unix_seconds("ts")).alias("e_last"))
            unchanged = (existing.join(last_event, "user_id")
                         .where((F.col("s_last") < first_s) & (F.col("e_last") < F.col("s_last")))
                         .select("user_id"))
            ev = ev.join(unchanged, "user_id", "left_anti")
        h = user_histories(ev, index, behaviors, gap_buckets)
    h = h.select("user_id", F.col("e.item_idx").alias("item_idx"), F.col("e.b").alias("behavior"),
                 F.col("g").alias("gaps"), F.col("e.t").alias("t"))
    if existing is None:
        return h.withColumn("existing", F.array().cast("array<long>"))
    return h.join(existing.select("user_id", "existing"), "user_id", "left").withColumn(
        "existing", F.coalesce("existing", F.array().cast("array<long>")))


def newest_distinct(items: np.ndarray, n: int) -> np.ndarray:
    """The distinct values of ``items`` (oldest first) ordered by their latest occurrence, newest
    first, at most ``n`` of them."""
    rev = items[::-1]
    _, first = np.unique(rev, return_index=True)                # each value's newest position
    return rev[np.sort(first)[:n]]


def as_of_windows(hist, times_s: list[int], max_len: int, rows_per_batch: int = 4096, item_ids=None,
                  seen_max: int = 0, seen_codes=None):
    """histories DataFrame -> (user_id, as_of seconds, item_idx, behavior, gaps, history, seen_items):
    one row per snapshot :func:`plan_snapshots` asks for, holding the user's newest ``max_len`` events
    before it (the model's input columns, typed as its signature declares them), ``history``, the
    distinct item_idx of ALL their events before it (what the pyfunc's ``profile`` folds in), and
    ``seen_items``: the item ids of those events, distinct, newest first, at most ``seen_max``
    (``item_ids``: a Spark broadcast of the item id per item_idx; ``seen_codes``: the behaviour codes
    that count, None = every one). Null when ``seen_max`` is 0."""
    times = np.asarray(sorted(times_s), np.int64)
    codes = None if seen_codes is None else np.asarray(sorted(seen_codes), np.int64)

    def fn(batches):
        import pyarrow as pa

        for b in batches:
            it, off = _lists(b.column("item_idx"))
            be, _ = _lists(b.column("behavior"))
            ga, _ = _lists(b.column("gaps"))
            ts, _ = _lists(b.column("t"))
            ex, ex_off = _lists(b.column("existing"))
            users, stamps, lo, hi = [], [], [], []
            for r in range(b.num_rows):
                first, last = off[r], off[r + 1]
                at, n = plan_snapshots(ts[first:last], np.sort(ex[ex_off[r]:ex_off[r + 1]]), times)
                for T, k in zip(at.tolist(), n.tolist()):
                    users.append(r)
                    stamps.append(T)
                    lo.append(first + max(0, k - max_len))
                    hi.append(first + k)
            ids = b.column("user_id")
            for s in range(0, len(users), rows_per_batch):
                a, z = np.asarray(lo[s:s + rows_per_batch]), np.asarray(hi[s:s + rows_per_batch])
                offsets = np.concatenate([[0], np.cumsum(z - a)]).astype(np.int32)
                take = np.repeat(a - offsets[:-1], z - a) + np.arange(offsets[-1])      # the windows' events
                window = [pa.ListArray.from_arrays(pa.array(offsets), pa.array(v[take].astype(np.int64)))
                          for v in (it, be, ga)]
                seen = [np.unique(it[off[users[j]]:z[j - s]]) for j in range(s, s + len(a))]   # from the 1st event
                h_off = np.concatenate([[0], np.cumsum([len(x) for x in seen])]).astype(np.int32)
                history = pa.ListArray.from_arrays(pa.array(h_off), pa.array(np.concatenate(seen).astype(np.int64)))
                yield pa.RecordBatch.from_arrays(
                    [ids.take(pa.array(users[s:s + rows_per_batch], pa.int64())),
                     pa.array(stamps[s:s + rows_per_batch], pa.int64()), *window, history,
                     seen_column([off[users[j]] for j in range(s, s + len(a))], z, it, be)],
                    names=["user_id", "as_of", "item_idx", "behavior", "gaps", "history", "seen_items"])

    def seen_column(starts, stops, it, be):
        import pyarrow as pa

        if not seen_max:
            return pa.nulls(len(stops), pa.list_(pa.string()))
        names = item_ids.value
        rows = []
        for a, z in zip(starts, stops):
            items = it[a:z] if codes is None else it[a:z][np.isin(be[a:z], codes)]
            rows.append(names[newest_distinct(items, seen_max)])
        offsets = np.concatenate([[0], np.cumsum([len(r) for r in rows])]).astype(np.int32)
        flat = np.concatenate(rows) if rows else np.array([], object)
        return pa.ListArray.from_arrays(pa.array(offsets), pa.array(flat.tolist(), pa.string()))

    return hist.select("user_id", "item_idx", "behavior", "gaps", "t", "existing").mapInArrow(fn, WINDOW_SCHEMA)


def _item_names(spark, index):
    """A Spark broadcast of the item id per item_idx (None where no item has the index)."""
    t = index.select("item_idx", "item_id").toArrow()
    idx = t["item_idx"].to_numpy()
    names = np.full(int(idx.max()) + 1 if len(idx) else 1, None, dtype=object)
    names[idx] = np.asarray(t["item_id"].to_pylist(), dtype=object)
    return spark.sparkContext.broadcast(names)


def seen_codes(cfg) -> list[int] | None:
    """The behaviour codes (1-based positions in ingest.behaviors, as in the sequences) of
    embed.seen_behaviors; None for every behaviour."""
    want = list(cfg.embed.seen_behaviors or [])
    if not want:
        return None
    known = list(cfg.ingest.behaviors)
    unknown = [b for b in want if b not in known]
    if unknown:
        raise GuimError(f"embed.seen_behaviors names {unknown}, which are not in ingest.behaviors {known}")
    return [known.index(b) + 1 for b in want]


def model_outputs(model_uri: str) -> set:
    """The output columns a logged pyfunc's signature declares (empty when it has none)."""
    from mlflow.models import Model

    sig = Model.load(model_uri).signature
    return set(sig.outputs.input_names()) if sig is not None and sig.outputs is not None else set()


def model_udf(spark, model_uri: str, kind: str, batch_size: int = 0, max_item_idx: int = 0, profile: bool = True):
    """``mlflow.pyfunc.spark_udf`` of the registered pyfunc for ``kind`` users or items.

    Its result is the pyfunc's own output columns: ``interests`` flat (K*d, interest k at
    ``[k*d:(k+1)*d]``), ``weights`` (K) and ``profile`` (d; ``profile=False`` for a version logged
    before the pyfunc had it), or ``vector`` (d). spark_udf could return a struct with
    an array<array<float>> field, but only when the model's output is nested, and the pyfunc's
    signature declares ``interests`` flat (as REST callers get it); :func:`shape_users` nests it.
    ``env_manager="local"``: the executors' Python environment is the driver's (the one
    ``guim`` is installed in), so no virtualenv is built per job; each Spark task loads the model
    once and runs torch on one thread (``GUIM_TORCH_THREADS``), since the tasks already fill the cores."""
    import logging

    import mlflow

    params = {"kind": kind, "batch_size": int(batch_size)}
    if kind == "users":
        params["max_item_idx"] = int(max_item_idx)
    log = logging.getLogger("mlflow.pyfunc")
    level = log.level
    log.setLevel(logging.ERROR)          # its warning that "local" does not rebuild the training environment
    try:
        result = (USER_RESULT if profile else USER_RESULT_V0) if kind == "users" else ITEM_RESULT
        return mlflow.pyfunc.spark_udf(spark, model_uri, result_type=result,
                                       env_manager="local", params=params, extra_env={"GUIM_TORCH_THREADS": "1"})
    finally:
        log.setLevel(level)


def encode_users(windows, udf, K: int, d: int, normalize: bool = False, profile: bool = True):
    """as_of_windows DataFrame -> (user_id, interests K x d, weights K, profile d, seen_items, as_of
    seconds), through ``udf`` (:func:`model_udf` for users, or any UDF with the same columns in and
    out); ``profile=False``: a UDF without the profile output (the column is then null)."""
    from pyspark.sql import functions as F

    inputs = ["item_idx", "behavior", "gaps"] + (["history"] if profile else [])
    out = windows.select("user_id", "as_of", "seen_items", udf(F.struct(*inputs)).alias("m"))
    p = F.col("m.profile") if profile else F.lit(None).cast("array<float>")
    return shape_users(out.select("user_id", "m.interests", "m.weights", p.alias("profile"), "seen_items", "as_of"),
                       K, d, normalize)


def shape_users(flat, K: int, d: int, normalize: bool = False):
    """(user_id, interests K*d flat, weights, profile, seen_items, as_of) -> USER_SCHEMA rows: interests
    nested K x d, L2-normalised per interest when ``normalize`` (cosine models; numpy float32, as the
    model scores). The profile is kept as the pyfunc made it (a regression output, not a direction)."""

    def fn(batches):
        import pyarrow as pa

        for b in batches:
            values, _ = _lists(b.column("interests"))
            interests = values.astype(np.float32).reshape(b.num_rows, K, d)           # (B, K, d)
            if normalize:
                interests = _l2(interests)
            yield pa.RecordBatch.from_arrays([b.column("user_id"), nested_lists(interests, d, K),
                                              b.column("weights"), b.column("profile"), b.column("seen_items"),
                                              b.column("as_of")],
                                             names=["user_id", "interests", "weights", "profile", "seen_items",
                                                    "as_of"])

    cols = ["user_id", "interests", "weights", "profile", "seen_items", "as_of"]
    if "seen_items" not in flat.columns:
        from pyspark.sql import functions as F

        flat = flat.withColumn("seen_items", F.lit(None).cast("array<string>"))
    return flat.select(*cols).mapInArrow(fn, USER_SCHEMA)


def encode_items(item_features, udf, normalize: bool = False):
    """item_features DataFrame -> (item_id, vector d) DataFrame, every item (cold ones from content),
    through ``udf`` (:func:`model_udf` for items); vectors L2-normalised when ``normalize``."""
    from pyspark.sql import functions as F

    feats = F.struct(*(F.col(c).cast(t).alias(c) for c, t in ITEM_INPUT.items()))
    out = item_features.select("item_id", udf(feats).alias("m")).select("item_id", F.col("m.vector").alias("vector"))
    if not normalize:
        return out

    def fn(batches):
        import pyarrow as pa

        for b in batches:
            if b.num_rows == 0:
                continue
            values, _ = _lists(b.column("vector"))
            vectors = _l2(values.astype(np.float32).reshape(b.num_rows, -1))          # (N, d)
            yield pa.RecordBatch.from_arrays([b.column("item_id"), nested_lists(vectors, vectors.shape[1])],
                                             names=["item_id", "vector"])

    return out.mapInArrow(fn, ITEM_SCHEMA)


def stamp(df, model_version: str, ts=None):
    """Add model_version, event_timestamp (``ts``, or the ``as_of`` seconds column) and snapshot_date."""
    from pyspark.sql import functions as F

    when = F.timestamp_seconds("as_of") if ts is None else F.lit(ts).cast("timestamp")
    return (df.withColumn("model_version", F.lit(model_version)).withColumn("event_timestamp", when)
              .withColumn("snapshot_date", F.to_date("event_timestamp")))


# -- gold tables ------------------------------------------------------------------------------------

def ensure_partitioned(spark, path: str, table: str) -> None:
    """Rewrite a gold table written before partitioning (model_version, snapshot_date) once, in place."""
    from delta.tables import DeltaTable
    from pyspark.sql import functions as F

    from . import delta

    if not delta.exists(spark, path):
        return
    detail = DeltaTable.forPath(spark, path).detail().collect()[0]
    if list(detail["partitionColumns"]) == PARTITIONS:
        return
    df = spark.read.format("delta").load(path).withColumn("snapshot_date", F.to_date("event_timestamp"))
    (delta.conform(df, table).write.format("delta").mode("overwrite").option("overwriteSchema", "true")
     .partitionBy(*PARTITIONS).save(path))
    print(f"gold table {table} repartitioned by {', '.join(PARTITIONS)} (one-time upgrade)")


def write_gold(df, path: str, table: str) -> int:
    """Append rows to a gold table (created partitioned); returns the rows written."""
    from . import delta

    spark = df.sparkSession
    before = delta.version(spark, path) if delta.exists(spark, path) else -1
    (delta.conform(df, table).write.format("delta").mode("append").option("mergeSchema", "true")   # new columns
     .partitionBy(*PARTITIONS).save(path))
    if delta.version(spark, path) == before:
        return 0                        # nothing to append: Delta made no commit, history(1) is an old one
    return _appended(spark, path)


def version_rows(spark, path: str, model_version: str):
    """Rows of one model version of a gold table (partition-pruned), or None when there is no table."""
    from pyspark.sql import functions as F

    from . import delta

    if not delta.exists(spark, path):
        return None
    return spark.read.format("delta").load(path).where(F.col("model_version") == model_version)


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


def _registered_name(model_uri: str) -> str:
    """``models:/guim@challenger`` or ``models:/guim/3`` -> ``guim``."""
    return model_uri[len("models:/"):].partition("@")[0].partition("/")[0]


def export(cfg, model_uri: str | None = None, times: list[datetime] | None = None, spark=None,
           quiet: bool = False) -> dict:
    """Append the as-of snapshots of ``times`` (default: now) and the version's item snapshot to gold.

    Returns {'model_version', 'times', 'user_rows', 'item_rows', 'seconds'}."""
    import mlflow
    from pyspark.sql import functions as F

    from . import delta
    from .embedder import load_embedder
    from .spark import ensure_sql_defaults, get_spark

    t0 = time.perf_counter()
    times = times or as_of_times()
    uri = model_uri or cfg.embed.model_uri
    emb = load_embedder(uri, tracking_uri=cfg.mlflow_uri)
    version = emb.model_version
    if not version:
        raise GuimError(f"model {uri!r} has no registered version; export a registered model "
                        f"(models:/{getattr(cfg.train, 'model_name', 'guim')}/N or @alias)")
    spark = ensure_sql_defaults(spark or get_spark(cfg.spark))
    paths = {n: cfg.table(n) for n in ("user_embeddings", "item_embeddings")}
    for name, path in paths.items():
        ensure_partitioned(spark, path, name)
    version_uri = f"models:/{_registered_name(uri)}/{version}"      # what the alias names now, for every task
    normalize = bool(emb.config.get("normalize", False))
    n_part = max(1, cfg.embed.partitions)
    times_s = [int(t.timestamp()) for t in times]

    events = delta.read(spark, cfg.table("events"), "events")
    index = delta.read(spark, cfg.table("item_index"), "item_index")
    hist = histories(events, index, list(cfg.ingest.behaviors), cfg.sequences.gap_buckets,
                     max(times_s), version_rows(spark, paths["user_embeddings"], version), min(times_s))
    max_item_idx = index.agg(F.max("item_idx")).first()[0] or 0
    # one local copy of the version serves both UDFs (spark_udf would download it again for each)
    local_model = mlflow.artifacts.download_artifacts(artifact_uri=version_uri)
    profile = "profile" in model_outputs(local_model)
    udf = model_udf(spark, local_model, "users", cfg.embed.batch_size, max_item_idx, profile)
    names = _item_names(spark, index) if cfg.embed.seen_max else None
    windows = as_of_windows(_spread(hist, n_part), times_s, emb.max_len, item_ids=names,
                            seen_max=cfg.embed.seen_max, seen_codes=seen_codes(cfg))
    users = encode_users(windows, udf, emb.K, emb.d, normalize, profile)
    try:
        counts = {"user_rows": write_gold(stamp(users, version), paths["user_embeddings"], "user_embeddings")}
    finally:
        if names is not None:
            names.destroy()
    t_users = time.perf_counter() - t0
    old_items = version_rows(spark, paths["item_embeddings"], version)
    if old_items is None or old_items.limit(1).count() == 0:
        feats = _spread(delta.read(spark, cfg.table("item_features"), "item_features"), n_part)
        udf = model_udf(spark, local_model, "items", cfg.embed.batch_size)
        items = stamp(encode_items(feats, udf, normalize), version, ITEM_STAMP)
        counts["item_rows"] = write_gold(items, paths["item_embeddings"], "item_embeddings")
    else:
        counts["item_rows"] = 0
    _tag_model(cfg, emb)
    out = {"model_version": str(version), "times": times, **counts, "user_seconds": t_users,
           "seconds": time.perf_counter() - t0, "K": emb.K, "d": emb.d}
    if not quiet:
        span = (f"as of {times[0]:%Y-%m-%d %H:%M:%S}" if len(times) == 1 else
                f"{len(times)} as-of times {times[0]:%Y-%m-%d %H:%M:%S} .. {times[-1]:%Y-%m-%d %H:%M:%S}")
        print(f"model version {version} (K={emb.K}, d={emb.d}), {span} UTC: {counts['user_rows']:,} user "
              f"snapshots written (users without new events keep their previous one), "
              f"{counts['item_rows']:,} item vectors"
              + ("" if counts["item_rows"] else " (this version's items are already exported)")
              + f" -> {cfg.resolve(cfg.paths.lakehouse)} ({out['seconds']:.1f}s)")
    return out


def add_arguments(p) -> None:
    """The as-of options, shared by ``guim embed`` and ``spark_jobs/export_embeddings.py``."""
    p.add_argument("--model-uri", dest="model_uri", help="default: embed.model_uri (models:/guim@challenger)")
    p.add_argument("--as-of", action="append", dest="as_of", metavar="TIME",
                   help="snapshot each user from their events before TIME (now | YYYY-MM-DD[THH:MM:SS], UTC); "
                        "repeatable; default now")
    p.add_argument("--backfill", nargs=2, metavar=("START", "END"),
                   help="as-of snapshots at START, START+EVERY, ... up to END, in one Spark job")
    p.add_argument("--every", default="1d", help="backfill interval: 1d, 12h, 30m, 1w ... (default 1d)")


def run(cfg, args) -> int:
    """CLI entry: ``guim embed [--model-uri URI] [--as-of TIME ...] [--backfill START END --every 1d]``."""
    times = as_of_times(getattr(args, "as_of", None), getattr(args, "backfill", None),
                        getattr(args, "every", None) or "1d")
    export(cfg, getattr(args, "model_uri", None), times)
    return 0
