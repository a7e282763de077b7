"""How much room the synthetic default leaves for a mixture of K interests on multi_interest_retrieval.

    python bench/synthetic_ceiling.py --workspace WS [--set bench.holdout_scored=valid] [--json OUT]

The synthetic generator draws every page view from a known distribution (planted interests with
their weights and drift, 8 % exploration, within-category popularity;
``synthetic.view_probabilities``). Ranking items by that distribution over the targets' time
window is the Bayes-optimal retrieval for the task's held-out users, and its log is a category
term plus an item term, so **one** (C + 1)-dimensional vector per user represents it exactly: on
this data a single vector loses nothing to a mixture, whatever the number of interests. This
script regenerates the workspace's synthetic data from its ``ingest`` settings (checking that the
user and item ids match the silver tables), takes the same held-out users as
``guim bench`` (``BenchData.user_holdout_view`` with ``bench.holdout_users`` and
``bench.holdout_scored``) and scores, with the task's own metrics:

- ``bayes (one vector)``: the generating distribution, averaged over the window from the user's
  last input event to the end of the span (no target is read);
- ``planted interests, merged by max``: each planted interest retrieves by its own category's
  distribution and the lists are merged by score (the task's rule for K vectors), i.e. the
  mixture's retrieval with perfect interests;
- ``input category shares x popularity``: an estimate anyone could make: the user's category
  shares in the input (add-one smoothed) times the train part's popularity within the category.

Print a Markdown table; ``--json`` writes the figures too.
"""
from __future__ import annotations

import argparse
import json
import os
from pathlib import Path

import numpy as np


def _index(ids, prefix: str) -> np.ndarray:
    """Generator positions of ids like 'u17' / 'i4' (-1 where an id does not have that form)."""
    out = np.full(len(ids), -1, np.int64)
    for j, s in enumerate(ids):
        if isinstance(s, str) and s.startswith(prefix) and s[len(prefix):].isdigit():
            out[j] = int(s[len(prefix):])
    return out


def rankings(cfg, view, seq_ts: dict) -> dict:
    """name -> (B, V) scores over item_idx for ``view.holdout_rows`` (higher = earlier)."""
    from guim_features.errors import GuimError
    from guim_features.ingest.synthetic import catalogue, draw_tastes, view_probabilities
    from guim_features.schemas import FIRST_ITEM_INDEX

    c = cfg.ingest
    rng = np.random.default_rng(c.seed)
    cat = catalogue(rng, c.items, c.categories)
    n_int, interests, w = draw_tastes(rng, cat.cat_share, c.users)
    item_pos = _index(view.item_ids, "i")
    item_pos[:FIRST_ITEM_INDEX] = -1
    known = item_pos >= 0
    if (item_pos >= c.items).any() or (_index(view.user_ids, "u") >= c.users).any() or (_index(view.user_ids, "u") < 0).any():
        raise GuimError(f"the workspace's ids do not come from `guim ingest` with {c.users} users and {c.items} "
                        f"items (ingest.users / ingest.items): pass the settings it was ingested with by --set")
    gen_cat = cat.items["category"].to_numpy()
    if any(view.item_category[j] != gen_cat[item_pos[j]] for j in np.flatnonzero(known)):
        raise GuimError(f"the workspace's item categories differ from the synthetic data of ingest.seed={c.seed}, "
                        f"ingest.categories={c.categories}: pass the settings it was ingested with by --set")
    rows = view.holdout_rows
    users = _index(view.user_ids[rows], "u")
    start = np.datetime64(c.start_date, "us").astype("int64") / 1e6
    span = c.days * 86400.0
    # the targets' window: from the last input event to the end of the span
    t_cut = np.array([(seq_ts[view.user_ids[r]][:len(view.test_input(r))][-1] - start) / span for r in rows])
    grid = np.linspace(0.0, 1.0, 9)
    at = t_cut[:, None] + (1.0 - t_cut[:, None]) * grid[None]                     # (B, 9)
    probs = np.mean([view_probabilities(cat, n_int[users], interests[users], w[users], at[:, g])
                     for g in range(len(grid))], axis=0)                          # (B, items)
    V = view.n_items
    out = {}
    bayes = np.full((len(rows), V), -np.inf)
    bayes[:, known] = np.log(probs[:, item_pos[known]] + 1e-300)
    out["bayes (one vector)"] = bayes

    # each planted interest alone: that interest's own view distribution (exploration included)
    one = np.ones(len(rows))
    per_interest = np.full((len(rows), V), -np.inf)
    for k in range(4):
        has = k < n_int[users]
        wk = np.zeros((len(rows), 4))
        wk[:, k] = 1.0
        pk = view_probabilities(cat, np.full(len(rows), 4), interests[users], wk, 0.0 * one)   # (B, items)
        sk = np.full((len(rows), V), -np.inf)
        sk[:, known] = np.log(pk[:, item_pos[known]] + 1e-300)
        per_interest = np.where(has[:, None], np.maximum(per_interest, sk), per_interest)
    out["planted interests, merged by max"] = per_interest

    # from the data alone: input category shares x train popularity within the category
    names = sorted({x for x in view.item_category if x is not None})
    code = {x: j for j, x in enumerate(names)}
    cat_of = np.array([code.get(x, -1) for x in view.item_category])                # (V,) codes, -1 none
    C = len(names)
    pop = view.train_counts.astype(np.float64) + 1.0
    cat_total = np.bincount(np.maximum(cat_of, 0), weights=np.where(cat_of >= 0, pop, 0.0), minlength=C)
    within = np.where(cat_of >= 0, pop / np.maximum(cat_total[np.maximum(cat_of, 0)], 1e-9), 0.0)
    est = np.full((len(rows), V), -np.inf)
    for j, r in enumerate(rows):
        x = view.test_input(r)
        share = np.bincount(cat_of[x][cat_of[x] >= 0], minlength=C) + 1.0
        share /= share.sum()
        est[j] = np.where(cat_of >= 0, np.log(share[np.maximum(cat_of, 0)] * within + 1e-300), -np.inf)
    out["input category shares x popularity"] = est
    for s in out.values():
        s[:, :FIRST_ITEM_INDEX] = -np.inf
    return out


