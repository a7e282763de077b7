"""Choose item2vec, ALS and SASRec settings on the VALID split (never the test split); prints Markdown.

    python bench/tune_baselines.py --workspace /tmp/ml100k        # after `guim ingest` + `guim sequences`
    python bench/tune_baselines.py --workspace /tmp/ml100k --methods sasrec
    python bench/tune_baselines.py --workspace WS --grid item2vec_window=3,20 --grid als_alpha=1,40

`--grid KEY=V,V,...` replaces one axis of a grid (the keys of GRIDS below), to spend a smaller
budget on a larger data set.

Each setting is fitted on the train part and scored by next_item Recall@20 on
``BenchData.valid_view()`` (users represented from their train events, targets = their valid
events). SASRec early-stops on the valid split itself (as GUIM's trainer does), so its score is
its best epoch's valid Recall@20 (``SASRec.best_valid``), with its epoch cap and patience as
GUIM's (train.epochs, bench.sasrec_patience = train.patience). Its grid, 8 settings on one seed
(lr 1e-3/2e-3 x dropout 0.2/0.5 x 1/2 blocks), is the budget GUIM's own settings were chosen
with (7 runs on one seed, guim_features/downstream/README.md). The best row of each grid is what
`guim bench` should use for that data set (``--set bench.item2vec_window=...`` etc.; the defaults
in guim_features/config.py are the ML-100K choices).
"""
from __future__ import annotations

import argparse
import dataclasses
import itertools
import time

import numpy as np


GRIDS = {   # every axis of every method's grid; --grid replaces one
    "item2vec": {"item2vec_window": (2, 5, 10, 20), "item2vec_sample": (1e-3, 1e-4),
                 "item2vec_recent": (1, 3, 5, 10)},          # the user rule needs no refit
    "als": {"als_reg": (0.01, 0.05, 0.2), "als_alpha": (1.0, 10.0, 40.0)},
    "sasrec": {"sasrec_lr": (1e-3, 2e-3), "sasrec_dropout": (0.2, 0.5), "sasrec_layers": (1, 2)},
}


def parse_grid(items: list) -> dict:
    """["item2vec_window=3,20", ...] -> GRIDS with those axes replaced (values typed as the axis's)."""
    grids = {m: dict(g) for m, g in GRIDS.items()}
    for item in items:
        key, _, values = item.partition("=")
        method = next((m for m, g in grids.items() if key in g), None)
        if method is None or not values:
            known = ", ".join(k for g in GRIDS.values() for k in g)
            raise SystemExit(f"--grid {item!r}: expected KEY=V,V,... with KEY one of {known}")
        kind = type(GRIDS[method][key][0])
        grids[method][key] = tuple(kind(v) for v in values.split(","))
    return grids


def _with(cfg, **bench):
    return dataclasses.replace(cfg, bench=dataclasses.replace(cfg.bench, **bench))


def _score(view, emb, cfg) -> float:
    from guim_features.downstream.tasks import next_item

    return next_item.evaluate(view, emb, cfg.bench)["recall@20"]


def tune_item2vec(cfg, view, seed: int, grid: dict) -> list:
    from guim_features.downstream.baselines import Embeddings, recent_mean
    from guim_features.downstream.baselines.item2vec import Item2Vec

    rows = []
    for window, sample in itertools.product(grid["item2vec_window"], grid["item2vec_sample"]):
        t = time.perf_counter()
        base = Item2Vec(_with(cfg, item2vec_window=window, item2vec_sample=sample)).embed(view, seed)
        fit = time.perf_counter() - t
        for recent in grid["item2vec_recent"]:        # the user rule needs no refit
            users = np.stack([recent_mean(base.items, view.test_input(u), recent) for u in range(view.n_users)])
            r = _score(view, Embeddings(base.items, users), cfg)
            rows.append(({"item2vec_window": window, "item2vec_sample": sample, "item2vec_recent": recent}, r, fit))
    return rows


def tune_als(cfg, view, seed: int, grid: dict) -> list:
    from guim_features.downstream.baselines.als import ALS

    rows = []
    for reg, alpha in itertools.product(grid["als_reg"], grid["als_alpha"]):
        t = time.perf_counter()
        emb = ALS(_with(cfg, als_reg=reg, als_alpha=alpha)).embed(view, seed)
        rows.append(({"als_reg": reg, "als_alpha": alpha}, _score(view, emb, cfg), time.perf_counter() - t))
    return rows


def tune_sasrec(cfg, data, seed: int, grid: dict) -> list:
    from guim_features.downstream.baselines.sasrec import SASRec

    rows = []
    for lr, dropout, layers in itertools.product(grid["sasrec_lr"], grid["sasrec_dropout"], grid["sasrec_layers"]):
        t = time.perf_counter()
        m = SASRec(_with(cfg, sasrec_lr=lr, sasrec_dropout=dropout, sasrec_layers=layers))
        m.embed(data, seed)
        rows.append(({"sasrec_lr": lr, "sasrec_dropout": dropout, "sasrec_layers": layers, "epochs": m.epochs_run},
                     m.best_valid, time.perf_counter() - t))
    return rows


def main() -> None:
    from guim_features.downstream.data import BenchData
    from guim_features.config import load_config

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--workspace", required=True)
    ap.add_argument("--methods", default="item2vec,als")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--set", action="append", default=[], dest="overrides", help="config override, e.g. bench.threads=1")
    ap.add_argument("--grid", action="append", default=[], metavar="KEY=V,V",
                    help="replace one axis of a grid, e.g. item2vec_window=3,20")
    args = ap.parse_args()
    grids = parse_grid(args.grid)
    cfg = load_config(args.workspace, args.overrides)
    import torch

    torch.set_num_threads(cfg.bench.threads)
    data = BenchData.load(cfg)
    view = data.valid_view()
    for name in args.methods.split(","):
        if name == "sasrec":
            rows = tune_sasrec(cfg, data, args.seed, grids[name])   # fits on the train part, early-stops on valid
        else:
            rows = {"item2vec": tune_item2vec, "als": tune_als}[name](cfg, view, args.seed, grids[name])
        best = max(rows, key=lambda r: r[1])
        print(f"\n### {name} (valid Recall@20, {view.n_users} users)\n")
        print("| settings | valid Recall@20 | fit s |\n| --- | ---: | ---: |")
        for s, r, sec in rows:
            mark = "**" if s is best[0] else ""
            print(f"| {mark}{', '.join(f'{k}={v}' for k, v in s.items())}{mark} | {r:.4f} | {sec:.0f} |")
        print(f"\nbest: " + " ".join(f"--set bench.{k}={v}" for k, v in best[0].items() if k != "epochs"),
              flush=True)


if __name__ == "__main__":
    main()
