"""Benchmark `guim sequences`: synthetic inputs of 1M, 4M and 16M events,
local Spark with 2 cores; prints events/s per size and the 16M/1M time ratio.

    python bench/sequences.py                 # sizes 1M 4M 16M, workspaces under /tmp/guim_bench_seq
    python bench/sequences.py --sizes 1 4     # millions of events

Ingest is run first (not timed in the table, but printed); the timed part is a full build of
every silver table from bronze. Aims: >= 150k events/s; 16M/1M time ratio <= 20.
"""
from __future__ import annotations

import argparse
import shutil
import time
from pathlib import Path
from types import SimpleNamespace

from guim_features import sequences
from guim_features.config import load_config
from guim_features.ingest import ingest, read_source
from guim_features.spark import get_spark

EVENTS_PER_USER = 60


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--sizes", type=float, nargs="+", default=[1, 4, 16], help="millions of events")
    p.add_argument("--root", default="/tmp/guim_bench_seq")
    p.add_argument("--driver-memory", default="10g")
    a = p.parse_args()
    rows = []
    spark = None
    for m in a.sizes:
        ws = Path(a.root) / f"{m:g}M"
        shutil.rmtree(ws, ignore_errors=True)
        users = int(m * 1e6 / EVENTS_PER_USER)
        items = max(1000, users // 4)
        cfg = load_config(ws, [f"ingest.users={users}", f"ingest.items={items}",
                               f"ingest.events_per_user={EVENTS_PER_USER}", "ingest.categories=100",
                               f"spark.driver_memory={a.driver_memory}", "spark.shuffle_partitions=8"])
        spark = spark or get_spark(cfg.spark)
        t0 = time.time()
        rep = ingest(spark, cfg, *read_source(spark, cfg, SimpleNamespace(source="synthetic", num_users=None,
                                                                          num_items=None)), quiet=True)
        t_ingest = time.time() - t0
        n = rep["tables"]["events"]["accepted"]
        t0 = time.time()
        sequences.main(cfg, spark=spark, full=True, quiet=True)
        t_seq = time.time() - t0
        rows.append((m, n, users, items, t_ingest, t_seq))
        print(f"{m:g}M: {n:,} events, {users:,} users, {items:,} items: ingest {t_ingest:.1f}s, "
              f"sequences {t_seq:.1f}s = {n / t_seq:,.0f} events/s", flush=True)
    print("\n| events | users | items | ingest s | sequences s | sequences events/s |")
    print("| ---: | ---: | ---: | ---: | ---: | ---: |")
    for m, n, u, i, ti, ts in rows:
        print(f"| {n:,} | {u:,} | {i:,} | {ti:.1f} | {ts:.1f} | {n / ts:,.0f} |")
    if len(rows) > 1:
        print(f"\ntime ratio {rows[-1][0]:g}M / {rows[0][0]:g}M: {rows[-1][5] / rows[0][5]:.1f} "
              f"(events ratio {rows[-1][1] / rows[0][1]:.1f})")


if __name__ == "__main__":
    main()
