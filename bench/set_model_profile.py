"""The profile head alone on user_profile: how far a whole-history objective gets, and its settings.

    python bench/set_model_profile.py --workspace WS --seeds 0 1 2 [--set bench.threads=1]

GUIM's ``user_vector`` is its profile head (guim_features/model/profile.py): a set model with
Mult-DAE's objective (Liang et al. 2018) and item tables of its own,

    u = z + MLP(z),  z = mean of E_in[i] over a random ``keep`` share of the user's training items,
    loss = -(1/|S|) sum_{j in S} log softmax(u E_outᵀ)_j      (S: every training item of the user).

This trains the head alone (no sequence model) on every user's train part, encodes each user from
the whole test input (train + valid events, as ``user_vector`` and ALS read it), and chooses
``keep`` x steps (:data:`GRID`; batches of 64, lr 1e-2) per seed on the valid users of
``bench/user_vectors.py`` (80 % of the labelled users, KFold seed 0; probes cross-validated within
them); held-out and test as there. ALS is the bench's, fitted with the seed. The defaults ``train.profile_keep`` and
``train.profile_steps`` come from this grid.

Also printed, not part of the choice: ALS's fold-in (``embedder.fold_in``) over the chosen head's own
output table E_out, at the ALS baseline's alpha and regularisations 1 and 10, alone and after the
head's vector: whether the head's co-occurrence tables, read the ALS way, pass ALS's factors.
"""
from __future__ import annotations

import argparse
import os
import time

import numpy as np

GRID = [(0.3, 1000), (0.5, 1000), (0.8, 1000), (0.5, 2250)]   # keep x steps (~68 and ~150 passes on ML-100K)


def set_model(train_sets: list, n_items: int, d: int, keep: float, steps: int, seed: int):
    """The package's profile head (guim_features/model/profile.py) trained alone on per-user arrays of
    distinct item_idx, with a seeded initialisation; returns it (``encode(sets)`` -> (B, d))."""
    import torch

    from guim_features.model.profile import ProfileHead, fit_profile

    torch.manual_seed(seed)
    head = ProfileHead(n_items, d)
    fit_profile(head, train_sets, steps, keep, seed=seed)
    return head


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--workspace", required=True)
    ap.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    ap.add_argument("--set", action="append", default=[], dest="overrides", help="config override")
    args = ap.parse_args()

    import torch
    from sklearn.model_selection import KFold

    from guim_features.config import load_config
    from guim_features.downstream.baselines.als import ALS
    from guim_features.downstream.data import BenchData
    from guim_features.downstream.metrics import spread
    from guim_features.downstream.tasks import user_profile
    from guim_features.data import catalogue_items
    from guim_features.embedder import fold_in
    from guim_features.schemas import FIRST_ITEM_INDEX

    cfg = load_config(args.workspace, args.overrides)
    torch.set_num_threads(cfg.bench.threads)
    data = BenchData.load(cfg)
    train_sets = [catalogue_items(data.train_items(u), data.n_items) for u in range(data.n_users)]
    test_sets = [catalogue_items(data.test_input(u), data.n_items) for u in range(data.n_users)]   # as user_vector
    labelled = np.array(sorted(set(data.labels_users["user_id"].astype(str).map(data.user_row).dropna().astype(int))))
    choice, held = next(KFold(cfg.bench.probe_folds, shuffle=True, random_state=0).split(labelled))
    choice, held = labelled[choice], labelled[held]
    load0 = os.getloadavg()
    rows, valids = {}, []                      # row name -> per-seed scores, in the order first scored
    for seed in args.seeds:
        t = time.perf_counter()
        heads = {f"keep {k}, {n} steps": set_model(train_sets, data.n_items, 64, k, n, seed) for k, n in GRID}
        cands = {name: head.encode(test_sets) for name, head in heads.items()}
        best, valid = user_profile.choose_on_valid(cands, data, cfg.bench, choice)
        e_out = heads[best].out.weight.detach().float().cpu().numpy().copy()
        e_out[:FIRST_ITEM_INDEX] = 0                                    # reserved rows: no item
        folded = {r: fold_in(e_out, test_sets, cfg.bench.als_alpha, r) for r in (1.0, 10.0)}
        extra = {f"fold-in over the head's E_out, reg {r:g}": x for r, x in folded.items()}
        extra["head + fold-in over its E_out, reg 1"] = np.concatenate([cands[best], folded[1.0]], 1)
        extra["ALS user factors"] = ALS(cfg).embed(data, seed).user_matrix()
        valids.append(valid)
        for name, x, v in (("profile head alone (chosen on valid)", cands[best], valid[best]),
                           *((n, x, user_profile.score(x, data, cfg.bench, choice)["mean"]) for n, x in extra.items())):
            rows.setdefault(name, []).append({"valid": v, "held_out": user_profile.score(x, data, cfg.bench, held)["mean"],
                               "test": user_profile.score(x, data, cfg.bench)})
        print(f"seed {seed}: chosen {best!r} (valid {', '.join(f'{k}: {v:.4f}' for k, v in valid.items())}); "
              f"{time.perf_counter() - t:.0f}s", flush=True)
    fmt = lambda v: (lambda s: f"{s['mean']:.4f} ± {s['ci95']:.4f}")(spread(v))   # noqa: E731
    print("\nvalid mean per setting over the seeds: " + "; ".join(
        f"{k}: {np.mean([v[k] for v in valids]):.4f}" for k in valids[0]))
    print(f"\nseeds {args.seeds}; users: choice {len(choice)}, held-out {len(held)}; load {load0[0]:.1f} -> "
          f"{os.getloadavg()[0]:.1f} on {os.cpu_count()} CPUs\n")
    print("| user vector | valid mean | held-out mean | test mean | test gender_auc | test age_bucket_macro_f1 "
          "| test occupation_macro_f1 |\n| --- | ---: | ---: | ---: | ---: | ---: | ---: |")
    for name, runs in rows.items():
        print(f"| {name} | {fmt([r['valid'] for r in runs])} | {fmt([r['held_out'] for r in runs])} | "
              + " | ".join(fmt([r["test"][k] for r in runs]) for k in ("mean", "gender_auc", "age_bucket_macro_f1",
                                                                         "occupation_macro_f1")) + " |")


if __name__ == "__main__":
    main()
