"""Next-item ranking by several trained models' mean logits (a seed ensemble), beside the first alone.

    python bench/ensemble.py --workspace WS CHECKPOINT [CHECKPOINT ...]

Ranks every user of the valid and test splits exactly as ``guim train``'s final evaluation does
(the whole catalogue, the user's earlier items excluded, ties against the target) by the mean of
the models' training logits, and by the first model's alone. It measures how much of the gap to a
target the seed-to-seed variance accounts for: what averaging N models of the same settings gains
at N times the cost. The checkpoints must share the workspace's item index (the same
``guim sequences``). The load average (os.getloadavg) at the start and the end is printed.
"""
from __future__ import annotations

import argparse
import os

KEYS = ("recall@10", "recall@20", "ndcg@10", "ndcg@20")


def main() -> None:
    import torch
    import torch.nn.functional as F

    from guim_features.config import load_config
    from guim_features.data import eval_batches, rank_metrics
    from guim_features.embedder import from_checkpoint
    from guim_features.errors import GuimError

    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--workspace", required=True)
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("checkpoints", nargs="+", help="model.pt files (checkpoint_dir/model.pt of guim train runs)")
    args = p.parse_args()
    load_start = os.getloadavg()
    torch.set_num_threads(args.threads)
    cfg = load_config(args.workspace)
    models = [from_checkpoint(c).model.eval() for c in args.checkpoints]
    sizes = {m.args["n_items"] for m in models}
    if len(sizes) > 1:
        raise GuimError(f"the checkpoints were trained on different item indexes (n_items {sorted(sizes)})")
    L = max(m.args["max_len"] for m in models)
    print(f"{len(models)} models: {', '.join(args.checkpoints)}")
    print("| split | ranking | Recall@10 | Recall@20 | NDCG@10 | NDCG@20 |")
    print("| --- | --- | ---: | ---: | ---: | ---: |")
    with torch.no_grad():
        cats = [m.catalogue().float() for m in models]
        for which in ("valid", "test"):
            tot = {"first model": {}, f"mean of {len(models)}": {}}
            for b in eval_batches(cfg, which, L, 512):
                t = [torch.as_tensor(b[k]) for k in ("items", "behavior", "gaps")]
                logits = []
                for m, cat in zip(models, cats):
                    interests, weights = m.encode_users(*t)
                    logits.append(m.logits(interests.float(), weights.float(), cat))
                for name, s in zip(tot, (logits[0], torch.stack(logits).mean(0))):
                    s = F.pad(s, (3, 0), value=float("-inf")).numpy()     # item_idx 0-2 are not items
                    for k, v in rank_metrics(s, b["target"], b["seen"]).items():
                        tot[name][k] = tot[name].get(k, 0.0) + v
            for name, d in tot.items():
                print(f"| {which} | {name} | " + " | ".join(f"{d[k] / d['n']:.4f}" for k in KEYS) + " |")
    print(f"load average at the start {load_start[0]:.1f}, at the end {os.getloadavg()[0]:.1f} ({os.cpu_count()} CPUs)")


if __name__ == "__main__":
    main()
