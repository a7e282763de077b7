"""Delta Lake writes shared by the Spark jobs: idempotent MERGEs and overwrites, schema from schemas.py."""
from __future__ import annotations

from . import schemas


def exists(spark, path: str) -> bool:
    from delta.tables import DeltaTable
    return DeltaTable.isDeltaTable(spark, path)


def not_found(path: str, table: str | None):
    """The GuimError for a missing table, naming the stage that writes it."""
    from .errors import GuimError
    hint = {"events": "guim ingest", "items": "guim ingest", "users": "guim ingest"}.get(
        table or "", "guim sequences" if table in schemas.SILVER else "the previous stage")
    return GuimError(f"Delta table {table or ''} not found at {path}; run `{hint}` first")


def require(path: str, table: str) -> None:
    """Raise :func:`not_found` for a local table that does not exist, without starting Spark
    (a URI is checked when it is read)."""
    from pathlib import Path
    if "://" not in path and not (Path(path) / "_delta_log").is_dir():
        raise not_found(path, table)


def read(spark, path: str, table: str | None = None):
    """Read a Delta table; a missing one raises GuimError naming the stage that writes it."""
    if not exists(spark, path):
        raise not_found(path, table)
    return spark.read.format("delta").load(path)


def conform(df, table: str):
    """Select and cast ``df``'s columns to the declared schema of ``table`` (missing ones as null)."""
    from pyspark.sql import functions as F
    out = []
    for f in schemas.spark_schema(table).fields:
        col = F.col(f.name) if f.name in df.columns else F.lit(None)
        out.append(col.cast(f.dataType).alias(f.name))
    return df.select(*out)


def merge_insert(spark, df, path: str, table: str, keys: list[str], update: bool = False) -> dict:
    """MERGE ``df`` into the table on ``keys``: insert new keys; with ``update``, rewrite rows whose
    content changed. Creates the table on first use. Returns {'inserted': n, 'updated': n}."""
    from delta.tables import DeltaTable
    df = conform(df, table).dropDuplicates(keys)
    if not exists(spark, path):
        df.write.format("delta").mode("append").save(path)
        return _metrics(spark, path, first=True)
    before = version(spark, path)
    t = DeltaTable.forPath(spark, path)
    cond = " AND ".join(f"t.`{k}` = s.`{k}`" for k in keys)
    m = t.alias("t").merge(df.alias("s"), cond)
    if update:
        changed = " OR ".join(f"NOT (t.`{c}` <=> s.`{c}`)" for c in schemas.columns(table)
                              if c not in keys and c != "source")
        m = m.whenMatchedUpdateAll(condition=changed)
    m.whenNotMatchedInsertAll().execute()
    if version(spark, path) == before:      # a MERGE that changes nothing makes no commit
        return {"inserted": 0, "updated": 0}
    return _metrics(spark, path)


def _metrics(spark, path: str, first: bool = False) -> dict:
    from delta.tables import DeltaTable
    h = DeltaTable.forPath(spark, path).history(1).collect()[0]
    m = h["operationMetrics"] or {}
    if first:
        return {"inserted": int(m.get("numOutputRows", 0)), "updated": 0}
    return {"inserted": int(m.get("numTargetRowsInserted", 0)), "updated": int(m.get("numTargetRowsUpdated", 0))}


def append(df, path: str, table: str) -> int:
    """Append the rows of ``df`` (computed once); creates the table, skips the commit when empty."""
    rows = conform(df, table).persist()
    n = rows.count()
    if n or not exists(rows.sparkSession, path):
        rows.write.format("delta").mode("append").save(path)
    rows.unpersist()
    return n


def overwrite(df, path: str, table: str) -> None:
    """Replace the table's content (one new Delta version; history kept for time travel)."""
    conform(df, table).write.format("delta").mode("overwrite").option("overwriteSchema", "true").save(path)


def version(spark, path: str) -> int:
    from delta.tables import DeltaTable
    return int(DeltaTable.forPath(spark, path).history(1).collect()[0]["version"])


def changed_since(spark, path: str, since: int) -> bool:
    """Whether any commit after version ``since`` added, changed or removed rows (no-op MERGEs
    of a re-ingest still create versions; they do not count)."""
    from delta.tables import DeltaTable
    hist = DeltaTable.forPath(spark, path).history().where(f"version > {since}").collect()
    merge_keys = ("numTargetRowsInserted", "numTargetRowsUpdated", "numTargetRowsDeleted")
    for h in hist:
        m = h["operationMetrics"] or {}
        if h["operation"] == "MERGE" and all(k in m for k in merge_keys):
            if any(int(m[k]) for k in merge_keys):
                return True
        elif h["operation"] != "SET TBLPROPERTIES":
            return True                 # writes, deletes, overwrites: assume changed
    return False
