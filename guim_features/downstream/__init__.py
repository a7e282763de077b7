"""``guim bench``: the GUIM-Bench downstream suite with baselines in the same run.

Every method in ``bench.methods`` learns from the same silver tables and hands the tasks its
item vectors and per-user mixtures (see :mod:`.baselines`); every task in ``bench.tasks``
scores them (see :mod:`.tasks`). ``--seeds N`` repeats the seeded methods and reports the mean,
the sample standard deviation and the 95 % t-interval. A method that fails is reported with the
reason and makes ``guim bench`` exit 1 (``--keep-going``: 0). The report (Markdown, JSON, PNG) goes to ``<workspace>/<paths.reports>/bench-<time>/``
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


def evaluate_tasks(data, emb, bench_cfg, tasks=None, content_aware: bool = False) -> tuple[dict, dict]:
    """Run the tasks on one method's embeddings: ({task: {metric: value}}, {task: skip reason}).
    ``content_aware``: the item vectors read item content, so the scores of tasks whose labels
    are item content (``CONTENT_LABELS``) are named ``<metric>_content_aware``."""
    from .tasks import CONTENT_AWARE, Skip, load

    scores, skipped = {}, {}
    for name in tasks or bench_cfg.tasks:
        task = load(name)
        try:
            out = task.evaluate(data, emb, bench_cfg)
        except Skip as e:
            skipped[name] = str(e)
            continue
        if content_aware and getattr(task, "CONTENT_LABELS", False):
            out = {k + CONTENT_AWARE: v for k, v in out.items()}
        scores[name] = out
    return scores, skipped


def fit_plan(cfg, data, method, views: dict) -> tuple[list, dict]:
    """The fits one method needs per seed, as (method, data, tasks, content_aware), and {task: why
    it cannot be run for this method}:

    - the tasks on ``data`` (content-aware names on content-label tasks if the method reads content);
    - a content-blind variant of the method for the content-label tasks (``bench.content_blind``),
      where the method reads item content and can be refitted without it;
    - a refit on each task's own view (``views``: task -> BenchData, e.g. users held out)."""
    from .tasks import load

    base = [t for t in cfg.bench.tasks if t not in views]
    labels = [t for t in base if getattr(load(t), "CONTENT_LABELS", False)]
    plan, cannot = [], {}
    if base:
        plan.append((method, data, base, method.reads_content))
    blind = method.content_blind() if method.reads_content and labels and cfg.bench.content_blind else None
    if blind is not None:
        plan.append((blind, data, labels, False))
    for t, view in views.items():
        if method.refits:
            plan.append((method, view, [t], False))
        else:
            cannot[t] = f"method {method.name} is a fixed model fitted on every user, so it cannot be scored on " \
                        f"users held out of fitting"
    return plan, cannot


