"""Benchmark as-of exports and publishing over a long gold history.

    python bench/backfill.py                        # 100k synthetic users, 30 daily snapshots
    python bench/backfill.py --users 20000 --days 10
    python bench/backfill.py --publish-before /tmp/guim_old   # also time an older checkout's publish

Steps (local[2], one shared Spark session; workspaces under --root):
1. a model: the default GUIM (K = 4, d = 64, L = 50) trained one epoch on the 2,000-user synthetic
   default and registered (its quality does not matter here, only its inference cost);
2. a 100k-user synthetic log with the same 1,000 items (same item index), bronze + silver;
3. **backfill**: ``guim embed --backfill 2026-01-02 2026-01-31 --every 1d`` as one Spark job. Prints
   user-snapshots/s — (user, as-of) pairs with history before the as-of instant, each of which the
   point-in-time join resolves (a user unchanged since the previous day keeps that row) — and the
   rows actually encoded and written per second;
4. **publish** of that history (the newest snapshot per user, the file offline source of the
   version) in a child process: seconds and peak RSS; with ``--publish-before DIR``, the same with
   the ``guim_features`` found in DIR (an older checkout) for comparison;
5. **daily run**: on a fresh gold table, as of 2026-01-30 (every user), then as of 2026-01-31
   (only users with events on 2026-01-30): rows written and seconds of each.
Aim: >= 5,000 user-snapshots/s on a 2-core laptop-class machine.
"""
from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

from guim_features import export, sequences
from guim_features.config import load_config
from guim_features.ingest import ingest, read_source
from guim_features.spark import get_spark

SOURCE = dict(source="synthetic", path=None, events=None, items=None, users=None, num_users=None, num_items=None)
PUBLISH = """
import resource, sys, time, argparse
sys.path.insert(0, {path!r})
from guim_features import publish
from guim_features.config import load_config
t = time.perf_counter()
publish.run(load_config({ws!r}), argparse.Namespace(model_version=None))
print("PUBLISH", time.perf_counter() - t, resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20)
"""


def _bronze_silver(spark, cfg) -> None:
    from types import SimpleNamespace

    ingest(spark, cfg, *read_source(spark, cfg, SimpleNamespace(**SOURCE)))
    sequences.main(cfg, spark=spark, quiet=True)


def _covered(spark, cfg, times) -> int:
    """(user, as-of) pairs with at least one event before the as-of instant."""
    from pyspark.sql import functions as F

    first = spark.read.format("delta").load(cfg.table("events")).groupBy("user_id").agg(
        F.min(F.unix_seconds("ts")).alias("t0")).toPandas()["t0"].to_numpy()
    return int(sum((first < int(t.timestamp())).sum() for t in times))


def _publish(ws: Path, path: str) -> tuple[float, float]:
    out = subprocess.run([sys.executable, "-c", PUBLISH.format(path=path, ws=str(ws))], capture_output=True,
                         text=True, env={**os.environ, "PYTHONWARNINGS": "ignore"})
    line = [x for x in out.stdout.splitlines() if x.startswith("PUBLISH")]
    if not line:
        raise SystemExit(f"publish with {path} failed:\n{out.stdout[-2000:]}\n{out.stderr[-3000:]}")
    _, secs, gib = line[0].split()
    return float(secs), float(gib)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--users", type=int, default=100_000)
    p.add_argument("--days", type=int, default=30, help="daily as-of snapshots, from 2026-01-02")
    p.add_argument("--root", default="/tmp/guim_bench_backfill")
    p.add_argument("--publish-before", help="a folder holding an older guim_features to compare publish with")
    p.add_argument("--keep", action="store_true", help="reuse the model and bronze/silver of a previous run")
    a = p.parse_args()
    root = Path(a.root)
    load0 = os.getloadavg()
    spark = get_spark(load_config(root / "model").spark)

    # 1. the model
    model_ws = root / "model"
    if not (a.keep and (model_ws / "mlflow.db").exists()):
        shutil.rmtree(model_ws, ignore_errors=True)
        from guim_features.train import train_model

        mcfg = load_config(model_ws, ["train.epochs=1"])
        _bronze_silver(spark, mcfg)
        train_model(mcfg, progress=False)
    tracking = f"sqlite:///{(model_ws / 'mlflow.db').resolve()}"

    # 2. the big log
    ws = root / "big"
    sets = [f"ingest.users={a.users}", "ingest.items=1000", f"paths.mlflow_tracking_uri={tracking}"]
    if not (a.keep and (ws / "lakehouse" / "item_features").exists()):
        shutil.rmtree(ws, ignore_errors=True)
        _bronze_silver(spark, load_config(ws, sets))
    cfg = load_config(ws, sets)
    n_events = spark.read.format("delta").load(cfg.table("events")).count()
    for t in ("user_embeddings", "item_embeddings"):
        shutil.rmtree(cfg.table(t), ignore_errors=True)

    # 3. backfill
    times = export.as_of_times(None, ("2026-01-02", f"2026-01-{1 + a.days:02d}"), "1d")
    res = export.export(cfg, times=times, spark=spark)
    covered = _covered(spark, cfg, times)
    secs = res["user_seconds"]
    report = {"users": a.users, "events": n_events, "as_of_times": len(times), "user_snapshots": covered,
              "rows_written": res["user_rows"], "backfill_s": round(secs, 1),
              "user_snapshots_per_s": round(covered / secs), "rows_per_s": round(res["user_rows"] / secs)}

    # 4. publish over that history
    report["publish_s"], report["publish_peak_gib"] = _publish(ws, str(Path(__file__).resolve().parents[1]))
    if a.publish_before:
        report["publish_before_s"], report["publish_before_peak_gib"] = _publish(ws, a.publish_before)

    # 5. a full as-of run, then the next day's incremental one
    for t in ("user_embeddings", "item_embeddings"):
        shutil.rmtree(cfg.table(t), ignore_errors=True)
    full = export.export(cfg, times=export.as_of_times(["2026-01-30"]), spark=spark)
    inc = export.export(cfg, times=export.as_of_times(["2026-01-31"]), spark=spark)
    report.update({"full_rows": full["user_rows"], "full_s": round(full["user_seconds"], 1),
                   "incremental_rows": inc["user_rows"], "incremental_s": round(inc["user_seconds"], 1)})
    report["load_average_before"] = [round(x, 2) for x in load0]
    report["load_average_after"] = [round(x, 2) for x in os.getloadavg()]
    print(json.dumps(report, indent=1))
    print(f"\nbackfill: {covered:,} user-snapshots ({res['user_rows']:,} rows encoded and written) for "
          f"{a.users:,} users x {len(times)} days in {secs:.0f}s: {covered / secs:,.0f} user-snapshots/s, "
          f"{res['user_rows'] / secs:,.0f} rows/s (aim >= 5,000 user-snapshots/s)")


if __name__ == "__main__":
    main()
