"""Readers for each ingest source and the pure validation transforms.

Every reader returns *candidate* DataFrames with our column names plus ``raw`` (the input row as
text) and ``reason`` (null when the row is acceptable so far, e.g. a malformed line already has
one). :func:`validate_events`, :func:`validate_items` and :func:`validate_users` then add the
remaining reasons; :func:`split_accepted` separates accepted rows from quarantined ones. The
transforms are DataFrame -> DataFrame and are tested on hand-written frames.
"""
from __future__ import annotations

import os
from pathlib import Path

from ..errors import GuimError

TAOBAO_BEHAVIORS = ("pv", "fav", "cart", "buy")
ML_GENRES = ["unknown", "Action", "Adventure", "Animation", "Children's", "Comedy", "Crime",
             "Documentary", "Drama", "Fantasy", "Film-Noir", "Horror", "Musical", "Mystery", "Romance",
             "Sci-Fi", "Thriller", "War", "Western"]
ML1M_AGE = {"1": "Under 18", "18": "18-24", "25": "25-34", "35": "35-44", "45": "45-49", "50": "50-55",
            "56": "56+"}
ML1M_OCCUPATION = ["other", "academic/educator", "artist", "clerical/admin", "college/grad student",
                   "customer service", "doctor/health care", "executive/managerial", "farmer", "homemaker",
                   "K-12 student", "lawyer", "programmer", "retired", "sales/marketing", "scientist",
                   "self-employed", "technician/engineer", "tradesman/craftsman", "unemployed", "writer"]


def age_bucket(age_col):
    """ML-100K ages -> the ML-1M buckets, so both layouts share one label space."""
    from pyspark.sql import functions as F
    a = age_col.try_cast("int")
    return (F.when(a < 18, "Under 18").when(a < 25, "18-24").when(a < 35, "25-34").when(a < 45, "35-44")
            .when(a < 50, "45-49").when(a < 56, "50-55").when(a.isNotNull(), "56+"))


# -- pure validation transforms -------------------------------------------------------------------

def _first_reason(current, *checks):
    """Keep an existing reason; else the first check (condition, reason) that holds."""
    from pyspark.sql import functions as F
    out = current
    for cond, reason in reversed(checks):
        out = F.when(cond, F.lit(reason)).otherwise(out)
    return F.coalesce(current, out)


def _bad_id(c):
    from pyspark.sql import functions as F
    return c.isNull() | (F.trim(c) == "")


def validate_events(df, behaviors, min_ts: str, max_ts: str):
    """Add quarantine reasons to candidate events (user_id, item_id, behavior, ts, raw, reason).

    ``ts`` must already be a timestamp column (null when unparseable). Reasons, first match wins:
    missing user_id, missing item_id, unparseable timestamp, timestamp out of range, unknown behavior.
    """
    from pyspark.sql import functions as F
    df = df.withColumn("ts", F.col("ts").cast("timestamp"))  # TIMESTAMP_NTZ (e.g. pandas) -> UTC instant
    ts = F.col("ts")
    reason = _first_reason(
        F.col("reason"),
        (_bad_id(F.col("user_id")), "missing or unparseable user_id"),
        (_bad_id(F.col("item_id")), "missing or unparseable item_id"),
        (ts.isNull(), "unparseable timestamp"),
        ((ts < F.lit(min_ts).cast("timestamp")) | (ts > F.lit(max_ts).cast("timestamp")),
         "timestamp out of range"),
        (~F.col("behavior").isin(list(behaviors)) | F.col("behavior").isNull(), "unknown behavior"),
    )
    return df.withColumn("reason", reason)


def validate_items(df):
    """Reasons for items: missing item_id, unparseable or negative price."""
    from pyspark.sql import functions as F
    reason = _first_reason(
        F.col("reason"),
        (_bad_id(F.col("item_id")), "missing or unparseable item_id"),
        (F.col("price_raw").isNotNull() & (F.trim(F.col("price_raw")) != "") & F.col("price").isNull(),
         "unparseable price"),
        (F.col("price") < 0, "negative price"),
    )
    return df.withColumn("reason", reason)


def validate_users(df):
    """Reasons for users: missing user_id."""
    from pyspark.sql import functions as F
    return df.withColumn("reason", _first_reason(F.col("reason"),
                                                 (_bad_id(F.col("user_id")), "missing or unparseable user_id")))