def run_suite(cfg, data, methods: list, seeds: int = 1, log=print, partial=None, settings=None,
              resume=None, first_seed: int = 0) -> dict:
    """Benchmark ``methods`` on ``data``; returns the report dict (see :mod:`.report`). The seeded
    methods run with seeds ``first_seed`` .. ``first_seed + seeds - 1`` (a later ``first_seed`` adds
    seeds to an earlier run, or splits one run's seeds across machines, without repeating any).
    ``partial``: a file rewritten with every raw score so far (and ``settings``) after each method
    run, so a long run that is stopped can go on. ``resume``: such a file's content from an earlier
    run with the same settings: its finished (method, seed) runs are taken as they are, not rerun.
    A method that raises is recorded in ``failed_methods`` with the reason (its other seeds are
    not run; :class:`.baselines.Unavailable` goes to ``skipped_methods`` instead) and the suite
    goes on with the next method."""
    from .baselines import Unavailable, add_transition_prior
    from .tasks import NAMES, headline, load

    tasks = [load(t) for t in cfg.bench.tasks]  # unknown task names fail before any training
    views = {t.NAME: t.view(data, cfg.bench) for t in tasks if hasattr(t, "view")}
    runs: dict = {}      # method -> task -> metric -> [value per seed]
    failed: dict = {}    # method -> reason
    unavailable: dict = {}   # method -> reason
    resume = resume or {}
    task_skips: dict = dict(resume.get("task_skips", {}))
    earlier_seconds: dict = resume.get("fit_seconds", {})   # method -> fit seconds of its finished seeds
    seconds: dict = {}
    # progress over (method, seed) runs, each scoring every task; the time left assumes the pace so far
    total, done, start = sum(seeds if getattr(m, "seeded", True) else 1 for m in methods), 0, time.perf_counter()
    ran = 0
    for m in methods:
        plan, cannot = fit_plan(cfg, data, m, views)
        task_skips.update(cannot)
        n_seeds = seeds if getattr(m, "seeded", True) else 1
        for i in range(n_seeds):
            seed = first_seed + i
            if i < len(earlier_seconds.get(m.name, [])):   # finished before
                seconds.setdefault(m.name, []).append(earlier_seconds[m.name][i])
                for task, metrics in resume["scores"].get(m.name, {}).items():
                    for k, v in metrics.items():
                        runs.setdefault(m.name, {}).setdefault(task, {}).setdefault(k, []).append(v[i])
                done += 1
                log(f"bench: [{done}/{total}] {m.name} seed {seed}: taken from the unfinished run")
                continue
            fit, scores = 0.0, {}
            try:
                for method, view, names, aware in plan:
                    t0 = time.perf_counter()
                    emb = method.embed(view, seed)
                    add_transition_prior(emb, view, cfg.train)   # train.transition_window > 0: every method's
                    fit += time.perf_counter() - t0
                    got, skipped = evaluate_tasks(view, emb, cfg.bench, names, aware)
                    if emb.transition_weight is not None and "next_item" in got:
                        got["next_item"]["transition_weight"] = emb.transition_weight
                        if len(emb.logit_scales) > 1:
                            got["next_item"]["transition_logit_scale"] = emb.transition_scale
                    task_skips.update(skipped)
                    for task, metrics in got.items():
                        scores.setdefault(task, {}).update(metrics)
            except Unavailable as e:
                unavailable[m.name] = str(e).splitlines()[0][:300]
                log(f"bench: method {m.name} skipped: {unavailable[m.name]}")
                total -= n_seeds - i
                break
            except Exception as e:  # recorded with the reason; `guim bench` then exits non-zero
                failed[m.name] = f"{type(e).__name__}: {e}".splitlines()[0][:300]
                log(f"bench: method {m.name} failed: {failed[m.name]}")
                total -= n_seeds - i
                break
            seconds.setdefault(m.name, []).append(fit)
            for task, metrics in scores.items():
                for k, v in metrics.items():
                    runs.setdefault(m.name, {}).setdefault(task, {}).setdefault(k, []).append(float(v))
            if partial:
                Path(partial).parent.mkdir(parents=True, exist_ok=True)
                Path(partial).write_text(json.dumps({"settings": settings, "scores": runs, "fit_seconds": seconds,
                                                     "task_skips": task_skips}, indent=1))
            done, ran = done + 1, ran + 1
            elapsed = time.perf_counter() - start
            log(f"bench: [{done}/{total}] {m.name} seed {seed}: fit {fit:.1f}s, "
                + ", ".join(f"{t}.{headline(load(t), s)}={s[headline(load(t), s)]:.4f}" for t, s in scores.items())
                + f" | {_clock(elapsed)} elapsed, about {_clock(elapsed / ran * (total - done))} left")
    results, headlines = summarise(runs, cfg.bench.tasks)
    return {"methods": [m.name for m in methods if m.name in runs], "seeds": seeds, "first_seed": first_seed,
            "tasks": [t for t in NAMES if t in cfg.bench.tasks], "results": results,
            "headline": headlines, "skipped_tasks": task_skips, "failed_methods": failed,
            "skipped_methods": unavailable,
            "fit_seconds": {m: float(np.mean(v)) for m, v in seconds.items()}}


def summarise(runs: dict, tasks: list) -> tuple[dict, dict]:
    """Per-seed scores (method -> task -> metric -> [value per seed]) -> the report's results (each
    list as its :func:`~.metrics.spread`) and each task's headline metric among those scored."""
    from .metrics import spread
    from .tasks import headline, load

    results = {m: {t: {k: spread(v) for k, v in ms.items()} for t, ms in r.items()} for m, r in runs.items()}
    headlines = {}
    for t in tasks:
        metrics = {k: None for m in runs for k in runs[m].get(t, {})}
        if metrics:
            headlines[t] = headline(load(t), metrics)
    return results, headlines


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

    from ..errors import GuimError
    from .data import BenchData
    from .report import log_to_mlflow, write_report

    if getattr(args, "combine", None):
        from .report import combine, read_report

        report = combine([read_report(p) for p in args.combine], [str(p) for p in args.combine])
        out = write_report(report, cfg.resolve(cfg.paths.reports))
        print(open(out / "bench.md").read())
        print(f"bench: combined report of {report['seeds']} seeds written to {out} (not logged to MLflow)",
              file=sys.stderr)
        return 0
    torch.set_num_threads(cfg.bench.threads)
    seeds = getattr(args, "seeds", 1) or 1
    first_seed = getattr(args, "first_seed", 0) or 0
    if first_seed < 0:
        raise GuimError(f"--first-seed {first_seed}: expected 0 or a positive seed")
    model_uri = getattr(args, "model_uri", None) or cfg.bench.model_uri
    load_before = machine_load()
    data = BenchData.load(cfg)
    print(f"bench: {data.n_users} users, {data.n_items} item indices, {len(data.warm_items)} warm items",
          file=sys.stderr)
    partial = partial_path(cfg, first_seed)
    settings = run_settings(cfg, data, seeds, model_uri, first_seed)
    earlier = resumable(partial, settings) if getattr(args, "resume", False) else None
    report = run_suite(cfg, data, make_methods(cfg, model_uri), seeds,
                       log=lambda s: print(s, file=sys.stderr), partial=partial, settings=settings, resume=earlier,
                       first_seed=first_seed)
    report["data"] = {"workspace": cfg.workspace, "fingerprint": data.fingerprint,
                      "users": data.n_users, "items": int(len(data.warm_items))}
    report["model_uri"] = model_uri
    report["settings"] = settings
    report["machine"] = f"at the start: {load_before}; at the end: {machine_load()}"
    if earlier:
        kept = sum(len(v) for v in earlier.get("fit_seconds", {}).values())
        report["machine"] += f" ({kept} method runs taken from an earlier, unfinished process)"
    out = write_report(report, cfg.resolve(cfg.paths.reports))
    if not report["failed_methods"]:      # kept otherwise: `--resume` then reruns only what failed
        partial.unlink(missing_ok=True)
    print(open(out / "bench.md").read())
    print(f"bench: report written to {out}", file=sys.stderr)
    if cfg.bench.log_mlflow:
        log_to_mlflow(cfg, report, out, model_uri)
    if report["failed_methods"] and not getattr(args, "keep_going", False):
        for m, why in report["failed_methods"].items():
            print(f"guim bench: error: method {m} failed: {why}", file=sys.stderr)
        return 1
    return 0


