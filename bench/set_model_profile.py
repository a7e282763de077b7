"""How far does a user vector trained on the whole history get on user_profile? A bound for a pooled head.

    python bench/set_model_profile.py --workspace WS --seeds 0 1 2 [--set bench.threads=1]

GUIM's ``user_vector`` folds the whole history in over item vectors trained for the next item
(guim_features/downstream/README.md, "User vector"); ALS leads it on ML-100K. The untried idea was
a pooled head trained on a whole-history objective. Before building one into GUIM, this measures
what such an objective can give at best, with nothing but it: a set model (Mult-DAE's objective,
Liang et al. 2018) with its own free item embeddings,

    u = z + MLP(z),  z = mean of E_in[i] over a random ``keep`` share of the user's training items,
    loss = -(1/|S|) sum_{j in S} log softmax(u E_outᵀ)_j      (S: every training item of the user),

trained on every user's train part, then encoded from the whole test input (train + valid events,
as ``user_vector`` and ALS read it). Its settings (``keep`` x epochs, lr 1e-2) are chosen per seed on
the valid users of ``bench/user_vectors.py`` (80 % of the labelled users, KFold seed 0; probes
cross-validated within them); held-out and test as there. ALS is the bench's, fitted with the seed.
"""
from __future__ import annotations

import argparse
import os
import time

import numpy as np

GRID = [(keep, epochs) for keep in (0.3, 0.5, 0.8) for epochs in (40, 150)]


def set_model(train_sets: list, n_items: int, d: int, keep: float, epochs: int, lr: float, seed: int,
              batch: int = 64):
    """Train the set model on per-user arrays of distinct item_idx; returns encode(sets) -> (B, d)."""
    import torch

    torch.manual_seed(seed)
    rng = np.random.default_rng(seed)
    e_in, e_out = torch.nn.Embedding(n_items, d), torch.nn.Embedding(n_items, d)
    for e in (e_in, e_out):
        torch.nn.init.normal_(e.weight, std=0.1)
    head = torch.nn.Sequential(torch.nn.Linear(d, d), torch.nn.Tanh(), torch.nn.Linear(d, d))
    opt = torch.optim.Adam([*e_in.parameters(), *e_out.parameters(), *head.parameters()], lr=lr)
    gen = torch.Generator().manual_seed(seed)

    def encode(sets, drop: bool):
        z = []
        for s in sets:
            s = torch.as_tensor(s, dtype=torch.long)
            if drop and len(s) > 1:
                m = torch.rand(len(s), generator=gen) < keep
                m[torch.randint(len(s), (1,), generator=gen)] = True     # at least one item in
                s = s[m]
            z.append(e_in(s).mean(0))
        z = torch.stack(z)                                                 # (B, d)
        return z + head(z)

    users = np.flatnonzero([len(s) > 0 for s in train_sets])
    for _ in range(epochs):
        rng.shuffle(users)
        for b in range(0, len(users), batch):
            idx = users[b:b + batch]
            u = encode([train_sets[i] for i in idx], True)                 # (B, d)
            logp = torch.log_softmax(u @ e_out.weight.T, 1)                # (B, V)
            y = torch.zeros_like(logp)
            for r, i in enumerate(idx):
                y[r, train_sets[i]] = 1.0
            loss = -(logp * y).sum(1).div(y.sum(1)).mean()
            opt.zero_grad()
            loss.backward()
            opt.step()

    def encode_eval(sets):
        with torch.no_grad():
            return encode(sets, False).numpy()

    return encode_eval


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

    cfg = load_config(args.workspace, args.overrides)
    torch.set_num_threads(cfg.bench.threads)
    data = BenchData.load(cfg)
    train_sets = [np.unique(data.train_items(u)) for u in range(data.n_users)]
    test_sets = [np.unique(data.test_input(u)) for u in range(data.n_users)]
    labelled = np.array(sorted(set(data.labels_users["user_id"].astype(str).map(data.user_row).dropna().astype(int))))
    choice, held = next(KFold(cfg.bench.probe_folds, shuffle=True, random_state=0).split(labelled))
    choice, held = labelled[choice], labelled[held]
    load0 = os.getloadavg()
    rows = {"set model (chosen on valid)": [], "ALS user factors": []}
    for seed in args.seeds:
        t = time.perf_counter()
        cands = {f"keep {k}, {e} epochs": set_model(train_sets, data.n_items, 64, k, e, 1e-2, seed)(test_sets)
                 for k, e in GRID}
        best, valid = user_profile.choose_on_valid(cands, data, cfg.bench, choice)
        als = ALS(cfg).embed(data, seed).user_matrix()
        for name, x, v in (("set model (chosen on valid)", cands[best], valid[best]),
                           ("ALS user factors", als, user_profile.score(als, data, cfg.bench, choice)["mean"])):
            rows[name].append({"valid": v, "held_out": user_profile.score(x, data, cfg.bench, held)["mean"],
                               "test": user_profile.score(x, data, cfg.bench)})
        print(f"seed {seed}: chosen {best!r} (valid {', '.join(f'{k}: {v:.4f}' for k, v in valid.items())}); "
              f"{time.perf_counter() - t:.0f}s", flush=True)
    fmt = lambda v: (lambda s: f"{s['mean']:.4f} ± {s['ci95']:.4f}")(spread(v))   # noqa: E731
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
