"""``guim ingest``: raw logs -> bronze Delta tables ``events``, ``items``, ``users``, ``quarantine``.

Extract (a reader per source) -> validate (pure transforms in :mod:`.sources`) -> load (Delta MERGE
on natural keys, so ingesting the same input twice adds nothing). Bad rows never stop the run and
never vanish: they land in ``quarantine`` with the source, the raw row and the reason.

    guim ingest                                   # synthetic Taobao-like default
    guim ingest --source movielens --path ../shared/data/ml-100k
    guim ingest --source taobao --path UserBehavior.csv
    guim ingest --source table --events ev.parquet --items items.csv   # columns mapped in guim.yaml
"""
from __future__ import annotations

import time
from pathlib import Path

from ..config import Config, ConfigError
from ..errors import GuimError

EVENT_COLS = ["user_id", "item_id", "behavior", "ts"]


def time_bounds(c) -> tuple[str, str]:
    """``ingest.min_ts`` and ``ingest.max_ts`` as UTC instants in ISO form; a value written without an
    offset is wall-clock time in ``ingest.timezone`` (e.g. Taobao UserBehavior's window, which is
    in Beijing time). Raises ConfigError naming a bad key."""
    import datetime as dt

    zone = time_zone(c)
    out = []
    for key in ("min_ts", "max_ts"):
        value = getattr(c, key)
        try:
            t = dt.datetime.fromisoformat(value.strip())
        except ValueError:
            raise ConfigError(f"ingest.{key}={value!r}: expected YYYY-MM-DD[ HH:MM:SS][+HH:MM]") from None
        t = t if t.tzinfo else t.replace(tzinfo=zone)
        out.append(t.astimezone(dt.timezone.utc).isoformat(sep=" "))
    return out[0], out[1]


def time_zone(c):
    """``ingest.timezone`` as a ZoneInfo, or a ConfigError naming it."""
    from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

    try:
        return ZoneInfo(c.timezone)
    except (ZoneInfoNotFoundError, ValueError):
        raise ConfigError(f"ingest.timezone={c.timezone!r}: not a known time zone (e.g. UTC, "
                          "Asia/Shanghai, Europe/Berlin)") from None


def _synthetic(spark, cfg: Config, users: int, items: int) -> dict:
    """Generate with numpy, stage as Parquet (µs timestamps) and read back with Spark."""
    import pyarrow as pa
    import pyarrow.parquet as pq
    from pyspark.sql import functions as F

    from .synthetic import generate

    c = cfg.ingest
    data = generate(users=users, items=items, events_per_user=c.events_per_user, categories=c.categories,
                    days=c.days, seed=c.seed, start_date=c.start_date)
    stage = Path(cfg.resolve("staging")) / f"synthetic_u{users}_i{items}_s{c.seed}"
    stage.mkdir(parents=True, exist_ok=True)
    out = {}
    for name, df in (("events", data.events), ("items", data.items), ("users", data.users)):
        t = pa.Table.from_pandas(df, preserve_index=False)
        if name == "items":
            t = t.set_column(t.schema.get_field_index("image"), "image",
                             t.column("image").cast(pa.list_(pa.float32())))
        pq.write_table(t, stage / f"{name}.parquet", coerce_timestamps="us", allow_truncated_timestamps=True)
        sdf = spark.read.parquet(str(stage / f"{name}.parquet"))
        sdf = (sdf.withColumn("raw", F.to_json(F.struct(*[F.col(x) for x in sdf.columns])))
               .withColumn("reason", F.lit(None).cast("string")))
        if name == "items":
            sdf = sdf.withColumn("price_raw", F.col("price").cast("string"))
        out[name] = sdf
    return out


def check_inputs(cfg: Config, args) -> str:
    """Check what can be checked without Spark — the source name, its paths and formats, the time
    bounds and zone — so a mistake is reported at once, not after Spark's start. Returns the source."""
    from . import sources as S

    time_bounds(cfg.ingest)
    src = getattr(args, "source", None) or cfg.ingest.source
    if src == "taobao":
        S.need(args.path, "taobao")
    elif src == "movielens":
        S.movielens_layout(Path(S.need(args.path, "movielens")))
    elif src == "table":
        if not getattr(args, "events", None):
            raise GuimError("--source table needs --events PATH (and optionally --items, --users)")
        for table in ("events", "items", "users"):
            if getattr(args, table, None):
                S.table_format(S.need(getattr(args, table), f"--{table}"), table)
    elif src != "synthetic":
        raise GuimError(f"unknown source {src!r}; use synthetic, taobao, movielens or table")
    return src