def run_settings(cfg, data, seeds: int, model_uri: str, first_seed: int = 0) -> dict:
    """What makes two bench runs the same run: the data's table versions, the seeds, the model URI,
    every bench and train setting (as JSON values) and the package's code (``code_fingerprint``)."""
    import dataclasses

    return json.loads(json.dumps({"data": data.fingerprint, "seeds": seeds, "first_seed": first_seed,
                                  "model_uri": model_uri,
                                  "code": code_fingerprint(), "bench": dataclasses.asdict(cfg.bench),
                                  "train": dataclasses.asdict(cfg.train)}))


def code_fingerprint() -> str:
    """SHA-256 (first 16 hex digits) of the package's Python sources: an edit to a method or a task
    between a stopped run and its resume would otherwise mix two versions in one table."""
    import hashlib

    root = Path(__file__).resolve().parents[1]
    h = hashlib.sha256()
    for f in sorted(root.rglob("*.py")):
        h.update(str(f.relative_to(root)).encode() + b"\0" + f.read_bytes())
    return h.hexdigest()[:16]


def settings_diff(a: dict, b: dict, name_a: str, name_b: str, ignore=()) -> list:
    """The settings (:func:`run_settings`) in which two runs differ, as 'train.epochs: 40 then, 2 now'."""
    def flat(d: dict) -> dict:   # {"train": {"epochs": 40}} -> {"train.epochs": 40}
        return {f"{k}.{kk}" if isinstance(v, dict) else k: vv for k, v in d.items()
                for kk, vv in (v.items() if isinstance(v, dict) else [(None, v)])}

    fa, fb = flat(a), flat(b)
    return [f"{k}: {fa.get(k)!r} {name_a}, {fb.get(k)!r} {name_b}" for k in dict.fromkeys([*fa, *fb])
            if k not in ignore and fa.get(k) != fb.get(k)]


def partial_path(cfg, first_seed: int = 0) -> Path:
    """Where a run keeps its finished method runs until it ends: ``<reports>/bench-partial.json``,
    or ``bench-partial-seedF.json`` for a run starting at seed F > 0, so that runs of one workspace
    split by ``--first-seed`` and run side by side never overwrite each other's (and ``--resume``
    finds its own)."""
    name = "bench-partial.json" if not first_seed else f"bench-partial-seed{first_seed}.json"
    return Path(cfg.resolve(cfg.paths.reports)) / name


def resumable(partial: Path, settings: dict) -> dict:
    """The unfinished run's partial results, if it was run with ``settings``; else GuimError naming
    what differs (resuming under other settings would mix two runs in one table)."""
    from ..errors import GuimError

    if not partial.exists():
        raise GuimError(f"--resume: no unfinished bench run here (no {partial}); start one without --resume")
    earlier = json.loads(partial.read_text())
    before = earlier.get("settings")
    if before is None:
        raise GuimError(f"--resume: {partial} was written by a version that did not record its settings; "
                        f"rerun without --resume")
    diff = settings_diff(before, settings, "then", "now")
    if diff:
        raise GuimError("--resume: the unfinished run had other settings (" + "; ".join(diff[:5])
                        + (f"; and {len(diff) - 5} more" if len(diff) > 5 else "")
                        + "); rerun with the same settings, or without --resume to start over")
    return earlier


def machine_load() -> str:
    """CPU count and the 1/5/15-minute load averages when the report is written (the numbers of a
    shared machine are pessimistic; the report says so)."""
    import os

    try:
        one, five, fifteen = os.getloadavg()
    except OSError:
        return f"{os.cpu_count()} CPUs"
    return f"{os.cpu_count()} CPUs, load average {one:.1f} / {five:.1f} / {fifteen:.1f} (1 / 5 / 15 min)"
