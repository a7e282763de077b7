"""Training benchmarks; prints Markdown tables.

    python bench/train.py throughput          # default config: sequences/s and peak memory on this CPU
    python bench/train.py loss-scaling        # InfoNCE (sampled) vs full softmax at 1e4, 1e5, 1e6 items
    python bench/train.py ml100k --seeds 3    # ML-100K leave-last-out, full ranking, K = 4 vs K = 1
    python bench/train.py speed               # Amazon Sports: SASRec-CE vs GUIM K = 1 / K = 4, 1 and 2 threads
    python bench/train.py negatives [--datasets ml-100k,amazon-sports]   # sampled vs full-catalogue InfoNCE

Each measurement of time and memory runs in its own process (peak RSS = ``ru_maxrss`` of that
child). ML-100K silver tables come from ``guim ingest --source movielens`` + ``guim sequences``
when guim_features/sequences.py exists, else from the temporary pandas builder
(bench/ml100k_silver.py). Threads: ``--threads`` (default 2).
"""
from __future__ import annotations

import argparse
import dataclasses
import json
import os
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
ML100K = ROOT.parent / "shared" / "data" / "ml-100k"
SPORTS = ROOT.parent / "shared" / "data" / "amazon-sports"


def _child(fn: str, kw: dict, mem_gb: float = 12.0, timeout: int = 1800) -> dict:
    """Run ``fn(**kw)`` of this file in a fresh process capped at ``mem_gb`` of address space."""
    code = (f"import resource, json, sys; sys.path.insert(0, {str(ROOT)!r}); sys.path.insert(0, {str(ROOT / 'bench')!r})\n"
            f"resource.setrlimit(resource.RLIMIT_AS, ({int(mem_gb * 2**30)}, {int(mem_gb * 2**30)}))\n"
            f"import train as b\n"
            f"try:\n    out = b.{fn}(**json.loads({json.dumps(json.dumps(kw))}))\n"
            f"except (MemoryError, RuntimeError) as e:\n    out = {{'error': type(e).__name__ + ': ' + str(e)[:80]}}\n"
            f"out['peak_rss_mb'] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024\n"
            f"print('RESULT ' + json.dumps(out))\n")
    p = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=timeout,
                       env={**os.environ, "OMP_NUM_THREADS": str(kw.get("threads", 2))})
    for line in p.stdout.splitlines():
        if line.startswith("RESULT "):
            return json.loads(line[7:])
    return {"error": (p.stderr.strip().splitlines() or ["no output"])[-1][:120]}


# -- loss scaling ---------------------------------------------------------------------------------
def _step(model, opts, batch) -> None:
    """One plain optimisation step (loss, backward, every optimizer), as timed by both benchmarks."""
    loss, _ = model.loss(batch)
    for o in opts:
        o.zero_grad(set_to_none=True)
    loss.backward()
    for o in opts:
        o.step()


def loss_step(n_items: int, negatives: str, batch: int = 64, L: int = 50, d: int = 64, steps: int = 3,
              threads: int = 2, K: int = 4) -> dict:
    """Seconds per training step (forward + backward + AdamW) at a catalogue of ``n_items``."""
    import numpy as np
    import torch

    from guim_features.config import TrainConfig
    from guim_features.model import GUIM, model_args
    from guim_features.train import optimizers

    torch.set_num_threads(threads)
    torch.manual_seed(0)
    sizes = {"n_items": n_items, "cat_sizes": [50, 50, 2], "n_num": 2, "title_buckets": 4097, "tag_size": 50,
             "title_len": 8, "tags_len": 4, "image_dim": 0, "n_behaviors": 4, "gap_buckets": 32}
    tc = TrainConfig(d=d, K=K, max_len=L, negatives=negatives, num_negatives=1024, normalize=True,
                     temperature=0.1)
    m = GUIM(model_args(tc, sizes)).train()
    rng = np.random.default_rng(0)
    m.tower.set_bank({"cat": rng.integers(0, 50, (n_items, 3)), "num": rng.normal(size=(n_items, 2)),
                      "title": rng.integers(0, 4097, (n_items, 8)), "tags": rng.integers(0, 50, (n_items, 4)),
                      "image": np.zeros((n_items, 0)), "has_image": np.zeros(n_items)})
    opts = optimizers(m, tc)                               # as the trainer: AdamW (+ SparseAdam for ids)
    items = torch.as_tensor(rng.zipf(1.3, (batch, L + 1)) % (n_items - 3) + 3)
    b = {"items": items, "behavior": torch.ones_like(items), "gaps": torch.zeros_like(items)}
    times = []
    for i in range(steps + 1):
        t = time.perf_counter()
        _step(m, opts, b)
        if i:                                   # the first step warms up allocators and kernels
            times.append(time.perf_counter() - t)
    return {"step_s": float(np.median(times))}