def read_source(spark, cfg: Config, args) -> tuple[str, dict]:
    """(source label, {'events'|'items'|'users': candidate DataFrame or None})."""
    from . import sources as S

    src = check_inputs(cfg, args)
    if src == "synthetic":
        users = getattr(args, "num_users", None) or cfg.ingest.users
        items = getattr(args, "num_items", None) or cfg.ingest.items
        return f"synthetic:seed={cfg.ingest.seed}", _synthetic(spark, cfg, users, items)
    if src == "taobao":
        return f"taobao:{Path(args.path).name if args.path else ''}", S.read_taobao(spark, args.path)
    if src == "movielens":
        return f"movielens:{Path(args.path).name if args.path else ''}", S.read_movielens(spark, args.path)
    if src == "table":
        m, c = cfg.ingest.mapping, cfg.ingest
        opts = (c.timestamp_unit, c.tag_separator, c.timezone)
        out = {"events": S.read_table(spark, args.events, m.get("events", {}), "events", EVENT_COLS, *opts)}
        item_opt = ["category", "brand", "shop", "price", "year", "title", "tags", "image"]
        user_opt = ["age_bucket", "gender", "occupation", "purchase_power"]
        out["items"] = (S.read_table(spark, args.items, {**{k: k for k in item_opt}, **m.get("items", {})},
                                     "items", ["item_id"], *opts) if args.items else None)
        out["users"] = (S.read_table(spark, args.users, {**{k: k for k in user_opt}, **m.get("users", {})},
                                     "users", ["user_id"], *opts) if args.users else None)
        return f"table:{Path(args.events).name}", out


def ingest(spark, cfg: Config, source: str, frames: dict, quiet: bool = False) -> dict:
    """Validate the candidate frames and MERGE them into bronze. Returns counts per table/reason."""
    from pyspark import StorageLevel
    from pyspark.sql import functions as F

    from .. import delta
    from ..spark import ensure_sql_defaults
    from . import sources as S

    ensure_sql_defaults(spark)

    min_ts, max_ts = time_bounds(cfg.ingest)
    checks = {"events": lambda d: S.with_event_id(S.validate_events(d, cfg.ingest.behaviors, min_ts, max_ts)),
              "items": S.validate_items, "users": S.validate_users}
    keys = {"events": ["event_id"], "items": ["item_id"], "users": ["user_id"]}
    report: dict = {"source": source, "tables": {}, "quarantined": {}}
    for table in ("items", "users", "events"):
        df = frames.get(table)
        if df is None:
            continue
        if table == "events":  # input order, the tie-break for equal timestamps
            df = df.withColumn("ord", F.monotonically_increasing_id())
        v = checks[table](df).persist(StorageLevel.MEMORY_AND_DISK)
        counts = {r["reason"]: r["count"] for r in v.groupBy("reason").count().collect()}
        good, bad = S.split_accepted(v, source, table)
        m = delta.merge_insert(spark, good, cfg.table(table), table, keys[table], update=table != "events")
        accepted = counts.pop(None, 0)
        if counts:
            delta.merge_insert(spark, bad, cfg.table("quarantine"), "quarantine", ["row_id"])
        v.unpersist()
        report["tables"][table] = {"accepted": accepted, **m}
        for reason, n in counts.items():
            report["quarantined"][f"{table}: {reason}"] = n
    if not quiet:
        print(format_report(report))
    return report


def format_report(r: dict) -> str:
    lines = [f"ingest from {r['source']}:"]
    for t, c in r["tables"].items():
        lines.append(f"  {t:<7} accepted {c['accepted']:>10,}  (new {c['inserted']:,}, updated {c['updated']:,})")
    total_q = sum(r["quarantined"].values())
    lines.append(f"  quarantined {total_q:,} row(s)" + (":" if total_q else ""))
    for reason, n in sorted(r["quarantined"].items(), key=lambda kv: -kv[1]):
        lines.append(f"    {n:>10,}  {reason}")
    return "\n".join(lines)


def run(cfg: Config, args) -> int:
    from ..spark import get_spark

    t0 = time.time()
    check_inputs(cfg, args)
    spark = get_spark(cfg.spark)
    source, frames = read_source(spark, cfg, args)
    ingest(spark, cfg, source, frames)
    print(f"bronze tables in {cfg.table('')} ({time.time() - t0:.1f}s)")
    return 0
