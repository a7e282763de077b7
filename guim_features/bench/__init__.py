"""``guim bench``: the GUIM-Bench downstream suite with baselines in the same run.

Every method in ``bench.methods`` learns from the same silver tables and hands the tasks its
item vectors and per-user mixtures (see :mod:`.baselines`); every task in ``bench.tasks``
scores them (see :mod:`.tasks`). ``--seeds N`` repeats the seeded methods and reports the mean
and spread. The report (Markdown, JSON, PNG) goes to ``<workspace>/<paths.reports>/bench-<time>/``
and to MLflow (experiment ``guim-bench``); the benchmarked registered model (method ``model``)
gets its headline numbers as tags ``bench.<task>.<metric>``, which ``guim promote`` reads.
"""
from __future__ import annotations

import json
import sys
import time
from pathlib import Path

import numpy as np


def mlflow_key(name: str) -> str:
    """A metric/tag key MLflow accepts ('@' is not allowed): recall@20 -> recall_at_20."""
    return name.replace("@", "_at_")


def evaluate_tasks(data, emb, bench_cfg, tasks=None) -> tuple[dict, dict]:
    """Run the tasks on one method's embeddings: ({task: {metric: value}}, {task: skip reason})."""
    from .tasks import Skip, load

    scores, skipped = {}, {}
    for name in tasks or bench_cfg.tasks:
        try:
            scores[name] = load(name).evaluate(data, emb, bench_cfg)
        except Skip as e:
            skipped[name] = str(e)
    return scores, skipped


def run_suite(cfg, data, methods: list, seeds: int = 1, log=print, partial=None) -> dict:
    """Benchmark ``methods`` on ``data``; returns the report dict (see :mod:`.report`).
    ``partial``: a file rewritten with every raw score so far after each method run (long runs)."""
    from .tasks import NAMES, headline, load

    for t in cfg.bench.tasks:
        load(t)  # unknown task names fail before any training
    runs: dict = {}      # method -> task -> metric -> [value per seed]
    failed: dict = {}    # method -> reason
    task_skips: dict = {}
    seconds: dict = {}
    # progress over (method, seed) runs, each scoring every task; the time left assumes the pace so far
    total, done, start = sum(seeds if getattr(m, "seeded", True) else 1 for m in methods), 0, time.perf_counter()
    for m in methods:
        n_seeds = seeds if getattr(m, "seeded", True) else 1
        for seed in range(n_seeds):
            t0 = time.perf_counter()
            try:
                emb = m.embed(data, seed)
            except Exception as e:  # a method that cannot run is reported, not fatal
                failed[m.name] = f"{type(e).__name__}: {e}".splitlines()[0][:300]
                log(f"bench: method {m.name} skipped: {failed[m.name]}")
                total -= n_seeds - seed
                break
            fit = time.perf_counter() - t0
            scores, skipped = evaluate_tasks(data, emb, cfg.bench)
            task_skips.update(skipped)
            seconds.setdefault(m.name, []).append(fit)
            for task, metrics in scores.items():
                for k, v in metrics.items():
                    runs.setdefault(m.name, {}).setdefault(task, {}).setdefault(k, []).append(float(v))
            if partial:
                Path(partial).parent.mkdir(parents=True, exist_ok=True)
                Path(partial).write_text(json.dumps({"scores": runs, "fit_seconds": seconds}, indent=1))
            done += 1
            elapsed = time.perf_counter() - start
            log(f"bench: [{done}/{total}] {m.name} seed {seed}: fit {fit:.1f}s, "
                + ", ".join(f"{t}.{headline(load(t), s)}={s[headline(load(t), s)]:.4f}" for t, s in scores.items())
                + f" | {_clock(elapsed)} elapsed, about {_clock(elapsed / done * (total - done))} left")
    headlines = {}
    for t in cfg.bench.tasks:
        metrics = next((runs[m][t] for m in runs if t in runs[m]), None)
        if metrics:
            headlines[t] = headline(load(t), metrics)
    return {"methods": [m.name for m in methods if m.name in runs], "seeds": seeds,
            "tasks": [t for t in NAMES if t in cfg.bench.tasks],
            "results": {m: {t: {k: {"mean": float(np.mean(v)), "std": float(np.std(v)), "values": v}
                                for k, v in ms.items()} for t, ms in r.items()} for m, r in runs.items()},
            "headline": headlines, "skipped_tasks": task_skips, "skipped_methods": failed,
            "fit_seconds": {m: float(np.mean(v)) for m, v in seconds.items()}}


def _clock(seconds: float) -> str:
    """12s, 4m05s, 1h02m."""
    s = int(round(seconds))
    return f"{s}s" if s < 60 else f"{s // 60}m{s % 60:02d}s" if s < 3600 else f"{s // 3600}h{s % 3600 // 60:02d}m"


def make_methods(cfg, model_uri: str | None = None) -> list:
    """Instances of ``bench.methods``; an unknown name raises GuimError listing the known ones."""
    from ..errors import GuimError
    from .baselines import methods_by_name
    from .baselines.guim import GuimModel

    known = methods_by_name()
    out = []
    for name in cfg.bench.methods:
        if name not in known:
            raise GuimError(f"unknown bench method {name!r} in bench.methods (known: {', '.join(known)})")
        out.append(GuimModel(cfg, model_uri) if name == "model" else known[name](cfg))
    return out


def run(cfg, args) -> int:
    """Entry point of ``guim bench``."""
    import torch

    from .data import BenchData
    from .report import log_to_mlflow, write_report

    torch.set_num_threads(cfg.bench.threads)
    seeds = getattr(args, "seeds", 1) or 1
    model_uri = getattr(args, "model_uri", None) or cfg.bench.model_uri
    data = BenchData.load(cfg)
    print(f"bench: {data.n_users} users, {data.n_items} item indices, {len(data.warm_items)} warm items",
          file=sys.stderr)
    partial = Path(cfg.resolve(cfg.paths.reports)) / "bench-partial.json"
    report = run_suite(cfg, data, make_methods(cfg, model_uri), seeds,
                       log=lambda s: print(s, file=sys.stderr), partial=partial)
    report["data"] = {"workspace": cfg.workspace, "fingerprint": data.fingerprint,
                      "users": data.n_users, "items": int(len(data.warm_items))}
    report["model_uri"] = model_uri
    out = write_report(report, cfg.resolve(cfg.paths.reports))
    partial.unlink(missing_ok=True)
    print(open(out / "bench.md").read())
    print(f"bench: report written to {out}", file=sys.stderr)
    if cfg.bench.log_mlflow:
        log_to_mlflow(cfg, report, out, model_uri)
    return 0
