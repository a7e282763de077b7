"""Serving benchmark: online lookup + multi-interest retrieval.

    python bench/serving.py [--items 100000] [--users 20000] [--lookups 2000] [--k 20] [--K 4] [--d 64]
                            [--seen 0] [--seen-near 0] [--redis HOST:PORT] [--vectors clustered|uniform]
                            [--out results.json]

Unit-norm vectors: ``clustered`` (default; items around 200 random centres, user interests near
items, as trained embeddings are) or ``uniform`` on the sphere. HNSW search time DOES depend on
them: uniform vectors (no structure) are its worst case, ~2.5x slower here. For SQLite and for Redis
(a throw-away ``redis-server`` on loopback unless ``--redis`` is given), in one run, after the
``--users`` rows were written with Feast's public write (online write throughput per path:
``bench/online_write.py``):

- p50 / p95 / p99 latency over ``--lookups`` random users of: one ``guim recommend`` call
  (Feast lookup of K vectors + weights + version, HNSW search per interest, exact merge),
  next to its two floors: Feast's bare ``get_online_features`` for the same features, and the
  index search alone (K queries, one thread);
- with ``--seen N``: every user row holds N seen item ids, and a fourth path is timed,
  ``recommend(..., exclude_seen=True)`` (the lookup then also reads those N ids, and an interest
  whose search meets seen items searches deeper). ``--seen-near F``: a share F of each row's seen
  ids are the items nearest its interests (each interest's neighbours in turn, by the index), the
  rest uniform over the catalogue. F = 0 is the cheap case (seen items rarely near an interest),
  F = 1 the dearest (every interest's nearest items all seen). Where a trained model's users lie
  between the two: ``bench/seen_near.py``.
"""
from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
import tempfile
import time
from datetime import datetime, timezone
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))


def _unit(rng, *shape):
    x = rng.normal(size=shape).astype(np.float32)
    return x / np.linalg.norm(x, axis=-1, keepdims=True)


def _clustered(rng, n: int, d: int, centres, noise: float = 0.35):
    x = centres[rng.integers(0, len(centres), n)] + noise * rng.normal(size=(n, d))
    return (x / np.linalg.norm(x, axis=-1, keepdims=True)).astype(np.float32)


def gold(n_users: int, n_items: int, K: int, d: int, seed: int = 0, vectors: str = "clustered"):
    """Random gold tables (pyarrow) of one snapshot, model version 'bench'."""
    import pyarrow as pa

    from guim_features.views import nested_lists

    rng = np.random.default_rng(seed)
    ts = pa.array([datetime(2026, 1, 1, tzinfo=timezone.utc)], pa.timestamp("us", tz="UTC"))
    w = rng.dirichlet(np.ones(K), size=n_users).astype(np.float32)
    if vectors == "uniform":
        inter, vecs = _unit(rng, n_users, K, d), _unit(rng, n_items, d)
    else:
        centres = rng.normal(size=(200, d))
        inter = _clustered(rng, n_users * K, d, centres).reshape(n_users, K, d)
        vecs = _clustered(rng, n_items, d, centres)
    users = pa.table({"user_id": [f"u{i}" for i in range(n_users)],
                      "interests": nested_lists(inter, d, K), "weights": nested_lists(w, K),
                      "model_version": ["bench"] * n_users, "event_timestamp": ts.take([0] * n_users)})
    items = pa.table({"item_id": [f"i{i}" for i in range(n_items)], "vector": nested_lists(vecs, d),
                      "model_version": ["bench"] * n_items, "event_timestamp": ts.take([0] * n_items)})
    return users, items


