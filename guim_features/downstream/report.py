"""The GUIM-Bench report: Markdown table (tasks x methods, best in bold), JSON, PNG.

Written to ``<reports>/bench-<UTC time>/`` (bench.md, bench.json, bench.png) and logged to
MLflow: one run in experiment ``guim-bench`` with every mean as a metric and the files as
artifacts; the benchmarked registered model version gets ``bench.<task>.<metric>`` tags.
"""
from __future__ import annotations

import json
import time
from pathlib import Path

EXPERIMENT = "guim-bench"
SETTINGS = {"transition_weight", "transition_logit_scale"}   # per-run choices reported beside the metrics, never ranked


def _cell(r: dict) -> str:
    if len(r["values"]) < 2:
        return f"{r['mean']:.4f}"
    return f"{r['mean']:.4f} ± {r['ci95']:.4f} (sd {r['std']:.4f})"


def marked_cells(vals: dict, cell=_cell) -> dict:
    """{name: result} of one metric -> {name: cell text}: the best mean in bold, ``≈`` after every
    other result whose interval overlaps the best one's; no marks when every mean is the same (a fact
    of the data, not a ranking)."""
    from .metrics import level

    best = max(vals.values(), key=lambda v: v["mean"])
    ranked = len({v["mean"] for v in vals.values()}) > 1
    return {m: "**" + cell(v) + "**" if ranked and v["mean"] == best["mean"]
            else cell(v) + (" ≈" if ranked and level(v, best) else "") for m, v in vals.items()}


def markdown(report: dict) -> str:
    """The tasks x methods table: mean ± half-width of the 95 % t-interval (sd = sample std,
    ddof 1) over seeds; the best mean of each row in bold, and ``≈`` on every other cell whose
    interval overlaps the best one's (level with it: not beaten); headline metrics marked *."""
    methods, res, seeds = report["methods"], report["results"], report["seeds"]
    lines = ["| task | metric | " + " | ".join(methods) + " |", "| --- | --- |" + " --- |" * len(methods)]
    for task in report["tasks"]:
        if task in report["skipped_tasks"] and not any(task in res[m] for m in methods):
            lines.append(f"| {task} | skipped: {report['skipped_tasks'][task]} |" + " |" * len(methods))
            continue
        metrics = list(dict.fromkeys(k for m in methods for k in res[m].get(task, {})))
        for k in metrics:
            vals = {m: res[m][task][k] for m in methods if k in res[m].get(task, {})}
            marked = {m: _cell(v) for m, v in vals.items()} if k in SETTINGS else marked_cells(vals)
            cells = [marked.get(m, "–") for m in methods]
            star = " *" if report["headline"].get(task) == k else ""
            lines.append(f"| {task} | {k}{star} | " + " | ".join(cells) + " |")
    fit = report.get("fit_seconds", {})
    lines.append("| (cost) | fit seconds | " + " | ".join(f"{fit.get(m, 0):.1f}" for m in methods) + " |")
    s0 = report.get("first_seed", 0)
    first = "" if not s0 else f" (seed {s0})" if seeds == 1 else f" (seeds {s0}–{s0 + seeds - 1})"
    if report.get("seeds_used"):
        first = " (seeds " + ", ".join(map(str, report["seeds_used"])) + ")"
    notes = [f"\n`*` headline metric of the task (the promotion gate watches it). "
             + (f"Mean ± half-width of the 95 % t-interval over {seeds} seeds{first} (sd: sample standard deviation, "
                f"ddof 1); **bold**: best mean; ≈: interval overlaps the best one's, so level with it, not beaten. "
                if seeds > 1 else f"One seed{first} (no interval: nothing can be called better). ")
             + "Deterministic methods run once. `*_content_aware`: the score of a method whose item vectors "
               "read the item content that is this task's label (its plain row is a content-blind refit). "
               "Fit seconds: all fits of one seed (the task views and the content-blind refit included)."]
    if report.get("machine"):
        notes.append(f"- machine: {report['machine']}")
    if report.get("combined_from"):
        notes.append("- combined from the runs in " + ", ".join(report["combined_from"]))
    for m, why in report.get("failed_methods", {}).items():
        notes.append(f"- method `{m}` FAILED: {why}")
    for m, why in report.get("skipped_methods", {}).items():
        notes.append(f"- method `{m}` skipped: {why}")
    for t, why in report["skipped_tasks"].items():
        notes.append(f"- task `{t}` skipped for some method: {why}")
    return "\n".join(lines + notes) + "\n"


