"""The transition prior on trained models: next-item ranking with and without it, weight chosen on valid.

    python bench/transition_prior.py --workspace WS [--set train.transition_window=3] [--ks 5,10,20] CHECKPOINT ...

For each checkpoint (``guim train``'s ``checkpoint_dir/model.pt``) this does what ``guim train --set
train.transition_window=W`` does after training (``train.fit_transition_prior``): count the item
pairs of the workspace's training parts, choose the blend weight among ``train.transition_weights``
by valid NDCG@20, and rank every valid and test user with and without it (the whole catalogue, the
user's earlier items excluded; valid ranked with the training parts' pairs, test with those of the
training and valid parts, and test also with the training parts' alone, "train counts"); and, for
reference, by the counts alone (no model; items the history never led to are ranked by training
popularity). The model's weights are not touched, so a checkpoint trained
without the option gives the figures the same run with it would have given. Several checkpoints
(seeds) add the mean and the 95 % t-interval (ddof 1) of each column. ``--ks``: the cut-offs
(default 10 and 20; 20 is always ranked, the weight is chosen by NDCG@20). The load average
(os.getloadavg) at the start and the end is printed. The checkpoints must share the workspace's
item index (the same ``guim sequences``).
"""
from __future__ import annotations

import argparse
import os


def main() -> None:
    import torch
    from ensemble import cut_offs          # bench/ensemble.py, beside this script

    from guim_features.config import load_config
    from guim_features.downstream.metrics import spread
    from guim_features.embedder import from_checkpoint
    from guim_features.data import item_counts, train_sequences
    from guim_features.model.transitions import TransitionPrior
    from guim_features.train import _train_config, fit_transition_prior, rank_split

    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--workspace", required=True)
    p.add_argument("--set", action="append", default=[], dest="overrides",
                   help="config override, e.g. train.transition_window=3 (default: 1 when the config has 0)")
    p.add_argument("--ks", default="10,20", help="cut-offs of Recall@k and NDCG@k, comma-separated")
    p.add_argument("checkpoints", nargs="+", help="model.pt files of guim train runs")
    args = p.parse_args()
    ks = cut_offs(p, args.ks)
    load_start = os.getloadavg()
    cfg = load_config(args.workspace, args.overrides)
    torch.set_num_threads(cfg.train.threads or 1)
    cpu = torch.device("cpu")
    rows = {}
    for ck in args.checkpoints:
        model = from_checkpoint(ck).model
        tc = _train_config(cfg, None, {"max_len": model.args["max_len"],
                                       "transition_window": cfg.train.transition_window or 1})
        prior, m = fit_transition_prior(model, cfg, tc, cpu, progress=True, ks=tuple(sorted({*ks, 20})))
        out = {(name, which): {k[len(pre):]: v for k, v in m.items() if k.startswith(pre + which)}
               for name, pre in (("model alone", "model_only_"), ("with the prior", ""))
               for which in ("valid", "test")}
        out[("with the prior, train counts", "test")] = {k[len("train_counts_"):]: v for k, v in m.items()
                                                          if k.startswith("train_counts_test")}
        rows[ck] = (prior.weight, out)
        print(f"{ck}: weight {prior.weight:g}", flush=True)
    keys = [f"recall@{k}" for k in ks] + [f"ndcg@{k}" for k in ks]
    # the reference: the counts alone (P(j | history), ties by training popularity), no model; valid
    # with the training parts' pairs, test with the training and valid parts' (the fit's prior)
    counts = item_counts(cfg, prior.n_items)
    ties = 1e-9 * (counts / counts.max())[None, :]
    before_valid = TransitionPrior.fit(train_sequences(cfg), prior.n_items, prior.window, prior.decay, prior.follow)
    ref = {which: rank_split(cfg, which, tc.max_len, tc.eval_batch_size, lambda b, p=p: p.probs(b["items"]) + ties,
                             prior.n_items, ks=ks)
           for which, p in (("valid", before_valid), ("test", prior))}
    head = " | ".join(k.replace("recall", "R").replace("ndcg", "NDCG") for k in keys)
    print(f"\n| checkpoint | weight | ranking | split | {head} |")
    print("| --- | ---: | --- | --- |" + " ---: |" * len(keys))
    for which, m in ref.items():
        print(f"| (none) | | the prior alone, ties by popularity | {which} | "
              + " | ".join(f"{m[f'{which}_{k}']:.4f}" for k in keys) + " |")
    for ck, (w, out) in rows.items():
        for (name, which), m in out.items():
            print(f"| {ck} | {w:g} | {name} | {which} | " + " | ".join(f"{m[f'{which}_{k}']:.4f}" for k in keys) + " |")
    if len(rows) > 1:
        print(f"\n| mean of {len(rows)} (± 95 % t-interval) | ranking | split | {head} |")
        print("| --- | --- | --- |" + " ---: |" * len(keys))
        for name_which in next(iter(rows.values()))[1]:
            name, which = name_which
            cells = []
            for k in keys:
                s = spread([out[name_which][f"{which}_{k}"] for _, out in rows.values()])
                cells.append(f"{s['mean']:.4f} ± {s['ci95']:.4f}")
            print(f"| | {name} | {which} | " + " | ".join(cells) + " |")
    print(f"load average at the start {load_start[0]:.1f}, at the end {os.getloadavg()[0]:.1f} ({os.cpu_count()} CPUs)")


if __name__ == "__main__":
    main()
