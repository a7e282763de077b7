"""Which fixed-length GUIM user vector should a downstream model join? Candidates probed on user_profile.

    python bench/user_vectors.py train --workspace WS --out DIR --seeds 0 1 2   # GUIM K=4 + ALS per seed
    python bench/user_vectors.py probe --workspace WS --out DIR --seeds 0       # one process per seed if you like
    python bench/user_vectors.py table --workspace WS --out DIR --seeds 0 1 2   # Markdown table

``train`` fits what ``guim bench`` fits for ``guim_k4`` and ``als`` (``train_model`` with K = 4
and the seed, ALS with the seed; ``--set train.epochs=N`` caps GUIM's epochs) and saves the GUIM
checkpoint and the ALS user factors under DIR, so every candidate of a seed comes from the same
model. ``probe`` builds the candidates (:func:`candidates`) and probes each with the user_profile
task. The probe has no valid split, so the labelled users are split once (KFold, seed 0) into
80 % choice users and 20 % held-out users:

- valid: probes cross-validated within the choice users; the candidate chosen is its argmax
  (``user_profile.choose_on_valid``, which never reads the held-out users);
- held-out: probes cross-validated within the held-out users only (disjoint from the choice);
- test: the task as ``guim bench`` runs it (every user; comparable with the bench's tables).
The load average (os.getloadavg) at the start and end of each seed's probes is recorded.
"""
from __future__ import annotations

import argparse
import os
import time
from pathlib import Path

import numpy as np


def _cfg(args):
    from guim_features.config import load_config

    return load_config(args.workspace, args.overrides)


def train(args) -> None:
    import torch

    from guim_features.downstream.baselines.als import ALS
    from guim_features.downstream.data import BenchData
    from guim_features.train import train_model

    cfg = _cfg(args)
    torch.set_num_threads(cfg.bench.threads)
    data = BenchData.load(cfg)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    for seed in args.seeds:
        if "als" in args.methods:
            t = time.perf_counter()
            np.save(out / f"als_seed{seed}.npy", ALS(cfg).embed(data, seed).user_matrix())
            print(f"als seed {seed}: {time.perf_counter() - t:.0f}s, load {os.getloadavg()}", flush=True)
        if "guim_k4" in args.methods:
            t = time.perf_counter()
            res = train_model(cfg, seed=seed, overrides={"K": 4}, mlflow_log=False, register=False, progress=False,
                              on_epoch_end=lambda e, r: print(f"  epoch {e + 1}: valid NDCG@20 {r['valid_ndcg@20']:.4f}"
                                                              f" {r['seconds']:.0f}s", flush=True))
            res.embedder.save(out / f"guim_k4_seed{seed}.pt")
            print(f"guim_k4 seed {seed}: {time.perf_counter() - t:.0f}s, valid/test {res.metrics}, "
                  f"load {os.getloadavg()}", flush=True)


def candidates(embedder, data) -> dict:
    """name -> (U, p) user vectors from one GUIM model, rows in data.user_ids order."""
    from guim_features.downstream.baselines.guim import embed_with
    from guim_features.embedder import als_fold_in, fold_in

    emb = embed_with(embedder, data)
    hist = [np.unique(data.test_input(u)) for u in range(data.n_users)]   # the whole history, as user_vector
    z, w = emb.users, emb.weights                                         # (U, K, d), (U, K)
    order = np.argsort(-w, axis=1, kind="stable")                          # (U, K) heaviest first
    items = emb.items / np.maximum(np.linalg.norm(emb.items, axis=1, keepdims=True), 1e-9)   # (V, d)
    hist_items = np.stack([items[h].mean(0) for h in hist])
    concat_query = np.concatenate([z.reshape(len(z), -1), w], 1)           # (U, K*d + K)
    return {
        "mean_w (today)": np.einsum("uk,ukd->ud", w, z),
        "concat by query + weights": concat_query,
        "concat by weight + weights": np.concatenate([np.take_along_axis(z, order[..., None], 1).reshape(len(z), -1),
                                                      np.take_along_axis(w, order, 1)], 1),
        "history item mean": hist_items,
        "history fold-in (ALS rule)": embedder.fold_in(hist),
        # with a head, user_vector (emb.profile) is the head's d floats then the fold-in's d
        **({"profile head": emb.profile[:, :embedder.d], "profile head + history fold-in": emb.profile}
           if embedder.model.profile is not None else {}),
        "concat by query + weights + history item mean": np.concatenate([concat_query, hist_items], 1),
        **{f"history fold-in, reg {reg:g}": fold_in(emb.items, hist, reg=reg) for reg in (0.5, 5.0)},
        "history fold-in, vectors not normalised": als_fold_in(emb.items, hist, 1.0, 0.05),
    }