def loss_scaling(args) -> None:
    print("| items | InfoNCE (sampled 1024 + in-batch) s/step | peak MB | full softmax s/step | peak MB |")
    print("| --- | --- | --- | --- | --- |")
    for n in (10_000, 100_000, 1_000_000):
        row = [f"{n:,}"]
        for neg in ("sampled", "all"):
            r = _child("loss_step", {"n_items": n, "negatives": neg, "threads": args.threads}, mem_gb=args.mem_gb)
            row += [f"{r['step_s']:.3f}" if "step_s" in r else f"failed: {r['error']}",
                    f"{r.get('peak_rss_mb', float('nan')):.0f}"]
        print("| " + " | ".join(row) + " |", flush=True)


# -- throughput -----------------------------------------------------------------------------------
def throughput_run(workspace: str, threads: int = 2, steps: int = 30) -> dict:
    """Sequences/s of the default TrainConfig over ``steps`` steps on a workspace's silver tables."""
    import torch

    from guim_features.config import load_config
    from guim_features.data import ItemBank, TrainStream
    from guim_features.model import GUIM, model_args

    torch.set_num_threads(threads)
    cfg = load_config(workspace)
    tc = cfg.train
    bank = ItemBank(cfg)
    m = GUIM(model_args(tc, bank.sizes())).train()
    m.tower.set_bank(bank.arrays())
    from guim_features.train import optimizers
    opts = optimizers(m, tc)
    n, t0, done, pos = 0, None, 0, 0
    while done < steps + 2:
        for batch in TrainStream(cfg, tc.max_len, tc.batch_size, 0, tc.windows, tc.shuffle_buffer):
            if done == 2:
                t0, n, pos = time.perf_counter(), 0, 0      # skip two warm-up steps
            b = {k: torch.as_tensor(v) for k, v in batch.items()}
            _step(m, opts, b)
            it = b["items"]
            n, done = n + len(it), done + 1
            pos += int(((it[:, :-1] > 0) & (it[:, 1:] > 0)).sum())     # real (input, next item) pairs
            if done >= steps + 2:
                break
    secs = time.perf_counter() - t0
    return {"seq_per_s": n / secs, "positions_per_s": pos / secs, "n_items": bank.n_items,
            "d": tc.d, "K": tc.K, "batch": tc.batch_size}


def throughput(args) -> None:
    ws = ml100k_workspace(args)
    print("| workspace | items | d | K | batch | sequences/s | peak MB |\n| --- | --- | --- | --- | --- | --- | --- |")
    r = _child("throughput_run", {"workspace": str(ws), "threads": args.threads}, mem_gb=args.mem_gb)
    if "error" in r:
        print(f"| {ws.name} | failed: {r['error']} |")
        return
    print(f"| {ws.name} | {r['n_items']} | {r['d']} | {r['K']} | {r['batch']} | {r['seq_per_s']:.0f} | "
          f"{r['peak_rss_mb']:.0f} |")


# -- ML-100K --------------------------------------------------------------------------------------
def ml100k_workspace(args) -> Path:
    """A workspace holding ML-100K silver tables (built once)."""
    ws = Path(args.workspace)
    if (ws / "lakehouse" / "user_sequences").exists():
        return ws
    ws.mkdir(parents=True, exist_ok=True)
    sets = ["--set", f"sequences.max_len={args.history}"]
    if (ROOT / "guim_features" / "sequences.py").exists() and not args.pandas_silver:
        for cmd in (["ingest", "--source", "movielens", "--path", str(ML100K)], ["sequences"]):
            subprocess.run([sys.executable, "-m", "guim_features.cli", cmd[0], "--workspace", str(ws), *sets,
                            *cmd[1:]], check=True, cwd=ROOT)
    else:
        sys.path.insert(0, str(ROOT / "bench"))
        import ml100k_silver
        ml100k_silver.build(ML100K, ws / "lakehouse", max_len=args.history)
    return ws


