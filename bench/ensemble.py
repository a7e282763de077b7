"""Next-item ranking by several trained models' mean logits (a seed ensemble), beside the first alone.

    python bench/ensemble.py --workspace WS [--ks 5,10,20] [--dropout-passes T] [--set train.transition_window=3]
        CHECKPOINT [CHECKPOINT ...]

Ranks every user of the valid and test splits exactly as ``guim train``'s final evaluation does
(the whole catalogue, the user's earlier items excluded, ties against the target) by the mean of
the models' training logits, and by the first model's alone (Recall and NDCG at each of ``--ks``,
default 10 and 20: lower cut-offs show where in the list two rankings differ). It measures how
much of the gap to a target the seed-to-seed variance accounts for: what averaging N models of the
same settings gains at N times the cost. The checkpoints must share the workspace's item index (the same
``guim sequences``). ``--dropout-passes T`` adds the first model's MC-dropout ranking: the mean
log-softmax of T user encodings with dropout on (the catalogue encoded once, without), an ensemble
inside one model at T times the inference cost. ``--set train.transition_window=W`` adds the mean's
ranking blended with the transition prior, its weight chosen on valid as ``guim train`` chooses it
(``train.fit_transition_prior`` on the mean logits). The load average (os.getloadavg) at the start and
the end is printed.
"""
from __future__ import annotations

import argparse
import os

def main() -> None:
    import numpy as np
    import torch

    from guim_features.config import load_config
    from guim_features.embedder import from_checkpoint
    from guim_features.errors import GuimError
    from guim_features.train import rank_split, ranking_score

    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--workspace", required=True)
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--ks", default="10,20", help="cut-offs of Recall@k and NDCG@k, comma-separated")
    p.add_argument("--dropout-passes", type=int, default=0, dest="passes",
                   help="also rank by the first model's mean over this many dropout passes (0: off)")
    p.add_argument("--set", action="append", default=[], dest="overrides",
                   help="config override, e.g. train.transition_window=3 (the prior on the mean)")
    p.add_argument("checkpoints", nargs="+", help="model.pt files (checkpoint_dir/model.pt of guim train runs)")
    args = p.parse_args()
    ks = cut_offs(p, args.ks)
    load_start = os.getloadavg()
    torch.set_num_threads(args.threads)
    cfg = load_config(args.workspace, args.overrides)
    models = [from_checkpoint(c).model for c in args.checkpoints]
    sizes = {m.args["n_items"] for m in models}
    if len(sizes) > 1:
        raise GuimError(f"the checkpoints were trained on different item indexes (n_items {sorted(sizes)})")
    L, cpu = max(m.args["max_len"] for m in models), torch.device("cpu")
    scores = [ranking_score(m, cpu) for m in models]
    mean = lambda b: np.mean([s(b) for s in scores], 0)                    # noqa: E731  (B, V)
    print(f"{len(models)} models: {', '.join(args.checkpoints)}")
    keys = [f"recall@{k}" for k in ks] + [f"ndcg@{k}" for k in ks]
    print("| split | ranking | " + " | ".join(k.replace("recall", "Recall").replace("ndcg", "NDCG") for k in keys) + " |")
    print("| --- | --- |" + " ---: |" * len(keys))
    V = models[0].args["n_items"]
    blended = {}
    if cfg.train.transition_window > 0:
        from guim_features.train import _train_config, fit_transition_prior

        tc = _train_config(cfg, None, {"max_len": L})
        prior, m = fit_transition_prior(models[0], cfg, tc, cpu, progress=True, ks=tuple(sorted({*ks, 20})),
                                        score=mean)
        blended = {which: {k: v for k, v in m.items() if k.startswith(which)} for which in ("valid", "test")}
        # the mean alone is the fit's weight-0 ranking: not ranked again
        alone = {which: {k[len("model_only_"):]: v for k, v in m.items() if k.startswith(f"model_only_{which}")}
                 for which in ("valid", "test")}
    for which in ("valid", "test"):
        rows = {"first model": rank_split(cfg, which, L, 512, scores[0], V, ks=ks),
                f"mean of {len(models)}": alone[which] if blended else rank_split(cfg, which, L, 512, mean, V, ks=ks)}
        if args.passes:
            rows[f"first model, mean of {args.passes} dropout passes"] = rank_split(
                cfg, which, L, 512, dropout_score(models[0], args.passes), V, ks=ks)
        if blended:
            rows[f"mean of {len(models)} with the prior (weight {prior.weight:g})"] = blended[which]
        for name, m in rows.items():
            print(f"| {which} | {name} | " + " | ".join(f"{m[f'{which}_{k}']:.4f}" for k in keys) + " |")
    print(f"load average at the start {load_start[0]:.1f}, at the end {os.getloadavg()[0]:.1f} ({os.cpu_count()} CPUs)")


def cut_offs(parser, text: str) -> tuple:
    """``--ks`` "5,10,20" -> (5, 10, 20), sorted and distinct; anything else is a usage error."""
    try:
        ks = tuple(sorted({int(k) for k in text.split(",")}))
    except ValueError:
        ks = ()
    if not ks or ks[0] < 1:
        parser.error(f"--ks {text}: expected positive whole numbers separated by commas, e.g. 5,10,20")
    return ks


def dropout_score(model, passes: int):
    """``score(batch)`` -> (B, V): the mean log-softmax over the catalogue of ``passes`` user
    encodings with dropout on (seeded, so a rerun repeats it); -inf below FIRST_ITEM_INDEX."""
    import torch

    from guim_features.schemas import FIRST_ITEM_INDEX

    model.eval()
    with torch.no_grad():
        cat = model.catalogue().float()                                      # (V - 3, d)

    def score(b):
        t = [torch.as_tensor(b[k]) for k in ("items", "behavior", "gaps")]
        torch.manual_seed(0)
        total = 0.0
        with torch.no_grad():
            model.train()
            for _ in range(passes):
                interests, weights = model.encode_users(*t)
                total = total + torch.log_softmax(model.logits(interests.float(), weights.float(), cat), -1)
            model.eval()
        return torch.nn.functional.pad(total / passes, (FIRST_ITEM_INDEX, 0), value=float("-inf")).numpy()

    return score


if __name__ == "__main__":
    main()
