"""Where a trained model's users' seen items lie relative to their interests (what ``recommend(...,
exclude_seen=True)`` pays depends on it).

    python bench/seen_near.py --workspace WS CHECKPOINT [--min-seen 20] [--k 20] [--ef 64]

For every user of the test split with more than ``--min-seen`` earlier items (the items ranking
excludes), each interest's ``--ef`` nearest items by cosine over the whole catalogue are found
exactly, and the user's seen items among them counted. An interest with more than ``ef - k`` of
them is one for which ``recommend``'s first search (``ef`` deep) leaves fewer than ``k`` allowed
items, so it searches a second time. ``bench/serving.py --seen-near`` times both cases.
"""
from __future__ import annotations

import argparse


def main() -> None:
    import numpy as np
    import torch

    from guim_features.config import load_config
    from guim_features.data import eval_batches
    from guim_features.embedder import from_checkpoint
    from guim_features.schemas import FIRST_ITEM_INDEX

    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--workspace", required=True)
    p.add_argument("checkpoint", help="model.pt of a guim train run on this workspace")
    p.add_argument("--min-seen", type=int, default=20, dest="min_seen")
    p.add_argument("--k", type=int, default=20)
    p.add_argument("--ef", type=int, default=64)
    args = p.parse_args()
    if args.ef <= args.k:
        p.error(f"--ef {args.ef} must be larger than --k {args.k}")
    torch.set_num_threads(1)
    cfg = load_config(args.workspace)
    model = from_checkpoint(args.checkpoint).model
    model.eval()
    with torch.no_grad():
        cat = torch.nn.functional.normalize(model.catalogue().float(), dim=-1)          # (V - 3, d)
    n_seen, in_top = [], []
    for b in eval_batches(cfg, "test", model.args["max_len"], 512):
        keep = [i for i, s in enumerate(b["seen"]) if len(np.unique(s)) > args.min_seen]
        if not keep:
            continue
        with torch.no_grad():
            interests, _ = model.encode_users(*[torch.as_tensor(b[k])[keep] for k in ("items", "behavior", "gaps")])
            s = torch.einsum("bkd,vd->bkv", torch.nn.functional.normalize(interests.float(), dim=-1), cat)
            top = s.topk(min(args.ef, cat.shape[0]), dim=-1).indices.numpy() + FIRST_ITEM_INDEX   # (B, K, ef)
        for j, i in enumerate(keep):
            seen = np.unique(b["seen"][i])
            n_seen.append(len(seen))
            in_top.extend(int(np.isin(t, seen).sum()) for t in top[j])
    if not n_seen:
        print(f"no test user has more than {args.min_seen} seen items")
        return
    a = np.asarray(in_top)
    short = int((a > args.ef - args.k).sum())
    print(f"{len(n_seen):,} users with more than {args.min_seen} seen items (median {np.median(n_seen):.0f}, "
          f"max {max(n_seen)}), {len(a):,} interests. Seen items among an interest's {args.ef} nearest: "
          f"mean {a.mean():.2f}, p90 {np.percentile(a, 90):.0f}, max {a.max()}. Interests left with fewer "
          f"than {args.k} allowed items (a second search): {short:,} ({short / len(a):.1%}).")


if __name__ == "__main__":
    main()