def split_accepted(df, source: str, target: str):
    """(accepted rows with ids trimmed, quarantine rows) from a validated candidate frame."""
    from pyspark.sql import functions as F
    good = df.filter(F.col("reason").isNull()).drop("reason", "raw")
    for c in ("user_id", "item_id"):
        if c in good.columns:
            good = good.withColumn(c, F.trim(F.col(c)))
    good = good.withColumn("source", F.lit(source))
    bad = (df.filter(F.col("reason").isNotNull())
           .select(F.lit(source).alias("source"), F.lit(target).alias("target"),
                   F.coalesce(F.col("raw"), F.lit("")).alias("raw"), "reason")
           .withColumn("row_id", F.sha1(F.concat_ws("\u0001", "source", "target", "raw")))
           .withColumn("ingested_at", F.current_timestamp()))
    return good, bad


def with_event_id(df):
    """event_id = sha1(user_id, item_id, behavior, ts in µs): the natural key of an event."""
    from pyspark.sql import functions as F
    return df.withColumn("event_id", F.sha1(F.concat_ws(
        "\u0001", "user_id", "item_id", "behavior", F.unix_micros(F.col("ts")).cast("string"))))


def epoch_to_ts(col, unit: str = "s"):
    """Epoch number (string or numeric) -> timestamp; null when not a number."""
    from pyspark.sql import functions as F
    n = col.try_cast("double")
    scale = {"s": 1_000_000, "ms": 1_000, "us": 1}[unit]
    return F.when(n.isNotNull() & ~F.isnan(n), F.timestamp_micros((n * scale).try_cast("long")))


# -- readers ----------------------------------------------------------------------------------------

def need(path: str | os.PathLike, what: str) -> str:
    """``path`` as a string, or a GuimError when it is not given, does not exist or is an empty file
    (local paths; URIs are checked when read)."""
    if not path:
        raise GuimError(f"{what}: no path given")
    if "://" not in str(path):
        if not Path(path).exists():
            raise GuimError(f"{what}: file or folder not found: {path}")
        if Path(path).is_file() and Path(path).stat().st_size == 0:
            raise GuimError(f"{what}: input is empty: {path}")
    return str(path)


def movielens_layout(root: Path) -> tuple[Path, str, str]:
    """(ratings file, field separator, '100k' | '1m') of a MovieLens folder."""
    if (root / "u.data").exists():
        return root / "u.data", "\t", "100k"
    if (root / "ratings.dat").exists():
        return root / "ratings.dat", "::", "1m"
    raise GuimError(f"movielens: {root} has neither u.data (ml-100k) nor ratings.dat (ml-1m)")


def table_format(path: str, table: str) -> str:
    """'csv' | 'tsv' | 'parquet' | 'delta' of a --source table input, from its name or folder."""
    if path.endswith(".csv") or path.endswith(".csv.gz"):
        return "csv"
    if path.endswith(".tsv"):
        return "tsv"
    if Path(path).is_dir() and (Path(path) / "_delta_log").exists():
        return "delta"
    if path.endswith(".parquet") or Path(path).is_dir():
        return "parquet"
    raise GuimError(f"--{table} {path}: cannot tell the format; use a .csv, .tsv or .parquet file, "
                    "a Parquet folder or a Delta table")


def _lines(spark, path: str, what: str):
    df = spark.read.text(need(path, what))
    if df.limit(1).count() == 0:
        raise GuimError(f"{what}: input is empty: {path}")
    return df


