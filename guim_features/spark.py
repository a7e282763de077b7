"""The one Spark session factory: local mode with Delta by default, overridable for a cluster.

``get_spark(cfg)`` returns the active session if there is one (tests share a single session
across the suite), else builds one from ``cfg.spark``: master, driver memory, the Delta SQL
extension and catalog, the Delta jars from Maven matching the installed delta-spark (cached by
Ivy after the first start), quiet logs and no UI unless asked.
"""
from __future__ import annotations

import os
import sys

from .config import SparkConfig
from .versions import delta_package


def get_spark(cfg: SparkConfig | None = None):
    """The active SparkSession, or a new one configured from ``cfg`` (defaults if None)."""
    from pyspark.sql import SparkSession

    active = SparkSession.getActiveSession()
    if active is not None:
        return ensure_sql_defaults(active)
    cfg = cfg or SparkConfig()
    # Workers must run the same Python as the driver (pyenv/venv installs otherwise diverge).
    os.environ.setdefault("PYSPARK_PYTHON", sys.executable)
    os.environ.setdefault("PYSPARK_DRIVER_PYTHON", sys.executable)
    if cfg.master.startswith("local"):
        os.environ.setdefault("SPARK_LOCAL_IP", "127.0.0.1")
    submitted = "PYSPARK_GATEWAY_PORT" in os.environ  # under spark-submit: its master and jars win
    b = SparkSession.builder if submitted else SparkSession.builder.master(cfg.master)
    b = (b.appName(cfg.app_name)
         .config("spark.sql.extensions", "io.delta.sql.DeltaSparkSessionExtension")
         .config("spark.sql.catalog.spark_catalog", "org.apache.spark.sql.delta.catalog.DeltaCatalog")
         .config("spark.driver.memory", cfg.driver_memory)
         .config("spark.sql.shuffle.partitions", str(cfg.shuffle_partitions))
         # Delta rebuilds table state with this many partitions (default 50: slow on small tables)
         .config("spark.databricks.delta.snapshotPartitions", str(cfg.shuffle_partitions))
         .config("spark.sql.adaptive.enabled", "true")
         .config("spark.ui.enabled", str(cfg.ui).lower())
         .config("spark.ui.showConsoleProgress", "false")
         .config("spark.sql.session.timeZone", "UTC")
         .config("spark.sql.execution.arrow.pyspark.enabled", "true")
         .config("spark.databricks.delta.schema.autoMerge.enabled", "false")
         .config("spark.driver.extraJavaOptions", "-Duser.timezone=UTC")
         .config("spark.executor.extraJavaOptions", "-Duser.timezone=UTC"))
    if (jars := delta_package(cfg.delta_package)) and not submitted:
        b = b.config("spark.jars.packages", jars)
    for k, v in cfg.conf.items():
        b = b.config(k, str(v))
    spark = b.getOrCreate()
    spark.sparkContext.setLogLevel(cfg.log_level)
    return spark


def ensure_sql_defaults(spark):
    """Undo session-wide settings other libraries leave behind. Feast's Spark offline store sets
    spark.sql.parser.quotedRegexColumnNames=true on the shared session (it sets it again whenever
    it runs), which breaks Delta's stats-based aggregates in our jobs."""
    spark.conf.set("spark.sql.parser.quotedRegexColumnNames", "false")
    return spark