def probe(args) -> None:
    """Per seed: every candidate's valid (choice users), held-out and all-user (as `guim bench`)
    scores, written to DIR/probe_seed<S>.json (seeds can run as separate processes)."""
    import json

    from sklearn.model_selection import KFold

    from guim_features.downstream.data import BenchData
    from guim_features.downstream.tasks import user_profile
    from guim_features.embedder import load_embedder

    cfg = _cfg(args)
    data = BenchData.load(cfg)
    out = Path(args.out)
    labelled = np.array(sorted(set(data.labels_users["user_id"].astype(str).map(data.user_row).dropna().astype(int))))
    choice, held = next(KFold(cfg.bench.probe_folds, shuffle=True, random_state=0).split(labelled))
    choice, held = labelled[choice], labelled[held]
    for seed in args.seeds:
        load0 = os.getloadavg()
        cands = candidates(_embedder(cfg, out, seed), data)
        if (out / f"als_seed{seed}.npy").exists():
            cands["ALS user factors"] = np.load(out / f"als_seed{seed}.npy")
        if args.only:
            cands = {k: v for k, v in cands.items() if k in args.only}
        guim = {k: v for k, v in cands.items() if k != "ALS user factors"}
        best, valid = user_profile.choose_on_valid(guim, data, cfg.bench, choice)    # held-out users unread
        if "ALS user factors" in cands:
            valid["ALS user factors"] = user_profile.score(cands["ALS user factors"], data, cfg.bench, choice)["mean"]
        rows = {name: {"length": int(x.shape[1]), "valid": valid[name],
                       "held_out": user_profile.score(x, data, cfg.bench, held),
                       "test": user_profile.score(x, data, cfg.bench)} for name, x in cands.items()}
        res = {"seed": seed, "chosen": best, "rows": rows, "users": {"choice": len(choice), "held_out": len(held)},
               "load": {"start": load0, "end": os.getloadavg(), "cpus": os.cpu_count()}}
        (out / f"probe_seed{seed}.json").write_text(json.dumps(res, indent=1))
        print(f"seed {seed}: chosen {best}; load {load0} -> {os.getloadavg()}", flush=True)


def _embedder(cfg, out: Path, seed: int):
    """The seed's final checkpoint, else the latest epoch of its unfinished run (train.checkpoint_dir
    = ck_seed<S>, its last.pt; a fallback for a run stopped early, reported as such)."""
    import dataclasses

    import torch

    from guim_features.config import TrainConfig
    from guim_features.data import ItemBank
    from guim_features.embedder import Embedder, load_embedder
    from guim_features.model import GUIM, model_args

    if (out / f"guim_k4_seed{seed}.pt").exists():
        return load_embedder(str(out / f"guim_k4_seed{seed}.pt"))
    state = torch.load(Path(cfg.workspace) / f"ck_seed{seed}" / "last.pt", map_location="cpu", weights_only=False)
    known = {f.name for f in dataclasses.fields(TrainConfig)}
    tc = TrainConfig(**{k: v for k, v in state["train_config"].items() if k in known})
    bank = ItemBank(cfg)
    model = GUIM(model_args(tc, bank.sizes()))
    model.tower.set_bank(bank.arrays())
    model.load_state_dict(state["best_state"])
    print(f"seed {seed}: no final checkpoint; using the best of {state['epoch']} finished epochs", flush=True)
    return Embedder(model)


def table(args) -> None:
    """The Markdown table over DIR/probe_seed*.json: mean ± 95 % t-interval half-width (ddof 1)."""
    import json

    from guim_features.downstream.metrics import spread

    runs = [json.loads((Path(args.out) / f"probe_seed{s}.json").read_text()) for s in args.seeds]
    fmt = lambda v: (lambda s: f"{s['mean']:.4f} ± {s['ci95']:.4f}")(spread(v))   # noqa: E731
    print(f"seeds {args.seeds}; users: {runs[0]['users']}; load (1/5/15 min) per seed: "
          + "; ".join(f"{r['load']['start'][0]:.1f}-{r['load']['end'][0]:.1f}" for r in runs)
          + f" on {runs[0]['load']['cpus']} CPUs; GUIM vector chosen on valid per seed: {[r['chosen'] for r in runs]}\n")
    print("| user vector | length | valid mean | held-out mean | test mean | test gender_auc | test age_bucket_macro_f1 "
          "| test occupation_macro_f1 |\n| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: |")
    for name, row in runs[0]["rows"].items():
        col = lambda f: fmt([f(r["rows"][name]) for r in runs])   # noqa: E731
        print(f"| {name} | {row['length']} | {col(lambda r: r['valid'])} | {col(lambda r: r['held_out']['mean'])} | "
              + " | ".join(col(lambda r, k=k: r["test"][k]) for k in ("mean", "gender_auc", "age_bucket_macro_f1",
                                                                        "occupation_macro_f1")) + " |")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("stage", choices=("train", "probe", "table"))
    ap.add_argument("--workspace", required=True)
    ap.add_argument("--out", required=True, help="folder of the checkpoints and ALS factors")
    ap.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    ap.add_argument("--methods", nargs="+", default=["als", "guim_k4"], help="train: what to fit")
    ap.add_argument("--only", nargs="*", default=[], help="probe: only these candidates (names as in the table)")
    ap.add_argument("--set", action="append", default=[], dest="overrides", help="config override, e.g. train.threads=1")
    args = ap.parse_args()
    {"train": train, "probe": probe, "table": table}[args.stage](args)


if __name__ == "__main__":
    main()