def chart(report: dict, path: Path) -> None:
    """Grouped bars: each task's headline metric per method, with the 95 % t-interval as error bars."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import numpy as np

    tasks = [t for t in report["tasks"] if t in report["headline"]]
    methods = report["methods"]
    fig, ax = plt.subplots(figsize=(max(8, 1.4 * len(tasks)), 4.5))
    width = 0.8 / max(len(methods), 1)
    for j, m in enumerate(methods):
        r = [report["results"][m].get(t, {}).get(report["headline"][t]) for t in tasks]
        ax.bar(np.arange(len(tasks)) + j * width, [x["mean"] if x else 0 for x in r], width,
               yerr=[x["ci95"] if x else 0 for x in r], label=m)
    ax.set_xticks(np.arange(len(tasks)) + 0.4 - width / 2)
    ax.set_xticklabels([f"{t}\n{report['headline'][t]}" for t in tasks], fontsize=7)
    ax.set_ylabel("score (higher is better)")
    ax.set_title("GUIM-Bench: headline metric per task")
    ax.legend(fontsize=7, ncol=4)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def read_report(path) -> dict:
    """A report's bench.json, from its folder or the file itself, or the report of an unfinished
    run's bench-partial.json (:func:`from_partial`); GuimError when there is none."""
    from ..errors import GuimError

    f = Path(path)
    f = f / "bench.json" if f.is_dir() else f
    if not f.is_file():
        raise GuimError(f"--combine: no bench report at {path} (expected a bench-* folder, its bench.json or "
                        "the bench-partial.json of an unfinished run)")
    try:
        report = json.loads(f.read_text())
    except json.JSONDecodeError as e:
        raise GuimError(f"--combine: {f} is not a bench report ({e})") from None
    return from_partial(report) if "scores" in report and "results" not in report else report


def from_partial(partial: dict) -> dict:
    """A report of the method runs an unfinished process completed (its ``bench-partial.json``):
    each method that finished every one of the run's seeds, the others named as unfinished. So
    the finished methods of runs stopped before their slowest method can still be pooled with
    ``--combine``."""
    from . import summarise

    settings = partial["settings"]
    seeds, done = settings["seeds"], partial.get("fit_seconds", {})
    def complete(m: str) -> bool:    # every seed run, or a deterministic method's one run (one value each)
        runs = len(done.get(m, []))
        return runs == seeds or (runs == 1 and m in partial["scores"]
                                 and all(len(v) == 1 for ms in partial["scores"][m].values() for v in ms.values()))

    # in the run's order of methods, whatever the seeds: runs of other seed counts then pool
    finished = [m for m in settings["bench"]["methods"] if complete(m)]
    results, heads = summarise({m: partial["scores"][m] for m in finished}, settings["bench"]["tasks"])
    tasks = list(heads)
    unfinished = [m for m in settings["bench"]["methods"] if m not in finished]
    return {"methods": finished, "seeds": seeds, "first_seed": settings.get("first_seed", 0), "tasks": tasks,
            "results": results, "headline": heads, "skipped_tasks": partial.get("task_skips", {}),
            "failed_methods": {},
            "skipped_methods": {m: "unfinished: the run was stopped before it" for m in unfinished},
            "fit_seconds": {m: sum(done[m]) / len(done[m]) for m in finished},
            "data": {"fingerprint": settings["data"]}, "settings": settings,
            "machine": "an unfinished run (bench-partial.json)"}


def combine(reports: list, names: list) -> dict:
    """One report from runs of the same settings on disjoint seeds (``guim bench --first-seed``,
    e.g. one run's seeds split across machines or added later): per-seed values pooled in seed
    order and the spread recomputed over all of them. Refused, naming what differs, when the runs
    have other data, methods, tasks or settings, or share a seed. A method run once (deterministic:
    one value, the same in every run) stays one value."""
    from ..errors import GuimError
    from . import settings_diff
    from .metrics import spread

    if len(reports) < 2:
        raise GuimError("--combine: give two or more bench reports")
    base, where = reports[0], names[0]
    for r, name in zip(reports[1:], names[1:]):
        for key in ("methods", "tasks"):
            if r[key] != base[key]:
                raise GuimError(f"--combine: {key} differ: {base[key]} in {where}, {r[key]} in {name}")
        fa, fb = base.get("data", {}).get("fingerprint"), r.get("data", {}).get("fingerprint")
        if fa != fb:
            raise GuimError(f"--combine: other data: {fa} in {where}, {fb} in {name}")
        if "settings" in base and "settings" in r:
            diff = settings_diff(base["settings"], r["settings"], f"in {where}", f"in {name}",
                                 ignore=("seeds", "first_seed"))
            if diff:
                raise GuimError("--combine: the runs had other settings (" + "; ".join(diff[:5])
                                + (f"; and {len(diff) - 5} more" if len(diff) > 5 else "") + ")")
    order = sorted(range(len(reports)), key=lambda i: reports[i].get("first_seed", 0))
    seen: dict = {}
    for i in order:
        r = reports[i]
        for s in range(r.get("first_seed", 0), r.get("first_seed", 0) + r["seeds"]):
            if s in seen:
                raise GuimError(f"--combine: seed {s} is in both {names[seen[s]]} and {names[i]}")
            seen[s] = i
    results, seconds = {}, {}
    for m in base["methods"]:
        per_run = [reports[i]["results"].get(m, {}) for i in order]
        once = all(len(v["values"]) == 1 for run in per_run for ms in run.values() for v in ms.values()) and \
            all(run == per_run[0] for run in per_run)
        results[m] = {}
        for t in dict.fromkeys(t for run in per_run for t in run):
            results[m][t] = {}
            for k in dict.fromkeys(k for run in per_run for k in run.get(t, {})):
                vals = [x for run in per_run[:1 if once else None] for x in run.get(t, {}).get(k, {"values": []})["values"]]
                results[m][t][k] = spread(vals)
        fits = [(reports[i].get("fit_seconds", {}).get(m), reports[i]["seeds"]) for i in order]
        fits = [(f, n) for f, n in fits if f is not None]
        if fits:
            seconds[m] = sum(f * n for f, n in fits) / sum(n for _, n in fits)
    first = reports[order[0]].get("first_seed", 0)
    combined = {**base, "seeds": len(seen), "first_seed": first, "results": results, "fit_seconds": seconds,
                "skipped_tasks": {k: v for i in order for k, v in reports[i]["skipped_tasks"].items()},
                "failed_methods": {k: v for i in order for k, v in reports[i]["failed_methods"].items()},
                "skipped_methods": {k: v for i in order for k, v in reports[i]["skipped_methods"].items()},
                "machine": "; ".join(f"seeds {reports[i].get('first_seed', 0)}-{reports[i].get('first_seed', 0) + reports[i]['seeds'] - 1}"
                                     f" ({names[i]}): {reports[i].get('machine', 'not recorded')}" for i in order),
                "combined_from": [names[i] for i in order]}
    if sorted(seen) != list(range(first, first + len(seen))):
        combined["seeds_used"] = sorted(seen)
    if "settings" in combined:
        combined["settings"] = {**combined["settings"], "seeds": len(seen), "first_seed": first}
    return combined


