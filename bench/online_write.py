"""Online write throughput of the user view (K x d floats + weights + model_version), per path and store.

    python bench/online_write.py [--users 20000] [--K 4] [--d 64] [--stores sqlite,redis]
                                 [--paths feast_write,feast_write_x2,fast,feast] [--chunk 5000]
                                 [--feast-rows 2000] [--profile] [--out results.json]

Paths (``publish.materialize``, see guim_features/materialize.py):

- ``feast_write``: Feast's public ``FeatureStore.write_to_online_store`` in chunks of ``--chunk`` rows;
- ``feast_write_xP``: the same split over P processes, each with its own ``FeatureStore`` writing a
  slice (wall time includes starting them);
- ``fast``: the opt-in vectorised writer (guim_features/materialize_fast.py);
- ``feast``: ``FeatureStore.materialize`` over ``--feast-rows`` rows (it re-reads the offline Parquet).

Each path writes fresh rows into an empty store (a new SQLite file; a flushed throw-away
``redis-server``). Prints user rows/s of wall time, rows per CPU-second (this process, its worker
processes and the redis-server together: what the path costs on free cores) and the 1-minute load
average before and after each timing (the machine is shared: read the wall figures with it). ``--profile`` prints where the time of the
public path goes (cProfile over 2,000 rows, top functions by internal time).
"""
from __future__ import annotations

import argparse
import json
import multiprocessing
import os
import shutil
import sys
import tempfile
import time
from contextlib import nullcontext
from datetime import datetime, timezone
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))


def gold_users(n: int, K: int, d: int, seed: int = 0):
    """A random gold user_embeddings snapshot (pyarrow), model version 'bench'."""
    import pyarrow as pa

    from guim_features.views import nested_lists

    rng = np.random.default_rng(seed)
    inter = rng.normal(size=(n, K, d)).astype(np.float32)                    # (N, K, d)
    w = rng.dirichlet(np.ones(K), size=n).astype(np.float32)                 # (N, K)
    ts = datetime(2026, 1, 1, tzinfo=timezone.utc)
    return pa.table({
        "user_id": [f"u{i}" for i in range(n)], "interests": nested_lists(inter, d, K), "weights": nested_lists(w, K),
        "model_version": ["bench"] * n,
        "event_timestamp": pa.array([ts] * n, pa.timestamp("us", tz="UTC")),
        "snapshot_date": pa.array([ts.date()] * n, pa.date32())})


def gold_items(n: int, d: int):
    import pyarrow as pa

    from guim_features.views import nested_lists

    return pa.table({"item_id": [f"i{i}" for i in range(n)], "vector": nested_lists(np.eye(n, d, dtype=np.float32), d),
                     "model_version": ["bench"] * n,
                     "event_timestamp": pa.array([datetime(1970, 1, 1, tzinfo=timezone.utc)] * n,
                                                 pa.timestamp("us", tz="UTC")),
                     "snapshot_date": pa.array([datetime(1970, 1, 1).date()] * n, pa.date32())})


def make_store(folder: Path, kind: str, conn: str, users, K: int, d: int):
    """A fresh applied Feast repo (sources: ``users``) in ``folder``; returns (store, repo)."""
    import pyarrow.dataset as ds

    from guim_features import publish
    from guim_features.config import load_config

    sets = [f"publish.online_store={kind}"] + ([f"publish.redis={conn}"] if kind == "redis" else [])
    cfg = load_config(folder, sets)
    repo, _ = publish.write_repo(cfg, K, d, "bench", ds.dataset(users), ds.dataset(gold_items(4, d)))
    store = publish.feast_apply(repo, staged_config=True)
    publish.commit_repo(repo)
    return store, repo


def _worker(repo: str, users, K: int, chunk: int) -> tuple[float, float]:
    """One process of feast_write_xP: (wall, CPU) seconds of its write, start-up excluded."""
    from feast import FeatureStore

    from guim_features import materialize

    store = FeatureStore(repo_path=repo)
    t0, c0 = time.perf_counter(), time.process_time()
    materialize.write_users(store, users, K, chunk)
    return time.perf_counter() - t0, time.process_time() - c0


def _server_cpu(conn: str) -> float:
    """CPU seconds the redis-server has used so far (0 for SQLite: it runs in this process)."""
    if not conn:
        return 0.0
    import redis

    host, port = conn.rsplit(":", 1)
    info = redis.Redis(host=host, port=int(port)).info("cpu")
    return info["used_cpu_user"] + info["used_cpu_sys"]