def ml100k_run(workspace: str, K: int, seed: int, threads: int = 2, overrides: dict | None = None) -> dict:
    from guim_features.config import load_config
    from guim_features.train import train_model

    t = time.time()
    res = train_model(load_config(workspace), seed=seed,
                      overrides={"K": K, "threads": threads, **(overrides or {})}, mlflow_log=False,
                      register=False, progress=False)
    return {**res.metrics, "seconds": time.time() - t}


def ml100k(args) -> None:
    import numpy as np

    ws = ml100k_workspace(args)
    over = json.loads(args.overrides) if args.overrides else {}
    rows = {}
    for K in [int(k) for k in args.ks.split(",")]:
        runs = [_child("ml100k_run", {"workspace": str(ws), "K": K, "seed": s, "threads": args.threads,
                                      "overrides": over}, mem_gb=args.mem_gb, timeout=7200)
                for s in range(args.seeds)]
        for r in runs:
            print(f"K={K} " + json.dumps({k: round(v, 4) for k, v in r.items() if isinstance(v, float)}),
                  file=sys.stderr, flush=True)
        rows[K] = runs
    print(f"| model | test Recall@10 | test NDCG@10 | test Recall@20 | test NDCG@20 | epochs | s/run |")
    print("| --- | --- | --- | --- | --- | --- | --- |")
    for K, runs in rows.items():
        ok = [r for r in runs if "error" not in r]
        if not ok:
            print(f"| GUIM K={K} | failed: {runs[0]['error']} |")
            continue
        f = lambda k: f"{np.mean([r[k] for r in ok]):.3f} ± {np.std([r[k] for r in ok]):.3f}"  # noqa: E731
        print(f"| GUIM K={K} (mean of {len(ok)} seeds) | {f('test_recall@10')} | {f('test_ndcg@10')} | "
              f"{f('test_recall@20')} | {f('test_ndcg@20')} | {np.mean([r['epochs'] for r in ok]):.0f} | "
              f"{np.mean([r['seconds'] for r in ok]):.0f} |")


# -- speed side by side ---------------------------------------------------------------------------
def speed_run(workspace: str, method: str, threads: int = 2, steps: int = 0) -> dict:
    """Train one epoch (or ``steps`` steps) of ``method`` on the workspace's training windows and time it.

    Every method gets the same batches: GUIM's default stream (``train.batch_size`` windows of at
    most ``train.max_len`` + 1 events, grouped by length). ``sasrec`` is the bench's SASRec
    (d = bench.dim, bench.sasrec_layers layers) with a full cross-entropy over the catalogue at
    every position; ``guim_k1`` / ``guim_k4`` are GUIM with the project defaults and K = 1 / 4.
    A target position is a real (input, next item) pair; the same pairs are counted for all."""
    import numpy as np
    import torch

    from guim_features.downstream.baselines.sasrec import _build
    from guim_features.config import load_config
    from guim_features.data import ItemBank, TrainStream, item_counts
    from guim_features.model import GUIM, model_args
    from guim_features.config import TrainConfig
    from guim_features.train import optimizers

    torch.set_num_threads(threads)
    torch.manual_seed(0)
    cfg = load_config(workspace)
    # the project's defaults, not the workspace's guim.yaml (which keeps the defaults of the day it was made)
    tc = dataclasses.replace(TrainConfig(), K=1 if method == "guim_k1" else TrainConfig().K, threads=threads)
    bank = ItemBank(cfg)
    if method == "sasrec":
        b = cfg.bench
        net = _build(bank.n_items, b.dim, tc.max_len, b.sasrec_layers, b.sasrec_heads, b.sasrec_dropout).train()
        opts = [torch.optim.AdamW(net.parameters(), lr=b.sasrec_lr)]

        def loss_of(batch):
            x, y = batch["items"][:, :-1], batch["items"][:, 1:]
            keep = (x > 0) & (y > 0)
            z = net.logits(net(x))                                            # (B, W, V)
            return torch.nn.functional.cross_entropy(z[keep], y[keep])
    else:
        net = GUIM(model_args(tc, bank.sizes())).train()
        net.tower.set_bank(bank.arrays())
        net.set_popularity(item_counts(cfg, bank.n_items) + 1.0)
        opts = optimizers(net, tc)

        def loss_of(batch):
            return net.loss(batch)[0]
    n_targets, n_batches, seconds = 0, 0, 0.0
    for i, batch in enumerate(TrainStream(cfg, tc.max_len, tc.batch_size, 0, tc.windows, tc.shuffle_buffer)):
        b = {k: torch.as_tensor(v) for k, v in batch.items()}
        t = time.perf_counter()
        loss = loss_of(b)
        for o in opts:
            o.zero_grad(set_to_none=True)
        loss.backward()
        for o in opts:
            o.step()
        if i >= 2:                                  # two warm-up steps (allocator, kernels) are not timed
            seconds += time.perf_counter() - t
            it = b["items"]
            n_targets += int(((it[:, :-1] > 0) & (it[:, 1:] > 0)).sum())
            n_batches += 1
        if steps and n_batches >= steps:
            break
    return {"targets_s": n_targets / seconds, "seconds": seconds, "targets": n_targets, "steps": n_batches,
            "n_items": bank.n_items, "whole_epoch": not steps}


