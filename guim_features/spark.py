"""The one Spark session factory: local mode with Delta by default, overridable for a cluster.

``get_spark(cfg)`` returns the active session if there is one (tests share a single session
across the suite), else builds one from ``cfg.spark``: master, driver memory, the Delta SQL
extension and catalog, the Delta jars from Maven matching the installed delta-spark (cached by
Ivy after the first start), quiet logs and no UI unless asked. :func:`stage_progress` shows the
running Spark stages on one terminal line.
"""
from __future__ import annotations

import os
import sys
import threading
import time
from contextlib import contextmanager
from pathlib import Path

from .config import SparkConfig
from .versions import delta_package

# Where the JVM's own output goes (Ivy's dependency report, log4j, the Python workers' stderr):
# None = this process's stdout/stderr; the ``guim`` command line points it at a log file in the
# workspace unless --verbose.
JVM_LOG: str | None = None


@contextmanager
def _output_to(path: str | None):
    """Point this process's stdout and stderr (file descriptors 1 and 2) at ``path`` while the block
    runs; a child process started inside it, the JVM, keeps writing there for its whole life."""
    if path is None:
        yield
        return
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    sys.stdout.flush()
    sys.stderr.flush()
    saved = os.dup(1), os.dup(2)
    try:
        with open(path, "ab") as f:
            os.dup2(f.fileno(), 1)
            os.dup2(f.fileno(), 2)
        yield
    finally:
        for fd, copy in zip((1, 2), saved):
            os.dup2(copy, fd)
            os.close(copy)


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
    with _output_to(JVM_LOG):
        spark = b.getOrCreate()
    spark.sparkContext.setLogLevel(cfg.log_level)
    return spark


def _stage_line(seen: dict) -> str:
    """One line on the running Spark stages ('' when none runs or no SparkContext is active);
    ``seen`` remembers when each stage was first seen, for its elapsed time."""
    context = sys.modules.get("pyspark.core.context") or sys.modules.get("pyspark.context")
    sc = getattr(getattr(context, "SparkContext", None), "_active_spark_context", None)
    if sc is None:
        return ""
    tracker = sc.statusTracker()
    stages = [i for i in map(tracker.getStageInfo, tracker.getActiveStageIds()) if i is not None]
    if not stages:
        return ""
    now = time.monotonic()
    first = min(seen.setdefault(i.stageId, now) for i in stages)
    done, total = sum(i.numCompletedTasks for i in stages), sum(i.numTasks for i in stages)
    name = stages[0].name.split(" at ")[0]
    return (f"spark: stage {stages[0].stageId} ({name})" + (f" +{len(stages) - 1}" if len(stages) > 1 else "")
            + f": {done}/{total} tasks, {now - first:.0f}s")


@contextmanager
def stage_progress(stream=None, every: float = 0.5):
    """While the block runs, keep one status line on ``stream`` (default stderr) showing the running
    Spark stages, their finished/total tasks and time; the line is cleared when no stage runs.
    Only on a terminal: logs and captured output get nothing."""
    stream = stream or sys.stderr
    if not stream.isatty():
        yield
        return
    stop, seen = threading.Event(), {}

    def loop():
        width = 0
        while not stop.wait(every):
            try:
                line = _stage_line(seen)[:100]
            except Exception:           # the context stopped between two calls: nothing to show
                line = ""
            if line or width:
                stream.write("\r" + line.ljust(width) + ("" if line else "\r"))
                stream.flush()
                width = len(line)
        if width:
            stream.write("\r" + " " * width + "\r")
            stream.flush()

    thread = threading.Thread(target=loop, name="spark-progress", daemon=True)
    thread.start()
    try:
        yield
    finally:
        stop.set()
        thread.join()


def ensure_sql_defaults(spark):
    """Undo session-wide settings other libraries leave behind. Feast's Spark offline store sets
    spark.sql.parser.quotedRegexColumnNames=true on the shared session (it sets it again whenever
    it runs), which breaks Delta's stats-based aggregates in our jobs."""
    spark.conf.set("spark.sql.parser.quotedRegexColumnNames", "false")
    return spark