def time_path(path: str, store, repo: Path, users, args, conn: str = "") -> dict:
    """Wall and CPU time of one path. CPU seconds (this process, its workers, the redis-server)
    say what the path costs on free cores; wall time what it took on the shared machine."""
    from guim_features import materialize

    load = os.getloadavg()[0]
    t0, c0, s0 = time.perf_counter(), time.process_time(), _server_cpu(conn)
    extra = {}
    if path == "feast_write":
        materialize.write_users(store, users, args.K, args.chunk)
        n = users.num_rows
    elif path.startswith("feast_write_x"):
        p = int(path[len("feast_write_x"):])
        bounds = np.linspace(0, users.num_rows, p + 1).astype(int)
        ctx = multiprocessing.get_context("spawn")
        with ctx.Pool(p) as pool:
            times = pool.starmap(_worker, [(str(repo), users.slice(a, b - a), args.K, args.chunk)
                                           for a, b in zip(bounds[:-1], bounds[1:])])
        n = users.num_rows
        extra = {"write_wall_s": max(w for w, _ in times), "worker_cpu_s": sum(c for _, c in times)}
    elif path == "fast":
        from guim_features import materialize_fast

        n = materialize_fast.write_users(store, users, args.K)
    elif path == "feast":
        store.materialize(start_date=datetime(2025, 12, 31, tzinfo=timezone.utc),
                          end_date=datetime(2026, 1, 2, tzinfo=timezone.utc), feature_views=["user_interests"])
        n = users.num_rows
    else:
        raise SystemExit(f"unknown path {path!r}")
    s = time.perf_counter() - t0
    cpu = time.process_time() - c0 + extra.get("worker_cpu_s", 0.0) + _server_cpu(conn) - s0
    return {"rows": n, "seconds": s, "rows_per_s": n / s, "cpu_s": cpu, "rows_per_cpu_s": n / cpu,
            "load_before": load, "load_after": os.getloadavg()[0], **extra}


def profile_public(store, users, K: int) -> None:
    import cProfile
    import pstats

    from guim_features import materialize

    prof = cProfile.Profile()
    prof.enable()
    materialize.write_users(store, users, K)
    prof.disable()
    pstats.Stats(prof).sort_stats("tottime").print_stats(18)


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--users", type=int, default=20_000)
    p.add_argument("--K", type=int, default=4)
    p.add_argument("--d", type=int, default=64)
    p.add_argument("--stores", default="sqlite,redis")
    p.add_argument("--paths", default="feast_write,feast_write_x2,fast,feast")
    p.add_argument("--chunk", type=int, default=5000, help="rows per write_to_online_store call")
    p.add_argument("--feast-rows", type=int, default=2000, dest="feast_rows", help="rows for FeatureStore.materialize")
    p.add_argument("--profile", action="store_true")
    p.add_argument("--out")
    args = p.parse_args(argv)
    import redis

    from guim_features.redis_store import redis_server

    users = gold_users(args.users, args.K, args.d)
    root = Path(tempfile.mkdtemp(prefix="guim_online_bench_"))
    results = {"setup": vars(args), "cpus": os.cpu_count()}
    try:
        for kind in args.stores.split(","):
            with (redis_server() if kind == "redis" else nullcontext("")) as conn:
                for path in args.paths.split(","):
                    rows = users.slice(0, args.feast_rows) if path == "feast" else users
                    store, repo = make_store(root / f"{kind}_{path}", kind, conn, rows, args.K, args.d)
                    if kind == "redis":
                        host, port = conn.rsplit(":", 1)
                        redis.Redis(host=host, port=int(port)).flushall()
                    results[f"{kind}/{path}"] = r = time_path(path, store, repo, rows, args, conn)
                    inner = (f", {r['rows'] / r['write_wall_s']:,.0f} rows/s without process start-up"
                             if "write_wall_s" in r else "")
                    print(f"{kind:6} {path:15} {r['rows']:>7,} rows {r['rows_per_s']:>9,.0f} rows/s wall"
                          f"{inner}, {r['rows_per_cpu_s']:>9,.0f} rows per CPU-second "
                          f"(load {r['load_before']:.2f} -> {r['load_after']:.2f})", flush=True)
                if args.profile:
                    store, _ = make_store(root / f"{kind}_profile", kind, conn, users, args.K, args.d)
                    print(f"\n-- {kind}: where Feast's public write spends its time (2,000 rows) --")
                    profile_public(store, users.slice(0, 2000), args.K)
    finally:
        shutil.rmtree(root, ignore_errors=True)
    print(f"\nuptime load averages at the end: {os.getloadavg()}; {os.cpu_count()} CPUs")
    if args.out:
        Path(args.out).write_text(json.dumps(results, indent=1, default=str))
    return 0


if __name__ == "__main__":
    sys.exit(main())