def read_taobao(spark, path: str) -> dict:
    """Taobao UserBehavior CSV: user_id,item_id,category_id,behavior_type,timestamp (no header)."""
    from pyspark.sql import functions as F
    lines = _lines(spark, path, "taobao")
    parts = F.split(F.col("value"), ",")
    df = lines.select(F.col("value").alias("raw"), parts.alias("p"))
    n = F.size("p")
    df = df.select(
        "raw",
        F.when(n == 5, F.trim(F.col("p")[0])).alias("user_id"),
        F.when(n == 5, F.trim(F.col("p")[1])).alias("item_id"),
        F.when(n == 5, F.trim(F.col("p")[2])).alias("category"),
        F.when(n == 5, F.trim(F.col("p")[3])).alias("behavior"),
        F.when(n == 5, F.trim(F.col("p")[4])).alias("ts_raw"),
        F.when(n != 5, F.lit("malformed line: expected 5 comma-separated fields")).alias("reason"),
    )
    # ids must be integers in this data set
    df = (df.withColumn("user_id", F.when(F.col("user_id").rlike(r"^\d+$"), F.col("user_id")))
            .withColumn("item_id", F.when(F.col("item_id").rlike(r"^\d+$"), F.col("item_id")))
            .withColumn("ts", epoch_to_ts(F.when(F.col("ts_raw").rlike(r"^-?\d+$"), F.col("ts_raw")))))
    # items: the category seen with each item (first by file order is enough for content)
    items = (df.filter(F.col("reason").isNull() & F.col("item_id").isNotNull())
             .groupBy("item_id").agg(F.first("category", ignorenulls=True).alias("category"))
             .withColumn("raw", F.concat_ws(",", "item_id", "category"))
             .withColumn("price", F.lit(None).cast("double")).withColumn("price_raw", F.lit(None).cast("string"))
             .withColumn("reason", F.lit(None).cast("string")))
    return {"events": df.drop("category", "ts_raw"), "items": items, "users": None}


def read_movielens(spark, path: str) -> dict:
    """MovieLens ml-100k (u.data/u.item/u.user) or ml-1m (ratings.dat/movies.dat/users.dat)."""
    import pandas as pd
    from pyspark.sql import functions as F
    ev_file, sep, layout = movielens_layout(Path(need(path, "movielens")))
    root = ev_file.parent
    lines = _lines(spark, str(ev_file), "movielens")
    p = F.split(F.col("value"), sep if sep == "\t" else "::")
    ok = F.size(p) == 4
    events = lines.select(
        F.col("value").alias("raw"),
        F.when(ok, F.trim(p[0])).alias("user_id"), F.when(ok, F.trim(p[1])).alias("item_id"),
        F.when(ok & F.trim(p[2]).rlike(r"^[1-5]$"), F.concat(F.lit("rate_"), F.trim(p[2])))
         .when(ok, F.concat(F.lit("rating "), F.trim(p[2]))).alias("behavior"),
        epoch_to_ts(F.when(ok & F.trim(p[3]).rlike(r"^\d+$"), F.trim(p[3]))).alias("ts"),
        F.when(~ok, F.lit("malformed line: expected 4 fields")).alias("reason"),
    )
    if layout == "100k":
        it = pd.read_csv(root / "u.item", sep="|", header=None, encoding="latin-1", dtype=str)
        genres = it.iloc[:, 5:5 + len(ML_GENRES)].astype(int).to_numpy()
        raw_it = it.fillna("").astype(str).agg("|".join, axis=1)
        titles, dates = it[1].fillna(""), it[2].fillna("")
        years = pd.to_numeric(dates.str[-4:], errors="coerce")
        us = pd.read_csv(root / "u.user", sep="|", header=None, encoding="latin-1", dtype=str)
        users = pd.DataFrame({"user_id": us[0], "age": us[1], "gender": us[2], "occupation": us[3],
                              "raw": us.fillna("").agg("|".join, axis=1)})
        tags = [[g for g, f in zip(ML_GENRES, row) if f] for row in genres]
        ids = it[0]
    else:
        it = pd.read_csv(root / "movies.dat", sep="::", header=None, encoding="latin-1", dtype=str,
                         engine="python")
        raw_it = it.fillna("").astype(str).agg("::".join, axis=1)
        titles = it[1].fillna("")
        years = pd.to_numeric(titles.str.extract(r"\((\d{4})\)\s*$")[0], errors="coerce")
        tags = [g.split("|") if isinstance(g, str) else [] for g in it[2]]
        us = pd.read_csv(root / "users.dat", sep="::", header=None, encoding="latin-1", dtype=str,
                         engine="python")
        occ = pd.to_numeric(us[3], errors="coerce")
        users = pd.DataFrame({"user_id": us[0], "age": us[2].map(ML1M_AGE), "gender": us[1],
                              "occupation": [ML1M_OCCUPATION[int(o)] if o == o and 0 <= o < 21 else None
                                             for o in occ],
                              "raw": us.fillna("").agg("::".join, axis=1)})
        ids = it[0]
    titles = titles.str.replace(r"\s*\(\d{4}\)\s*$", "", regex=True)
    items = pd.DataFrame({"item_id": ids, "category": [t[0] if t else None for t in tags],
                          "title": titles, "year": years.astype("Int32"), "tags": tags, "raw": raw_it})
    items_df = (spark.createDataFrame(items, "item_id string, category string, title string, year int, "
                                             "tags array<string>, raw string")
                .withColumn("price", F.lit(None).cast("double"))
                .withColumn("price_raw", F.lit(None).cast("string"))
                .withColumn("reason", F.lit(None).cast("string")))
    users_df = spark.createDataFrame(users, "user_id string, age string, gender string, occupation string, "
                                            "raw string")
    users_df = (users_df.withColumn("age_bucket", users_df["age"] if layout == "1m" else age_bucket(F.col("age")))
                .drop("age").withColumn("reason", F.lit(None).cast("string")))
    return {"events": events, "items": items_df, "users": users_df}