def write_report(report: dict, reports_dir: str) -> Path:
    """Write bench.md, bench.json and bench.png into a new folder under ``reports_dir``."""
    out = Path(reports_dir) / time.strftime("bench-%Y%m%d-%H%M%S", time.gmtime())
    n = 1
    while out.exists():
        out, n = out.with_name(out.name.split("_")[0] + f"_{n}"), n + 1
    out.mkdir(parents=True)
    (out / "bench.md").write_text(markdown(report))
    (out / "bench.json").write_text(json.dumps(report, indent=2))
    chart(report, out / "bench.png")
    return out


def version_of(client, uri: str):
    """The ModelVersion a ``models:/name@alias`` or ``models:/name/version`` URI names, else None."""
    if not uri.startswith("models:/"):
        return None
    ref = uri[len("models:/"):]
    if "@" in ref:
        name, alias = ref.split("@", 1)
        return client.get_model_version_by_alias(name, alias)
    name, version = ref.rsplit("/", 1)
    return client.get_model_version(name, version)


def log_to_mlflow(cfg, report: dict, folder: Path, model_uri: str | None) -> str:
    """One MLflow run with the means and the files; tags on the benchmarked model version.
    Uses the client API only, so no process-wide active experiment or run is left behind."""
    from mlflow import MlflowClient
    from mlflow.entities import Metric, Param

    from ..registry import setup
    from . import mlflow_key

    exp = setup(cfg, EXPERIMENT)  # same tracking store and artifact root as training runs
    client = MlflowClient(cfg.mlflow_uri, cfg.mlflow_uri)
    run_id = client.create_run(exp, tags={"mlflow.runName": "guim-bench"}).info.run_id
    params = {"methods": ",".join(report["methods"]), "tasks": ",".join(report["tasks"]),
              "seeds": str(report["seeds"]), "data": report.get("data", {}).get("fingerprint", "")[-500:],
              "model_uri": model_uri or ""}
    now = int(time.time() * 1000)
    metrics = [Metric(mlflow_key(f"{m}.{t}.{k}"), v["mean"], now, 0) for m, r in report["results"].items()
               for t, ms in r.items() for k, v in ms.items()]
    client.log_batch(run_id, params=[Param(k, v) for k, v in params.items()])
    for s in range(0, len(metrics), 500):
        client.log_batch(run_id, metrics=metrics[s:s + 500])
    client.log_artifacts(run_id, str(folder), "bench")
    client.set_terminated(run_id)
    if "model" in report["results"] and model_uri:
        mv = version_of(client, model_uri)
        if mv is not None:
            tag_version(client, mv, report["results"]["model"], report.get("data", {}).get("fingerprint", ""),
                        run_id)
    return run_id


def tag_version(client, mv, results: dict, fingerprint: str, run_id: str = "") -> None:
    """Record ``{task: {metric: {"mean": v}}}`` on a model version as bench.<task>.<metric> tags."""
    from . import mlflow_key

    for t, ms in results.items():
        for k, v in ms.items():
            client.set_model_version_tag(mv.name, str(mv.version), mlflow_key(f"bench.{t}.{k}"), f"{v['mean']:.6f}")
    client.set_model_version_tag(mv.name, str(mv.version), "bench.data", fingerprint[-5000:])
    if run_id:
        client.set_model_version_tag(mv.name, str(mv.version), "bench.run_id", run_id)