def evaluate(view, scores: np.ndarray) -> dict:
    from guim_features.downstream.metrics import hit_rate_at_k, recall_at_k

    rows = view.holdout_rows
    top = np.argsort(-scores, axis=1, kind="stable")[:, :50]
    res = {"recall@20": [], "recall@50": [], "hit_rate@50": []}
    for j, u in enumerate(rows):
        t = np.unique(view.test_targets(u))
        res["recall@20"].append(recall_at_k(top[j], t, 20))
        res["recall@50"].append(recall_at_k(top[j], t, 50))
        res["hit_rate@50"].append(hit_rate_at_k(top[j], t, 50))
    return {k: float(np.mean(v)) for k, v in res.items()}


def main(argv=None) -> int:
    from guim_features.config import load_config
    from guim_features.downstream.data import BenchData, read_table
    from guim_features.downstream.tasks.multi_interest_retrieval import INPUT_SHARE

    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--workspace", required=True)
    ap.add_argument("--set", dest="overrides", action="append", default=[], metavar="SECTION.KEY=VALUE")
    ap.add_argument("--json", help="also write the figures to this file")
    args = ap.parse_args(argv)
    cfg = load_config(args.workspace, args.overrides)
    data = BenchData.load(cfg)
    view = data.user_holdout_view(cfg.bench.holdout_users, INPUT_SHARE, scored=cfg.bench.holdout_scored)
    us = read_table(cfg.table("user_sequences"), "user_sequences")
    seq_ts = dict(zip(us["user_id"].astype(str), (np.asarray(t, np.float64) for t in us["ts"])))
    figures = {name: evaluate(view, s) for name, s in rankings(cfg, view, seq_ts).items()}
    print(f"multi_interest_retrieval on {len(view.holdout_rows)} held-out users ({cfg.bench.holdout_scored} draw), "
          f"load {os.getloadavg()[0]:.1f}")
    print("| ranking | Recall@20 | Recall@50 | HitRate@50 |\n| --- | ---: | ---: | ---: |")
    for name, m in figures.items():
        print(f"| {name} | {m['recall@20']:.4f} | {m['recall@50']:.4f} | {m['hit_rate@50']:.4f} |")
    if args.json:
        Path(args.json).write_text(json.dumps({"users": len(view.holdout_rows), "figures": figures}, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