def read_table(spark, path: str, mapping: dict, table: str, required: list[str], ts_unit: str = "s",
               tag_sep: str = "|", tz: str = "UTC"):
    """Any CSV / Parquet / Delta table, columns renamed by ``mapping`` (ours -> theirs). Timestamps
    without a zone (date-time strings without an offset, TIMESTAMP_NTZ and date columns) are
    wall-clock times in ``tz``; epoch numbers (in ``ts_unit``) and zoned values are instants."""
    from pyspark.sql import functions as F
    p = need(path, f"--{table}")
    kind = table_format(p, table)
    if kind in ("csv", "tsv"):
        df = spark.read.option("header", "true").option("sep", "\t" if kind == "tsv" else ",").csv(p)
    elif kind == "parquet":
        df = spark.read.parquet(p)
    else:
        df = spark.read.format("delta").load(p)
    if df.limit(1).count() == 0:
        raise GuimError(f"--{table} {path}: input is empty")
    cols = {ours: mapping.get(ours, ours) for ours in required}
    missing = [f"{ours} (column {theirs!r})" for ours, theirs in cols.items() if theirs not in df.columns]
    if missing:
        raise GuimError(f"--{table} {path}: missing column(s) {', '.join(missing)}; found {df.columns}. "
                        f"Map your column names in guim.yaml under ingest.mapping.{table}")
    extra = {o: t for o, t in mapping.items() if o not in cols and t in df.columns}
    raw = F.to_json(F.struct(*[F.col(f"`{c}`") for c in df.columns]))
    sel = [raw.alias("raw")] + [F.col(f"`{t}`").alias(o) for o, t in {**cols, **extra}.items()]
    out = df.select(*sel).withColumn("reason", F.lit(None).cast("string"))
    for c in ("user_id", "item_id"):
        if c in out.columns:
            out = out.withColumn(c, F.col(c).try_cast("string"))
    if "ts" in out.columns:
        t = dict(df.dtypes)[cols["ts"]]
        if t in ("timestamp_ntz", "date"):     # read as UTC by the session, then moved from tz to UTC
            out = out.withColumn("ts", F.to_utc_timestamp(F.col("ts").cast("timestamp"), tz))
        elif t == "timestamp":
            out = out.withColumn("ts", F.col("ts").cast("timestamp"))
        elif t == "string":
            text = F.trim(F.col("ts"))
            parsed = F.try_to_timestamp(text)
            zoned = text.rlike(r"(?i)\d:\d\d(:\d\d(\.\d+)?)?\s*(z|utc|gmt|[+-]\d\d(:?\d\d)?)$")
            out = out.withColumn("ts", F.coalesce(epoch_to_ts(F.col("ts"), ts_unit),
                                                  F.when(zoned, parsed).otherwise(F.to_utc_timestamp(parsed, tz))))
        else:
            out = out.withColumn("ts", epoch_to_ts(F.col("ts"), ts_unit))
    if "tags" in out.columns and dict(out.dtypes)["tags"] == "string":
        out = out.withColumn("tags", F.filter(F.split("tags", f"\\{tag_sep}" if len(tag_sep) == 1 else tag_sep),
                                              lambda x: F.trim(x) != ""))
    if table == "items":
        out = (out.withColumn("price_raw", F.col("price").cast("string") if "price" in out.columns else F.lit(None))
               .withColumn("price", F.col("price").try_cast("double") if "price" in out.columns else F.lit(None)))
    return out