def with_seen(users, index, n_seen: int, near: float, seed: int = 2):
    """``users`` with a seen_items column of ``n_seen`` distinct item ids per row: ``round(near *
    n_seen)`` of them the items nearest the row's interests (rank 1 of every interest, then rank 2,
    ...), the rest drawn uniformly from the other items."""
    import pyarrow as pa

    from guim_features import publish

    rng = np.random.default_rng(seed)
    inter = publish.matrix(users["interests"])                                   # (N, K, d)
    N, K, d = inter.shape
    n_items, n_near = len(index.item_ids), int(round(near * n_seen))
    if n_near:
        _, nb = index.search(inter.reshape(-1, d), -(-n_near // K) + n_near)     # (N K, depth): room for overlaps
        nb = nb.reshape(N, K, -1).transpose(0, 2, 1).reshape(N, -1)              # rank-major: interest order per rank
    rows = []
    for u in range(N):
        chosen = [r for r in dict.fromkeys(nb[u].tolist()) if r >= 0][:n_near] if n_near else []
        taken = set(chosen)
        fill = [r for r in rng.choice(n_items, min(n_items, n_seen + len(taken)), replace=False).tolist()
                if r not in taken][:n_seen - len(chosen)]
        rows.append([f"i{r}" for r in chosen + fill])
    return users.append_column("seen_items", pa.array(rows, pa.list_(pa.string())))


def pct(xs) -> dict:
    a = np.asarray(xs) * 1e3
    return {"p50": float(np.percentile(a, 50)), "p95": float(np.percentile(a, 95)), "p99": float(np.percentile(a, 99))}


def one_store(kind: str, conn: str, users, items, index, args, root: Path) -> dict:
    import pyarrow.dataset as ds

    from guim_features import materialize, publish
    from guim_features.config import load_config
    from guim_features.recommend import Recommender

    sets = [f"publish.online_store={kind}"] + ([f"publish.redis={conn}"] if kind == "redis" else [])
    cfg = load_config(root / kind, sets)
    repo, _ = publish.write_repo(cfg, args.K, args.d, "bench", ds.dataset(users), ds.dataset(items))
    store = publish.feast_apply(repo, staged_config=True)
    publish.commit_repo(repo)
    t0 = time.perf_counter()
    out = {"online_write_rows_per_s": materialize.write_users(store, users, args.K) / (time.perf_counter() - t0)}
    # -- latency ----------------------------------------------------------------------------
    rec = Recommender(cfg, store=store, index=index)
    rng = np.random.default_rng(1)
    sample = [f"u{i}" for i in rng.integers(0, users.num_rows, args.lookups)]
    inter = publish.matrix(users["interests"])                                   # (N, K, d)
    for uid in sample[:50]:                                                      # warm-up
        rec.recommend(uid, args.k)
    # interleaved per user, so the three paths see the same machine noise
    lookup, search, full, seen = [], [], [], []
    for uid in sample:
        q = inter[int(uid[1:])]                                                  # (K, d)
        t0 = time.perf_counter()
        store.get_online_features(features=rec.features, entity_rows=[{"user_id": uid}]).to_dict()
        t1 = time.perf_counter()
        index.search(q, args.k)
        t2 = time.perf_counter()
        r = rec.recommend(uid, args.k)
        t3 = time.perf_counter()
        lookup.append(t1 - t0)
        search.append(t2 - t1)
        full.append(t3 - t2)
        assert len(r.items) == args.k and not r.fallback
        if args.seen:
            r = rec.recommend(uid, args.k, exclude_seen=True)
            seen.append(time.perf_counter() - t3)
            assert len(r.items) == args.k and r.seen_excluded == args.seen
    out.update(lookup=pct(lookup), search=pct(search), recommend=pct(full))
    if args.seen:
        out["recommend_exclude_seen"] = pct(seen)
    return out


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--items", type=int, default=100_000)
    p.add_argument("--users", type=int, default=20_000, help="user rows written to the online store")
    p.add_argument("--lookups", type=int, default=2000, help="random users timed")
    p.add_argument("--k", type=int, default=20)
    p.add_argument("--K", type=int, default=4)
    p.add_argument("--d", type=int, default=64)
    p.add_argument("--seen", type=int, default=0, help="seen item ids per user row (0: none); times exclude_seen")
    p.add_argument("--seen-near", type=float, default=0.0, dest="seen_near",
                   help="share of the seen ids that are the items nearest the user's interests (0-1)")
    p.add_argument("--redis", help="use this Redis (host:port) instead of starting one")
    p.add_argument("--stores", default="sqlite,redis")
    p.add_argument("--vectors", choices=["clustered", "uniform"], default="clustered")
    p.add_argument("--out", help="write the figures as JSON here")
    args = p.parse_args(argv)
    os.environ.setdefault("OMP_NUM_THREADS", "1")
    from guim_features.ann import ItemIndex
    from guim_features.redis_store import redis_server

    if not 0 <= args.seen_near <= 1:
        p.error(f"--seen-near {args.seen_near}: a share between 0 and 1")
    users, items = gold(args.users, args.items, args.K, args.d, vectors=args.vectors)
    t0 = time.perf_counter()
    from guim_features import publish

    index = ItemIndex.build(items["item_id"].to_pylist(), publish.matrix(items["vector"]), "bench", K=args.K,
                            score="max")
    build_s = time.perf_counter() - t0
    if args.seen:
        users = with_seen(users, index, args.seen, args.seen_near)
    results = {"setup": {k: getattr(args, k) for k in ("items", "users", "lookups", "k", "K", "d", "vectors", "seen",
                                                       "seen_near")},
               "index_build_s": build_s}
    root = Path(tempfile.mkdtemp(prefix="guim_bench_"))
    try:
        for kind in args.stores.split(","):
            if kind == "redis" and not args.redis:
                with redis_server() as conn:
                    results[kind] = one_store(kind, conn, users, items, index, args, root)
            else:
                results[kind] = one_store(kind, args.redis or "", users, items, index, args, root)
            print(f"{kind}: done", file=sys.stderr, flush=True)
    finally:
        shutil.rmtree(root, ignore_errors=True)
    load = os.getloadavg()[0]
    print(f"\nServing: {args.lookups} random users, {args.items:,} {args.vectors} items, K={args.K}, d={args.d}, k={args.k} "
          f"(HNSW M=32, efSearch 64, 1 thread; index built in {build_s:.1f}s; load average {load:.1f} on {os.cpu_count()} CPUs at the end)\n")
    print("| store | path | p50 ms | p95 ms | p99 ms |\n| --- | --- | --- | --- | --- |")
    for kind in args.stores.split(","):
        r = results[kind]
        paths = [("recommend (lookup + retrieval)", "recommend")] + (
            [(f"recommend, exclude_seen ({args.seen} seen ids, {args.seen_near:.0%} nearest)", "recommend_exclude_seen")]
            if args.seen else []) + [
            ("floor: Feast get_online_features", "lookup"), ("floor: index search alone", "search")]
        for name, key in paths:
            q = r[key]
            print(f"| {kind} | {name} | {q['p50']:.3f} | {q['p95']:.3f} | {q['p99']:.3f} |")
    if args.out:
        Path(args.out).write_text(json.dumps(results, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