def speed(args) -> None:
    """Target positions/s and seconds per epoch: SASRec-CE, GUIM K = 1 and K = 4, 1 and 2 threads."""
    ws = sports_workspace(args) if args.data == "amazon-sports" else ml100k_workspace(args)
    print(f"{args.data}; machine load at start: {os.getloadavg()[0]:.2f} (1-min average); "
          f"{'one whole epoch' if not args.steps else f'{args.steps} steps'} per cell, 2 warm-up steps untimed\n")
    timed = "s/epoch (training steps)" if not args.steps else f"s for {args.steps} steps"
    print(f"| method | threads | target positions/s | × SASRec-CE | {timed} | peak RSS MB |")
    print("| --- | ---: | ---: | ---: | ---: | ---: |")
    for threads in (1, 2):
        base = None
        for method in ("sasrec", "guim_k1", "guim_k4"):
            r = _child("speed_run", {"workspace": str(ws), "method": method, "threads": threads, "steps": args.steps},
                       mem_gb=args.mem_gb, timeout=7200)
            if "error" in r:
                print(f"| {method} | {threads} | failed: {r['error']} | | | |", flush=True)
                continue
            base = r["targets_s"] if method == "sasrec" else base
            ratio = f"{r['targets_s'] / base:.2f}" if base else "n/a"
            print(f"| {method} | {threads} | {r['targets_s']:,.0f} | {ratio} | {r['seconds']:.1f} | "
                  f"{r['peak_rss_mb']:,.0f} |", flush=True)


# -- sampled vs full-catalogue InfoNCE --------------------------------------------------------------
def interval(values) -> tuple[float, float]:
    """Mean and half-width of the 95 % t-interval (sample std, ddof = 1)."""
    import numpy as np
    from scipy import stats

    v = np.asarray(values, dtype=float)
    if len(v) < 2:
        return float(v.mean()), float("nan")
    return float(v.mean()), float(stats.t.ppf(0.975, len(v) - 1) * v.std(ddof=1) / np.sqrt(len(v)))


