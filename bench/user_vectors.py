"""Which fixed-length GUIM user vector should a downstream model join? Candidates probed on user_profile.

    python bench/user_vectors.py train --workspace WS --out DIR --seeds 0 1 2   # GUIM K=4 + ALS per seed
    python bench/user_vectors.py probe --workspace WS --out DIR                  # Markdown table

``train`` fits exactly what ``guim bench`` fits for ``guim_k4`` and ``als`` (``train_model`` with
K = 4 and the seed, ALS with the seed) and saves the GUIM checkpoint and the ALS user factors
under DIR, so the candidates below are all read from the same model per seed. ``probe`` builds
every candidate from the checkpoint and probes it with the user_profile task:

- valid: the users are split into ``bench.probe_folds`` parts (KFold, seed 0); for each part the
  probes are cross-validated on the OTHER parts only (``user_profile.score(..., users=...)``) and
  the candidate with the best headline is chosen there (``user_profile.choose_on_valid``); the
  valid column is the mean over parts, and "chosen" counts how often each candidate won;
- test: the task as ``guim bench`` runs it (probes cross-validated over every user).
The load average (os.getloadavg) is printed with the table.
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

    from guim_features.bench.baselines.als import ALS
    from guim_features.bench.data import BenchData
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
    from guim_features.bench.baselines.guim import embed_with

    emb = embed_with(embedder, data)
    z, w = emb.users, emb.weights                                         # (U, K, d), (U, K)
    zn = z / np.linalg.norm(z, axis=-1, keepdims=True)
    order = np.argsort(-w, axis=1, kind="stable")                          # (U, K) heaviest first
    items = emb.items / np.maximum(np.linalg.norm(emb.items, axis=1, keepdims=True), 1e-9)   # (V, d)
    hist_items = np.stack([items[np.unique(data.test_input(u))].mean(0) for u in range(data.n_users)])
    # the encoder over the whole history: every max_len chunk from the end, mixtures averaged
    L, seqs, owner = embedder.max_len, {k: [] for k in ("item_idx", "behavior", "gaps")}, []
    for u in range(data.n_users):
        n = len(data.test_input(u))
        for end in range(n, 0, -L):
            for k in seqs:
                seqs[k].append(data.test_input(u, k)[max(0, end - L):end])
            owner.append(u)
    cz, cw = embedder.encode_users(seqs["item_idx"], seqs["behavior"], seqs["gaps"])   # (C, K, d), (C, K)
    owner = np.array(owner)
    chunk_mean = np.einsum("ck,ckd->cd", cw, cz)                           # (C, d)
    hist_enc = np.stack([chunk_mean[owner == u].mean(0) for u in range(data.n_users)])
    mean_w = np.einsum("uk,ukd->ud", w, z)
    # ALS's fold-in rule (bench.als_alpha, bench.als_reg) with GUIM's item vectors as the fixed factors
    gram, fold = items.T @ items, np.zeros_like(hist_items)
    for u in range(data.n_users):
        y = items[np.unique(data.test_input(u))]                           # (n_u, d)
        fold[u] = np.linalg.solve(gram + y.T @ y + 0.05 * len(y) * np.eye(len(gram)), 2 * y.sum(0))
    concat_query = np.concatenate([z.reshape(len(z), -1), w], 1)           # (U, K*d + K)
    return {
        "mean_w (today)": mean_w,
        "mean_w of normalised": np.einsum("uk,ukd->ud", w, zn),
        "mean_w + weights": np.concatenate([mean_w, w], 1),
        "concat by query + weights": concat_query,
        "concat by weight + weights": np.concatenate([np.take_along_axis(z, order[..., None], 1).reshape(len(z), -1),
                                                      np.take_along_axis(w, order, 1)], 1),
        "history item mean": hist_items,
        "history encoder mean": hist_enc,
        "history fold-in (ALS rule)": fold,
        "mean_w + history item mean": np.concatenate([mean_w, hist_items], 1),
        "concat by query + weights + history item mean": np.concatenate([concat_query, hist_items], 1),
    }


def probe(args) -> None:
    from sklearn.model_selection import KFold

    from guim_features.bench.data import BenchData
    from guim_features.bench.metrics import spread
    from guim_features.bench.tasks import user_profile
    from guim_features.embedder import load_embedder

    cfg = _cfg(args)
    load0 = os.getloadavg()
    data = BenchData.load(cfg)
    out = Path(args.out)
    labelled = np.array(sorted(set(data.labels_users["user_id"].astype(str).map(data.user_row).dropna().astype(int))))
    parts = list(KFold(cfg.bench.probe_folds, shuffle=True, random_state=0).split(labelled))
    valid, test, chosen, attrs = {}, {}, {}, {}
    for seed in args.seeds:
        cands = candidates(load_embedder(str(out / f"guim_k4_seed{seed}.pt")), data)
        if (out / f"als_seed{seed}.npy").exists():
            cands["ALS user factors"] = np.load(out / f"als_seed{seed}.npy")
        if args.only:
            cands = {k: v for k, v in cands.items() if any(s in k for s in args.only)}
        per_part = []
        for keep, _ in parts:               # the held-out part is never read by the choice
            best, scores = user_profile.choose_on_valid(cands, data, cfg.bench, labelled[keep])
            chosen.setdefault(best, []).append(seed)
            per_part.append(scores)
        for name, x in cands.items():
            valid.setdefault(name, []).append(float(np.mean([s[name] for s in per_part])))
            t = user_profile.score(x, data, cfg.bench)
            test.setdefault(name, []).append(t["mean"])
            for k, v in t.items():
                attrs.setdefault(name, {}).setdefault(k, []).append(v)
        print(f"seed {seed} done, load {os.getloadavg()}", flush=True)
    fmt = lambda s: f"{s['mean']:.4f} ± {s['ci95']:.4f}"   # noqa: E731
    print(f"\nseeds {args.seeds}; load at the start {load0}, at the end {os.getloadavg()} "
          f"({os.cpu_count()} CPUs); mean ± 95 % t-interval half-width (ddof 1)\n")
    print("| user vector | length | valid mean | chosen (parts x seeds) | test mean | test gender_auc | "
          "test age_bucket_macro_f1 | test occupation_macro_f1 |\n| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: |")
    for name in valid:
        a = attrs[name]
        cells = [fmt(spread(a[k])) if k in a else "-" for k in ("gender_auc", "age_bucket_macro_f1",
                                                                  "occupation_macro_f1")]
        print(f"| {name} | {cands[name].shape[1]} | {fmt(spread(valid[name]))} | {len(chosen.get(name, []))} | "
              f"{fmt(spread(test[name]))} | " + " | ".join(cells) + " |")
    print("\nraw:", {"valid": valid, "test": test})


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("stage", choices=("train", "probe"))
    ap.add_argument("--workspace", required=True)
    ap.add_argument("--out", required=True, help="folder of the checkpoints and ALS factors")
    ap.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    ap.add_argument("--methods", nargs="+", default=["als", "guim_k4"], help="train: what to fit")
    ap.add_argument("--only", nargs="*", default=[], help="probe: candidates whose name contains one of these")
    ap.add_argument("--set", action="append", default=[], dest="overrides", help="config override, e.g. train.threads=1")
    args = ap.parse_args()
    {"train": train, "probe": probe}[args.stage](args)


if __name__ == "__main__":
    main()
