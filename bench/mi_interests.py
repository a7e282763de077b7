"""What each of GUIM's K interests contributes to multi_interest_retrieval, on one refit.

    python bench/mi_interests.py --workspace WS [--k 4] [--seed 0] [--set train.state_interests=0 ...]

Fits GUIM with K interests on the task's user-holdout view, exactly as ``guim bench`` does for
``guim_k<K>`` with that seed (``train.threads=1`` and ``bench.threads=1`` unless ``--set`` says
otherwise), and prints, over the scored held-out users:

- the task's own scores (Recall@20/@50, HitRate@50), which equal the bench's for that seed, under
  each ``bench.mi_merge`` (the configured one first);
- per interest: its mean softmax weight, its share of the configured merge's top 50 (the slots
  where its own score is the highest of the K), Recall@50 when it
  retrieves alone, and its mean best score (the model's own, a cosine for GUIM; a high one wins the max merge);
- the mean cosine between interests (near 1: they retrieve the same items);
- repeats: the share of the users' targets already among their input events, the share of the
  merged top 50 that are input events, and the targets found in those slots and in the others.
The load average (os.getloadavg) at the start and the end is printed with the figures.
"""
from __future__ import annotations

import argparse
import dataclasses
import os

import numpy as np


def analyse(view, emb, n: int = 50, merge: str = "max") -> dict:
    """The per-interest and repeat figures above for Embeddings ``emb`` of ``view``'s held-out users."""
    from guim_features.downstream.tasks.multi_interest_retrieval import each_interest_scores, merged_top
    from guim_features.schemas import FIRST_ITEM_INDEX

    rows = view.holdout_rows
    s = np.stack(list(each_interest_scores(emb, rows)), 1)                                # (B, K, V)
    s[:, :, :FIRST_ITEM_INDEX] = -np.inf
    K = s.shape[1]
    top = merged_top(emb, rows, n, merge)                                                      # (B, n)
    winner = np.take_along_axis(s.argmax(1), top, 1)                                      # (B, n)
    targets = [set(np.unique(view.test_targets(u)).tolist()) for u in rows]
    history = [set(view.test_input(u).tolist()) for u in rows]
    per = []
    for k in range(K):
        alone = np.argsort(-s[:, k], 1)[:, :n]
        per.append({"weight": float(emb.weights[rows, k].mean()), "merged_share": float((winner == k).mean()),
                    "recall_alone": float(np.mean([len(targets[j] & set(alone[j].tolist())) / len(targets[j])
                                                   for j in range(len(rows))])),
                    "best_score": float(s[:, k].max(1).mean())})
    users = emb.users[rows] / np.maximum(np.linalg.norm(emb.users[rows], axis=-1, keepdims=True), 1e-12)
    cos = np.einsum("bkd,bjd->kj", users, users) / len(rows)                               # (K, K)
    from_hist = [set(top[j].tolist()) & history[j] for j in range(len(rows))]
    return {"per_interest": per, "interest_cos": cos,
            "targets_repeat_share": float(np.mean([len(t & h) / len(t) for t, h in zip(targets, history)])),
            "repeats_per_user": float(np.mean([len(t & h) for t, h in zip(targets, history)])),
            "new_per_user": float(np.mean([len(t - h) for t, h in zip(targets, history)])),
            "top_history_share": float(np.mean([len(f) / n for f in from_hist])),
            "hits_history_slots": float(np.mean([len(f & t) for f, t in zip(from_hist, targets)])),
            "hits_other_slots": float(np.mean([len((set(top[j].tolist()) - history[j]) & targets[j])
                                               for j in range(len(rows))]))}


def main() -> None:
    import torch

    from guim_features.config import load_config
    from guim_features.downstream.baselines.guim import GuimTrained
    from guim_features.downstream.data import BenchData
    from guim_features.downstream.tasks import multi_interest_retrieval as mi

    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--workspace", required=True)
    p.add_argument("--k", type=int, default=4)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--set", action="append", default=[], dest="overrides", metavar="KEY=VALUE")
    args = p.parse_args()
    load_start = os.getloadavg()
    cfg = load_config(args.workspace, ["train.threads=1", "bench.threads=1", *args.overrides])
    torch.set_num_threads(cfg.bench.threads)
    view = mi.view(BenchData.load(cfg), cfg.bench)
    emb = GuimTrained(cfg, args.k).embed(view, args.seed)
    print(f"K = {args.k}, seed {args.seed}, {len(view.holdout_rows)} held-out users scored; "
          f"settings {args.overrides or 'defaults'}")
    merge = cfg.bench.mi_merge
    for m in [merge, *(x for x in mi.MERGES if x != merge)]:
        scores = mi.evaluate(view, emb, dataclasses.replace(cfg.bench, mi_merge=m))
        print(f"task, mi_merge={m}:", {k: round(v, 4) for k, v in scores.items()})
    a = analyse(view, emb, merge=merge)
    print("| interest | mean weight | share of merged top 50 | Recall@50 alone | mean best score |")
    print("| ---: | ---: | ---: | ---: | ---: |")
    for k, r in enumerate(a["per_interest"]):
        print(f"| {k} | {r['weight']:.3f} | {r['merged_share']:.3f} | {r['recall_alone']:.4f} | {r['best_score']:.3f} |")
    print("mean cosine between interests:\n" + np.array2string(a["interest_cos"], precision=2))
    print(f"targets already among the input events: {a['targets_repeat_share']:.3f} "
          f"({a['repeats_per_user']:.2f} repeated and {a['new_per_user']:.2f} new targets per user)")
    print(f"merged top 50: {a['top_history_share']:.3f} of it input events, finding {a['hits_history_slots']:.2f} "
          f"targets there and {a['hits_other_slots']:.2f} in the other slots")
    print(f"load average at the start {load_start[0]:.1f}, at the end {os.getloadavg()[0]:.1f} ({os.cpu_count()} CPUs)")


if __name__ == "__main__":
    main()