def negatives(args) -> None:
    """Test Recall/NDCG@20 of sampled InfoNCE against the full catalogue, same seeds and budget."""
    over = json.loads(args.overrides) if args.overrides else {}
    build = {"ml-100k": ml100k_workspace, "amazon-sports": sports_workspace}
    spaces = {name: build[name](args) for name in args.datasets.split(",")}
    print(f"machine load at start: {os.getloadavg()[0]:.2f} (1-min average), {args.threads} threads per run")
    print("| data | negatives | test Recall@20 | test NDCG@20 | epochs | s/run | seeds |")
    print("| --- | --- | --- | --- | --- | --- | --- |")
    for name, ws in spaces.items():
        means = {}
        for neg in ("all", "sampled"):
            runs = [_child("ml100k_run", {"workspace": str(ws), "K": args.k, "seed": s, "threads": args.threads,
                                          "overrides": {**over, "negatives": neg}}, mem_gb=args.mem_gb,
                           timeout=14400) for s in range(args.seeds)]
            ok = [r for r in runs if "error" not in r]
            for r in runs:
                print(f"{name} {neg} " + json.dumps({k: round(v, 4) for k, v in r.items() if isinstance(v, float)}),
                      file=sys.stderr, flush=True)
            if not ok:
                print(f"| {name} | {neg} | failed: {runs[0]['error']} |", flush=True)
                continue
            r20, n20 = interval([r["test_recall@20"] for r in ok]), interval([r["test_ndcg@20"] for r in ok])
            means[neg] = r20[0]
            print(f"| {name} | {neg} | {r20[0]:.4f} ± {r20[1]:.4f} | {n20[0]:.4f} ± {n20[1]:.4f} | "
                  f"{sum(r['epochs'] for r in ok) / len(ok):.0f} | {sum(r['seconds'] for r in ok) / len(ok):.0f} | "
                  f"{len(ok)} |", flush=True)
        if len(means) == 2:
            print(f"| {name} | sampled / all | {means['sampled'] / means['all']:.1%} | | | | |", flush=True)


def sports_workspace(args) -> Path:
    """A workspace holding Amazon Sports silver tables (built once with `guim ingest --source table`)."""
    ws = Path(args.sports_workspace)
    if (ws / "lakehouse" / "user_sequences").exists():
        return ws
    ws.mkdir(parents=True, exist_ok=True)
    for cmd in (["ingest", "--source", "table", "--events", str(SPORTS / "events.csv"), "--items",
                 str(SPORTS / "items.csv")], ["sequences"]):
        subprocess.run([sys.executable, "-m", "guim_features.cli", cmd[0], "--workspace", str(ws), *cmd[1:]],
                       check=True, cwd=ROOT)
    return ws


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("what", choices=["throughput", "loss-scaling", "ml100k", "negatives", "speed", "all"])
    ap.add_argument("--workspace", default="/tmp/guim_bench_ml100k", help="ML-100K workspace (built if missing)")
    ap.add_argument("--sports-workspace", default="/tmp/guim_bench_sports", dest="sports_workspace",
                    help="Amazon Sports workspace (built if missing)")
    ap.add_argument("--datasets", default="ml-100k", help="negatives: ml-100k and/or amazon-sports, comma-separated "
                    "(Sports with the full catalogue: ~330 s per epoch with two threads)")
    ap.add_argument("--data", default="amazon-sports", choices=["amazon-sports", "ml-100k"], help="speed: data set")
    ap.add_argument("--steps", type=int, default=0, help="speed: time this many steps instead of a whole epoch")
    ap.add_argument("-k", type=int, default=4, help="negatives: number of interests")
    ap.add_argument("--seeds", type=int, default=3)
    ap.add_argument("--ks", default="4,1", help="ml100k: numbers of interests to compare")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--history", type=int, default=1000, help="sequences.max_len for ML-100K (all history)")
    ap.add_argument("--overrides", default="", help='JSON dict of TrainConfig overrides, e.g. {"epochs": 30}')
    ap.add_argument("--pandas-silver", action="store_true", dest="pandas_silver",
                    help="build ML-100K silver with the temporary pandas builder even if `guim sequences` exists")
    ap.add_argument("--mem-gb", type=float, default=12.0, dest="mem_gb", help="address-space cap per measurement")
    args = ap.parse_args()
    for what in (["throughput", "loss-scaling", "ml100k"] if args.what == "all" else [args.what]):
        print(f"\n## {what}\n")
        {"throughput": throughput, "loss-scaling": loss_scaling, "ml100k": ml100k, "negatives": negatives,
         "speed": speed}[what](args)


if __name__ == "__main__":
    main()
