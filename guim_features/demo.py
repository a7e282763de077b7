"""``guim demo``: the whole flow on built-in synthetic data, in one workspace.

ingest (synthetic Taobao-like log) -> sequences -> train (``demo.train_epochs``) -> embed ->
publish -> one recommendation -> a summary of what was made and where. Each step is the stage's
own ``run(cfg, args)`` with the arguments its CLI command would get, so the demo is exactly what
a user would type, in order. A rerun reuses what is unchanged: re-ingesting the same seed adds
nothing, the silver tables stay as they are, training is skipped when a registered version was
trained on these exact silver tables with this exact configuration (``registry.trained_version``),
and embedding with that version adds no gold rows (no user's history changed, its items are
already exported). Embed and publish are given that version explicitly. A model no better than
popularity is registered without alias challenger; the demo then stops before publishing it.
"""
from __future__ import annotations

import importlib
import time
from pathlib import Path

STEPS = ("ingest", "sequences", "train", "embed", "publish")


def _args(command: str, cfg, *extra: str):
    from .cli import build_parser

    return build_parser().parse_args([command, "--workspace", cfg.workspace, *extra])


def _first_user(cfg) -> str:
    from deltalake import DeltaTable

    ids = DeltaTable(cfg.table("user_sequences")).to_pyarrow_table(columns=["user_id"])["user_id"].to_pylist()
    return sorted(ids)[0]


def _size(path: Path) -> str:
    if not path.exists():
        return "-"
    n = sum(f.stat().st_size for f in path.rglob("*") if f.is_file()) if path.is_dir() else path.stat().st_size
    return f"{n / 2**20:,.1f} MiB"


def _train(cfg):
    """The train step: reuse the version trained on these silver tables with this config, else train.
    Returns (exit code, model version or None)."""
    from . import train
    from .errors import GuimError
    from .registry import trained_version

    mv = trained_version(cfg, cfg.train)
    if mv is not None:
        print(f"model version {mv.version} was trained on these silver tables with this configuration: "
              f"reusing it, nothing to train")
    else:
        rc = train.run(cfg, _args("train", cfg))
        if rc:
            return rc, None
        mv = trained_version(cfg, cfg.train)
    if mv.tags.get("gate.decision") != "accepted":
        raise GuimError(f"model version {mv.version} is not better than popularity "
                        f"({mv.tags.get('gate.reason', 'no comparison recorded')}), so the demo neither embeds "
                        f"nor publishes it; train longer, e.g. --set demo.train_epochs={2 * cfg.train.epochs}")
    return 0, mv.version


def run(cfg, args) -> int:
    """CLI entry: ``guim demo [--workspace DIR]``."""
    from .cli import COMMANDS
    from .config import replace
    from .recommend import format_table, recommend

    t_all = time.perf_counter()
    times = {}
    stage_cfg = replace(cfg, train=replace(cfg.train, epochs=cfg.demo.train_epochs))
    name, version = cfg.train.model_name, None
    for step in STEPS:
        print(f"\n== guim {step} " + "=" * (60 - len(step)), flush=True)
        t0 = time.perf_counter()
        if step == "train":
            rc, version = _train(stage_cfg)
        else:
            extra = {"ingest": ("--source", "synthetic"), "embed": ("--model-uri", f"models:/{name}/{version}"),
                     "publish": ("--model-version", str(version))}.get(step, ())
            rc = importlib.import_module(COMMANDS[step][0]).run(stage_cfg, _args(step, cfg, *extra))
        times[step] = time.perf_counter() - t0
        if rc:
            return rc
    print(f"\n== guim recommend " + "=" * 51, flush=True)
    user = cfg.demo.user or _first_user(cfg)
    t0 = time.perf_counter()
    print(format_table(recommend(cfg, user, cfg.demo.k, exclude_seen=True)))
    times["recommend"] = time.perf_counter() - t0
    total = time.perf_counter() - t_all
    ws = Path(cfg.workspace).resolve()
    from .publish import ann_dir, repo_dir

    print(f"\n== summary ({total / 60:.1f} min) " + "=" * 44)
    print("  " + ", ".join(f"{s} {t:.0f}s" for s, t in times.items()))
    print(f"  workspace     {ws}  (config: {ws / 'guim.yaml'})")
    print(f"  lakehouse     {cfg.resolve(cfg.paths.lakehouse)}  bronze/silver/gold Delta tables, "
          f"{_size(Path(cfg.resolve(cfg.paths.lakehouse)))}")
    print(f"  mlflow        {cfg.mlflow_uri}  model '{name}' version {version} "
          f"(mlflow ui --backend-store-uri {cfg.mlflow_uri})")
    print(f"  feast repo    {repo_dir(cfg)}  views user_interests, item_embedding; service guim_embeddings_v1")
    print(f"  item index    {ann_dir(cfg)}  {_size(ann_dir(cfg))}")
    print(f"  next          guim recommend {user} --exclude-seen --workspace {cfg.workspace}")
    return 0
