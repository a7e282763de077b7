"""GUIM-Bench metrics and tasks against values computed by hand on tiny hand-written inputs."""
from __future__ import annotations

import json
import math

import numpy as np
import pandas as pd
import pytest

from guim_features.downstream import metrics as M
from guim_features.downstream.baselines import Embeddings
from guim_features.downstream.data import BenchData
from guim_features.downstream.tasks import (category_propensity, interest_coverage, item_category, item_demand,
                                       next_item, purchase_propensity, similar_items, user_profile)
from guim_features.config import BenchConfig, load_config, replace

BEHAVIORS = ["pv", "fav", "cart", "buy", "rate_1", "rate_2", "rate_3", "rate_4", "rate_5"]


# -- metrics --------------------------------------------------------------------------------
def test_recall_hit_ndcg_for_a_known_ranking():
    ranked = [5, 3, 9, 1]
    assert M.recall_at_k(ranked, [9], 2) == 0.0
    assert M.recall_at_k(ranked, [9], 3) == 1.0
    assert M.recall_at_k(ranked, [3, 1], 2) == 0.5
    assert M.hit_rate_at_k(ranked, [3, 1], 2) == 1.0
    assert M.hit_rate_at_k(ranked, [7], 4) == 0.0
    assert M.ndcg_at_k(ranked, [3], 3) == pytest.approx(1 / math.log2(3))          # rank 2
    # two targets at ranks 1 and 3: (1 + 1/2) / (1 + 1/log2 3)
    assert M.ndcg_at_k(ranked, [5, 9], 3) == pytest.approx(1.5 / (1 + 1 / math.log2(3)))
    assert M.ndcg_at_k(ranked, [9], 2) == 0.0


def test_auc_known_split_and_ties():
    # positives 0.9 and 0.3, negatives 0.8 and 0.1: 3 of 4 pairs ordered right
    assert M.auc([1, 0, 1, 0], [0.9, 0.8, 0.3, 0.1]) == pytest.approx(0.75)
    assert M.auc([1, 0], [0.5, 0.5]) == pytest.approx(0.5)
    assert M.auc([0, 1], [0.1, 0.2]) == 1.0
    with pytest.raises(ValueError):
        M.auc([1, 1], [0.1, 0.2])


def test_f1_macro_and_micro():
    # class a: tp 1, fn 1 -> 2/3; class b: tp 2, fp 1 -> 4/5
    assert M.f1(["a", "a", "b", "b"], ["a", "b", "b", "b"], "macro") == pytest.approx((2 / 3 + 4 / 5) / 2)
    # pooled over labels: tp 2, fp 1, fn 1 -> 4/6
    assert M.f1([[1, 0], [1, 1]], [[1, 1], [0, 1]], "micro") == pytest.approx(4 / 6)


def test_spearman_coverage_precision():
    # ranks (1,2,3,4) vs (1,2,4,3): 1 - 6*2/(4*15) = 0.8
    assert M.spearman([1, 2, 3, 4], [10, 20, 40, 30]) == pytest.approx(0.8)
    assert M.spearman([1, 1, 1], [1, 2, 3]) == 0.0
    assert M.coverage({"a", "b"}, ["a", "c"]) == 0.5
    assert M.precision_at_k([{"a"}, {"b"}, {"a", "c"}], {"a"}, 3) == pytest.approx(2 / 3)


# -- tasks on a tiny hand-written data set ----------------------------------------------------
def tiny():
    """Items 3..8: 3,4,5 in category A, 6,7,8 in B. u1 = [3,4 | 6 | 5], u2 = [7 | 4 | 8] (train | valid | test)."""
    items = pd.DataFrame({"item_id": [f"i{i}" for i in range(3, 9)], "item_idx": list(range(3, 9))})
    seqs = pd.DataFrame({"user_id": ["u1", "u2"], "item_idx": [[3, 4, 6, 5], [7, 4, 8]],
                         "behavior": [[9, 9, 9, 9], [7, 7, 6]], "gaps": [[0, 1, 1, 1], [0, 1, 1]],
                         "split": [[0, 0, 1, 2], [0, 1, 2]]})
    users = pd.DataFrame({"user_id": ["u1", "u2"], "gender": ["M", "F"]})
    labels_items = pd.DataFrame({"item_id": items.item_id, "item_idx": items.item_idx,
                                 "category": ["A", "A", "A", "B", "B", "B"], "tags": [[]] * 6})
    future = pd.DataFrame({"user_id": ["u1", "u1", "u2", "u2"], "item_idx": [6, 5, 4, 8],
                           "item_id": ["i6", "i5", "i4", "i8"],
                           "behavior": ["rate_5", "rate_5", "rate_3", "rate_2"], "split": [1, 2, 1, 2]})
    return BenchData.from_frames(items, seqs, users, labels_items, future, BEHAVIORS)


# item vectors (x, y) by item_idx; u1 looks along x, u2 along y
XY = {3: (0.9, 0.2), 4: (0.8, 0.1), 5: (0.65, 0.3), 6: (0.7, 0.25), 7: (0.6, 0.0), 8: (0.1, 0.22)}


def tiny_embeddings():
    items = np.zeros((9, 2))
    for i, v in XY.items():
        items[i] = v
    return Embeddings(items, np.array([[[1.0, 0.0]], [[0.0, 1.0]]]))


CFG = replace(BenchConfig(), item_scope="all")
CFG_MAX = replace(CFG, mi_merge="max")     # multi_interest_retrieval with ComiRec's merge


def test_data_views_follow_the_split_codes():
    d = tiny()
    assert d.test_input(0).tolist() == [3, 4, 6] and d.test_targets(0).tolist() == [5]
    assert d.train_items(1).tolist() == [7]
    assert d.warm_items.tolist() == [3, 4, 7]
    assert d.train_counts.tolist() == [0, 0, 0, 1, 1, 0, 0, 1, 0]

    v = d.valid_view()                       # test events gone, valid events are the targets
    assert v.test_input(0).tolist() == [3, 4] and v.test_targets(0).tolist() == [6]
    assert v.test_input(1).tolist() == [7] and v.test_targets(1).tolist() == [4]
    assert v.train_items(0).tolist() == [3, 4] and d.test_targets(0).tolist() == [5]   # d unchanged


def test_next_item_ranks_all_items_without_earlier_ones():
    d, e = tiny(), tiny_embeddings()
    # u1 (x): 5 .65 > 7 .6 > 8 .1 (3, 4, 6 are earlier items); u2 (y): 5 .3 > 6 .25 > 8 .22 > 3 .2
    assert e.top_items(d, 3).tolist() == [[5, 7, 8], [5, 6, 8]]
    r = next_item.evaluate(d, e, CFG)
    assert r["recall@10"] == 1.0 and r["hit_rate@50"] == 1.0
    assert r["ndcg@10"] == pytest.approx((1.0 + 0.5) / 2)   # u1 target at rank 1, u2 at rank 3


def test_interest_coverage_counts_future_categories_in_the_top_k():
    d, e = tiny(), tiny_embeddings()
    # top-1: u1 [5] (A) covers its future {A}; u2 [5] (A) misses its future {B}
    assert interest_coverage.evaluate(d, e, replace(CFG, coverage_k=1))["coverage"] == 0.5
    assert interest_coverage.evaluate(d, e, replace(CFG, coverage_k=2))["coverage"] == 1.0


def test_purchase_propensity_auc():
    d, e = tiny(), tiny_embeddings()
    # positive (u1, 5) scores .65; every negative ((u2, 8) rated 2, random unseen items) scores less
    assert purchase_propensity.evaluate(d, e, CFG)["auc"] == 1.0
    flipped = Embeddings(e.items, -e.users)
    assert purchase_propensity.evaluate(d, flipped, CFG)["auc"] == 0.0
    rows, items, labels = purchase_propensity.pairs(d, CFG)
    for u, i in zip(rows[2:], items[2:]):   # the random negatives are items the user never touched
        assert i not in d.seqs[u]["item_idx"]


def test_category_propensity_auc():
    d, e = tiny(), tiny_embeddings()
    # per category: A: u1 .9 (pos) > u2 .3 (neg) -> 1; B: u2 .25 (pos) < u1 .7 (neg) -> 0; mean .5
    assert category_propensity.evaluate(d, e, CFG)["auc"] == pytest.approx(0.5)
    # u2 along (-1, 4): A max(-.1, -.4, .55) = .55 < u1's .9 -> 1; B max(.3, -.6, .78) = .78 > u1's .7 -> 1
    e2 = Embeddings(e.items, np.array([[[1.0, 0.0]], [[-1.0, 4.0]]]))
    assert category_propensity.evaluate(d, e2, CFG)["auc"] == pytest.approx(1.0)


def test_similar_items_precision():
    d = tiny()
    items = np.zeros((9, 2))
    for i, deg in {3: 0, 4: 10, 5: 100, 6: 90, 7: 75, 8: 170}.items():
        items[i] = (math.cos(math.radians(deg)), math.sin(math.radians(deg)))
    e = Embeddings(items, np.zeros((2, 1, 2)))
    # 2 nearest by angle: 3->4,7 (.5) 4->3,7 (.5) 5->6,7 (0) 6->5,7 (.5) 7->6,5 (.5) 8->5,6 (.5)
    r = similar_items.evaluate(d, e, replace(CFG, neighbours=2))
    assert r["precision@2"] == pytest.approx(2.5 / 6)


def bigger(n=60, seed=0):
    """n users / n items with labels that a linear probe recovers from the right vectors."""
    rng = np.random.default_rng(seed)
    idx = np.arange(3, 3 + n)
    items = pd.DataFrame({"item_id": [f"i{i}" for i in idx], "item_idx": idx})
    seqs = pd.DataFrame({"user_id": [f"u{u:02d}" for u in range(n)],
                         "item_idx": [[int(idx[u]), int(idx[(u + 1) % n]), int(idx[(u + 2) % n])] for u in range(n)],
                         "behavior": [[1, 1, 1]] * n, "gaps": [[0, 0, 0]] * n, "split": [[0, 1, 2]] * n})
    gender = np.array(["F", "M"] * (n // 2))
    occ = np.array(["a", "b", "c"] * (n // 3))
    users = pd.DataFrame({"user_id": seqs.user_id, "gender": gender, "occupation": occ})
    cat = np.array(["A", "B", "C"] * (n // 3))
    labels_items = pd.DataFrame({"item_id": items.item_id, "item_idx": idx, "category": cat,
                                 "tags": [[c, "x"] if k % 2 else [c] for k, c in enumerate(cat)]})
    demand = rng.permutation(n)
    future = pd.DataFrame({"user_id": [f"u{u % n:02d}" for u in range(int(demand.sum()))],
                           "item_idx": np.repeat(idx, demand), "item_id": "", "behavior": "pv", "split": 2})
    d = BenchData.from_frames(items, seqs, users, labels_items, future, BEHAVIORS)
    onehot = lambda labels, values: (labels[:, None] == np.array(values)[None]).astype(float)  # noqa: E731
    user_vecs = np.hstack([onehot(gender, ["F", "M"]), onehot(occ, ["a", "b", "c"]), np.zeros((n, 1))])
    user_vecs = user_vecs + 0.01 * rng.normal(size=user_vecs.shape)
    item_vecs = np.zeros((3 + n, 6))
    item_vecs[idx, :3] = onehot(cat, ["A", "B", "C"])
    item_vecs[idx, 3] = np.log1p(demand)
    item_vecs[idx, 4] = [k % 2 for k in range(n)]
    item_vecs[idx] += 0.01 * rng.normal(size=(n, 6))
    return d, Embeddings(item_vecs, user_vecs[:, None, :]), demand


def test_probes_recover_planted_labels_and_random_vectors_do_not():
    d, e, demand = bigger()
    up = user_profile.evaluate(d, e, CFG)
    assert up["gender_auc"] == 1.0 and up["occupation_macro_f1"] == 1.0
    assert up["mean"] == 1.0
    ic = item_category.evaluate(d, e, CFG)
    assert ic["category_macro_f1"] == 1.0 and ic["tags_micro_f1"] == 1.0
    assert item_demand.evaluate(d, e, CFG)["spearman"] > 0.95
    rng = np.random.default_rng(1)
    noise = Embeddings(rng.normal(size=e.items.shape), rng.normal(size=e.users.shape))
    assert user_profile.evaluate(d, noise, CFG)["gender_auc"] < 0.8
    assert abs(item_demand.evaluate(d, noise, CFG)["spearman"]) < 0.5


def test_user_vector_is_chosen_on_the_valid_users_only():
    d, e, _ = bigger()
    good = e.user_matrix()                                   # one-hot gender and occupation (+ noise)
    noise = np.random.default_rng(2).normal(size=good.shape)
    users = np.arange(0, 48)                                 # the valid users; rows 48..59 are held out
    held_out = np.zeros(len(good), bool)
    held_out[48:] = True
    # NaN rows in the held-out part: a probe that read them would raise (sklearn rejects NaN)
    cands = {name: np.where(held_out[:, None], np.nan, x) for name, x in (("noise", noise), ("good", good))}
    best, valid = user_profile.choose_on_valid(cands, d, CFG, users)
    assert best == "good" and set(valid) == {"noise", "good"}
    assert valid["good"] == 1.0 and valid["noise"] < 0.8     # the argmax of the valid scores
    with pytest.raises(ValueError):
        user_profile.score(cands["good"], d, CFG)            # the same vectors over every user do read them


def test_a_task_the_data_cannot_support_is_skipped_with_a_reason():
    from guim_features.downstream.tasks import Skip

    d, e = tiny(), tiny_embeddings()
    with pytest.raises(Skip, match="min_class_size"):
        user_profile.evaluate(d, e, CFG)   # one user per gender


def test_unknown_method_or_task_is_a_clear_error():
    from guim_features.downstream import make_methods, run_suite
    from guim_features.config import load_config
    from guim_features.errors import GuimError

    cfg = load_config("unused", ["bench.methods=[random,bpr]"], write_default=False)
    with pytest.raises(GuimError, match="unknown bench method 'bpr'.*known: random, popularity"):
        make_methods(cfg)
    cfg = load_config("unused", ["bench.tasks=[next_item,churn]"], write_default=False)
    with pytest.raises(GuimError, match="unknown bench task 'churn'"):
        run_suite(cfg, tiny(), [], seeds=1)


# -- spread, intervals and the report's marks ------------------------------------------------
def test_spread_is_the_sample_std_and_the_95_t_interval():
    s = M.spread([1.0, 2.0, 3.0])
    # sd = sqrt(((1-2)^2 + 0 + (3-2)^2) / (3 - 1)) = 1; t(0.975, 2 df) = 4.302653 -> half-width 4.302653 / sqrt(3)
    assert s["mean"] == 2.0 and s["std"] == pytest.approx(1.0)
    assert s["ci95"] == pytest.approx(4.302653 / math.sqrt(3), rel=1e-6)
    assert M.spread([0.5])["std"] == 0.0 and M.spread([0.5])["ci95"] == 0.0
    a = {"mean": 2.0, "ci95": 2.48}                                  # [-0.48, 4.48]
    assert not M.level(a, {"mean": 5.0, "ci95": 0.1})                 # [4.9, 5.1]: apart, 5 beats 2
    assert M.level(a, {"mean": 4.4, "ci95": 0.1}) and M.level({"mean": 4.4, "ci95": 0.1}, a)


def test_report_bolds_the_best_and_marks_the_level_ones():
    from guim_features.downstream.report import markdown

    cell = lambda *v: M.spread(list(v))  # noqa: E731
    report = {"methods": ["a", "b", "c"], "seeds": 3, "tasks": ["next_item"], "headline": {"next_item": "recall@20"},
              "skipped_tasks": {}, "failed_methods": {}, "fit_seconds": {},
              "results": {"a": {"next_item": {"recall@20": cell(0.30, 0.31, 0.32), "repeat_target_users": cell(4)}},
                          "b": {"next_item": {"recall@20": cell(0.28, 0.30, 0.32), "repeat_target_users": cell(4)}},
                          "c": {"next_item": {"recall@20": cell(0.10, 0.11, 0.12), "repeat_target_users": cell(4)}}}}
    row = next(x for x in markdown(report).splitlines() if "recall@20 *" in x).split("|")[3:6]
    assert row[0].strip().startswith("**0.3100 ± 0.0248 (sd 0.0100)**")      # a: t(.975, 2) * .01 / sqrt 3
    assert row[1].strip().endswith("≈")                                       # b overlaps a: level
    assert "**" not in row[2] and "≈" not in row[2]                            # c: beaten
    facts = next(x for x in markdown(report).splitlines() if "repeat_target_users" in x)
    assert "**" not in facts and "≈" not in facts                              # same for every method
    for m, w in zip("abc", (0.1, 0.0, 0.2)):                                   # a setting chosen per run: never ranked
        report["results"][m]["next_item"]["transition_weight"] = cell(w, w, w)
    chosen = next(x for x in markdown(report).splitlines() if "transition_weight" in x)
    assert "**" not in chosen and "≈" not in chosen and "0.2000" in chosen


# -- next_item: a repeated target is a miss ---------------------------------------------------
def test_next_item_counts_a_repeated_target_as_a_miss():
    d0 = tiny()
    seqs = pd.DataFrame({"user_id": ["u1", "u2"], "item_idx": [[3, 4, 6, 5], [7, 4, 7]],
                         "behavior": [[9, 9, 9, 9], [7, 7, 6]], "gaps": [[0, 1, 1, 1], [0, 1, 1]],
                         "split": [[0, 0, 1, 2], [0, 1, 2]]})
    items = pd.DataFrame({"item_id": [f"i{i}" for i in range(3, 9)], "item_idx": list(range(3, 9))})
    d = BenchData.from_frames(items, seqs, d0.labels_users, d0.labels_items, d0.labels_future, BEHAVIORS)
    r = next_item.evaluate(d, tiny_embeddings(), CFG)
    # u1 hits its target 5 at rank 1; u2's target 7 is its own earlier item: unrankable, a miss, still counted
    assert r["recall@10"] == 0.5 and r["hit_rate@50"] == 0.5 and r["ndcg@10"] == 0.5
    assert r["repeat_target_users"] == 1


# -- multi_interest_retrieval --------------------------------------------------------------------
def two_interest_data(n_users=10):
    """Items 3..22 along x (A, scores 1 - .001 j), 23..42 along y (B), 43..102 on the diagonal at
    (.72, .72). Every user: 8 diagonal items, then A's best (3) and B's best (23)."""
    idx = np.arange(3, 103)
    items = pd.DataFrame({"item_id": [f"i{i}" for i in idx], "item_idx": idx})
    seq = [43, 44, 45, 46, 47, 48, 49, 50, 3, 23]
    seqs = pd.DataFrame({"user_id": [f"u{u}" for u in range(n_users)], "item_idx": [seq] * n_users,
                         "behavior": [[1] * 10] * n_users, "gaps": [[0] * 10] * n_users,
                         "split": [[0] * 8 + [1, 2]] * n_users})
    none = pd.DataFrame({"user_id": [], "item_idx": [], "item_id": [], "behavior": [], "split": []})
    labels_items = pd.DataFrame({"item_id": items.item_id, "item_idx": idx, "category": None, "tags": [[]] * 100})
    d = BenchData.from_frames(items, seqs, pd.DataFrame({"user_id": seqs.user_id}), labels_items, none, BEHAVIORS)
    vecs = np.zeros((103, 2))
    vecs[3:23, 0] = 1 - 0.001 * np.arange(20)
    vecs[23:43, 1] = 1 - 0.001 * np.arange(20)
    vecs[43:103] = 0.72
    return d, vecs


def test_user_holdout_view_takes_held_out_users_out_of_fitting():
    d, _ = two_interest_data()
    v = d.user_holdout_view(0.2, input_share=0.8)
    held = v.holdout_rows
    assert len(held) == 2 and sorted(v.holdout) == sorted(d.user_ids[held])
    for u in range(d.n_users):
        if u in held:     # no train part; the first 8 events are the input, the last 2 the targets
            assert len(v.train_items(u)) == 0
            assert v.test_input(u).tolist() == [43, 44, 45, 46, 47, 48, 49, 50]
            assert v.test_targets(u).tolist() == [3, 23]
        else:
            assert v.train_items(u).tolist() == d.train_items(u).tolist()
    assert d.user_holdout_view(0.2).holdout == v.holdout          # the same users every time


def test_valid_holdout_scores_other_users_and_keeps_the_test_users_out_of_fitting():
    from guim_features.errors import GuimError

    d, _ = two_interest_data(n_users=20)
    test = d.user_holdout_view(0.2)
    valid = d.user_holdout_view(0.2, scored="valid")
    t_rows, v_rows = set(test.holdout_rows.tolist()), set(valid.holdout_rows.tolist())
    assert len(t_rows) == 4 and len(v_rows) == 4 and not t_rows & v_rows          # disjoint, same size
    assert valid.holdout == frozenset(d.user_ids[sorted(t_rows | v_rows)])       # both out of the fit
    for u in range(d.n_users):
        if u in t_rows:       # input only: nothing to learn from, nothing to score
            assert len(valid.train_items(u)) == 0 and len(valid.test_targets(u)) == 0
            assert len(valid.test_input(u)) == 10
        elif u in v_rows:     # scored as the test draw is in the test view
            assert valid.test_input(u).tolist() == [43, 44, 45, 46, 47, 48, 49, 50]
            assert valid.test_targets(u).tolist() == [3, 23]
        else:
            assert valid.train_items(u).tolist() == d.train_items(u).tolist()
    with pytest.raises(GuimError, match="holdout_scored"):
        d.user_holdout_view(0.2, scored="train")


def test_multi_interest_retrieval_merges_each_interests_own_list():
    from guim_features.downstream.tasks import Skip, multi_interest_retrieval as mir

    d, vecs = two_interest_data()
    v = d.user_holdout_view(0.2)
    two = Embeddings(vecs, np.tile([[1.0, 0.0], [0.0, 1.0]], (d.n_users, 1, 1)))      # orthogonal interests
    # interest x ranks A first (~1.0 > diagonal .72), interest y ranks B first: merged, 3 and 23 lead
    assert mir.evaluate(v, two, CFG_MAX) == {"recall@20": 1.0, "recall@50": 1.0, "hit_rate@50": 1.0}
    avg = Embeddings(vecs, np.full((d.n_users, 1, 2), 0.5 ** 0.5))                   # the averaged vector
    # diagonal items score 1.02 > A/B's .71: the top 50 is all diagonal, both targets missed
    assert mir.evaluate(v, avg, CFG_MAX)["recall@50"] == 0.0
    one = Embeddings(vecs, np.tile([[1.0, 0.0]], (d.n_users, 1, 1)))                  # one interest only
    assert mir.evaluate(v, one, CFG_MAX) == {"recall@20": 0.5, "recall@50": 0.5, "hit_rate@50": 1.0}
    with pytest.raises(Skip, match="held-out"):
        mir.evaluate(d, two, CFG_MAX)                                  # fitted on every user: not scored


def test_model_merge_ranks_the_union_by_the_mixture_so_a_dead_interest_cannot_flood_it():
    from guim_features.downstream.tasks import multi_interest_retrieval as mir
    from guim_features.errors import GuimError

    d, vecs = two_interest_data()
    v = d.user_holdout_view(0.2)
    tau = 0.1
    # x and y as above, plus a third interest on the diagonal that the user weighs at 1e-6
    users = np.tile([[1.0, 0.0], [0.0, 1.0], [0.5 ** 0.5, 0.5 ** 0.5]], (d.n_users, 1, 1))
    weights = np.tile([0.5, 0.5, 1e-6], (d.n_users, 1))

    def lse(u, w, it):   # tau log sum_k w_k exp(u_k . v / tau)
        s = np.einsum("bkd,vd->bkv", u, it) / tau
        return tau * np.log(np.einsum("bk,bkv->bv", w, np.exp(s)))

    three = Embeddings(vecs, users, weights, scorer=lse)
    # max: the diagonal interest scores its 60 items 1.018, above A's and B's best (1.0): the top 50
    # is all diagonal and both targets are missed
    assert mir.evaluate(v, three, CFG_MAX)["recall@50"] == 0.0
    # model: the union of the three top 50s holds A, B and the diagonal; under the mixture A's best
    # scores .1 log(.5 e^10 + .5 + 1e-6 e^7.07) = .93 and a diagonal item .1 log(e^7.2 + 1e-6 e^10.18)
    # = .72: A and B lead, both targets in the top 20
    model = CFG                                                    # the default merge
    assert mir.evaluate(v, three, model) == {"recall@20": 1.0, "recall@50": 1.0, "hit_rate@50": 1.0,
                                             "recall@50_max_merge": 0.0}
    top = mir.merged_top(three, v.holdout_rows[:1], 4, "model")[0]
    assert sorted(top[:2].tolist()) == [3, 23] and sorted(top[2:].tolist()) == [4, 24]
    # one interest: both merges are its own ranking
    one = Embeddings(vecs, np.tile([[1.0, 0.0]], (d.n_users, 1, 1)))
    assert mir.evaluate(v, one, CFG_MAX) == {"recall@20": 0.5, "recall@50": 0.5, "hit_rate@50": 1.0}
    assert mir.evaluate(v, one, model) == {"recall@20": 0.5, "recall@50": 0.5, "hit_rate@50": 1.0,
                                           "recall@50_max_merge": 0.5}
    with pytest.raises(GuimError, match="mi_merge"):
        mir.evaluate(v, three, replace(CFG, mi_merge="sum"))


# -- the suite: content-blind refits, task views, failures ----------------------------------------
def angles(degrees: dict) -> np.ndarray:
    items = np.zeros((9, 2))
    for i, deg in degrees.items():
        items[i] = (math.cos(math.radians(deg)), math.sin(math.radians(deg)))
    return items


class ReadsContent:
    """A fake method whose item vectors read content: the blind variant lays items out otherwise."""

    name, seeded, reads_content, refits = "fake", True, True, True

    def __init__(self, blind=False):
        self.blind, self.fitted_on = blind, []

    def content_blind(self):
        return ReadsContent(blind=True)

    def embed(self, data, seed):
        self.fitted_on.append(data)
        if self.blind:   # categories A (3, 4, 5) and B (6, 7, 8) apart: every neighbour shares the category
            return Embeddings(angles({3: 0, 4: 1, 5: 2, 6: 90, 7: 91, 8: 92}), np.zeros((data.n_users, 1, 2)))
        return Embeddings(angles({3: 0, 4: 10, 5: 100, 6: 90, 7: 75, 8: 170}), np.zeros((data.n_users, 1, 2)))


class Fixed(ReadsContent):
    name, seeded, refits = "fixed", False, False

    def content_blind(self):
        return None


def test_suite_scores_content_readers_blind_and_refits_task_views():
    from guim_features.downstream import run_suite
    from guim_features.config import load_config

    cfg = load_config("unused", ["bench.tasks=[similar_items,multi_interest_retrieval]", "bench.item_scope=all",
                                 "bench.neighbours=2", "bench.holdout_users=0.5"], write_default=False)
    fake = ReadsContent()
    rep = run_suite(cfg, tiny(), [fake, Fixed()], seeds=2, log=lambda s: None)
    sim = rep["results"]["fake"]["similar_items"]
    assert sim["precision@2"]["mean"] == 1.0                          # the content-blind refit
    assert sim["precision@2_content_aware"]["mean"] == pytest.approx(2.5 / 6)   # as in the test above
    assert len(sim["precision@2"]["values"]) == 2
    assert rep["headline"]["similar_items"] == "precision@2"
    # the holdout task refitted the method on a view where the held-out user has no train part
    views = [v for v in fake.fitted_on if v.holdout]
    assert len(views) == 2 and all(len(v.train_items(v.holdout_rows[0])) == 0 for v in views)
    assert "multi_interest_retrieval" in rep["results"]["fake"]
    # a fixed model cannot be blinded or refitted: content-aware names only, the holdout task skipped
    assert set(rep["results"]["fixed"]["similar_items"]) == {"precision@2_content_aware"}
    assert "multi_interest_retrieval" not in rep["results"]["fixed"]
    assert "fixed model" in rep["skipped_tasks"]["multi_interest_retrieval"]


class Boom:
    name, seeded, reads_content, refits = "boom", True, False, True

    def __init__(self, cfg):
        pass

    def embed(self, data, seed):
        raise RuntimeError("out of disk on purpose")


@pytest.mark.parametrize("keep_going, code", [(False, 1), (True, 0)])
def test_a_failing_method_makes_bench_exit_1_with_the_reason(tmp_path, monkeypatch, keep_going, code):
    from guim_features.downstream import baselines
    from guim_features.downstream.baselines.simple import Popularity
    from guim_features.cli import main

    monkeypatch.setattr(BenchData, "load", classmethod(lambda cls, cfg: tiny()))
    monkeypatch.setattr(baselines, "methods_by_name", lambda: {"popularity": Popularity, "boom": Boom})
    load_config(tmp_path)   # an existing workspace
    args = ["bench", "--workspace", str(tmp_path), "--set", "bench.methods=[popularity,boom]",
            "--set", "bench.tasks=[next_item]", "--set", "bench.log_mlflow=false"]
    assert main(args + (["--keep-going"] if keep_going else [])) == code
    md = next((tmp_path / "reports").glob("bench-*/bench.md")).read_text()
    assert "method `boom` FAILED: RuntimeError: out of disk on purpose" in md
    assert "| next_item | recall@20 * | 1.0000 |" in md                 # the other method still reported


def test_a_stopped_bench_resumes_without_rerunning_its_finished_runs(tmp_path, monkeypatch, capsys):
    from guim_features import downstream
    from guim_features.downstream import baselines
    from guim_features.downstream.baselines.simple import Popularity
    from guim_features.cli import main

    calls, broken = [], {1}

    class Flaky(Popularity):
        name, seeded = "flaky", True

        def embed(self, data, seed):
            calls.append(seed)
            if seed in broken:
                raise RuntimeError("the machine went away")
            return super().embed(data, seed)

    monkeypatch.setattr(BenchData, "load", classmethod(lambda cls, cfg: tiny()))
    monkeypatch.setattr(baselines, "methods_by_name", lambda: {"flaky": Flaky})
    load_config(tmp_path)
    args = ["bench", "--workspace", str(tmp_path), "--set", "bench.methods=[flaky]", "--set",
            "bench.tasks=[next_item]", "--set", "bench.log_mlflow=false", "--seeds", "3"]
    assert main(args) == 1 and calls == [0, 1]              # seed 1 failed: seed 2 never ran
    partial = tmp_path / "reports" / "bench-partial.json"
    assert partial.exists()                                 # kept for --resume
    # other settings are refused, naming what differs
    capsys.readouterr()
    assert main(args[:-1] + ["4", "--resume"]) != 0 and calls == [0, 1]
    assert "seeds: 3 then, 4 now" in capsys.readouterr().err
    assert main(args + ["--set", "train.epochs=2", "--resume"]) != 0 and calls == [0, 1]
    assert "train.epochs: 40 then, 2 now" in capsys.readouterr().err
    real = downstream.code_fingerprint
    monkeypatch.setattr(downstream, "code_fingerprint", lambda: "edited")   # the package changed since
    assert main(args + ["--resume"]) != 0 and calls == [0, 1]
    assert "code: " in capsys.readouterr().err
    monkeypatch.setattr(downstream, "code_fingerprint", real)
    broken.clear()
    assert main(args + ["--resume"]) == 0
    assert calls == [0, 1, 1, 2]                            # seed 0 taken as it was, not refitted
    assert not partial.exists()
    latest = sorted((tmp_path / "reports").glob("bench-*/bench.json"))[-1]
    rep = json.loads(latest.read_text())
    assert len(rep["results"]["flaky"]["next_item"]["recall@20"]["values"]) == 3
    assert "1 method runs taken from an earlier" in rep["machine"]


def test_resume_without_an_unfinished_run_says_so(tmp_path, monkeypatch, capsys):
    from guim_features.cli import main

    monkeypatch.setattr(BenchData, "load", classmethod(lambda cls, cfg: tiny()))
    load_config(tmp_path)
    assert main(["bench", "--workspace", str(tmp_path), "--set", "bench.methods=[popularity]", "--resume"]) != 0
    assert "no unfinished bench run here" in capsys.readouterr().err


# -- SASRec: padding never changes a result; trained on GUIM's windows ---------------------------
def test_sasrec_last_state_does_not_depend_on_left_padding():
    import torch

    from guim_features.downstream.baselines.sasrec import _build
    from guim_features.data import left_pad

    torch.manual_seed(0)
    net = _build(n_items=20, d=16, max_len=40, layers=2, heads=2, dropout=0.3).eval()
    seq = np.array([5, 9, 4, 17])
    with torch.no_grad():
        short = net(torch.from_numpy(left_pad([seq], 7)))[:, -1]     # 3 pads
        long = net(torch.from_numpy(left_pad([seq], 34)))[:, -1]     # 30 pads
        other = net(torch.from_numpy(left_pad([np.array([5, 9, 4, 18])], 7)))[:, -1]
    assert torch.isfinite(long).all()
    assert torch.allclose(short, long, atol=1e-5)
    assert not torch.allclose(short, other, atol=1e-3)                 # the last item does matter


def test_sasrec_trains_on_every_window_of_the_train_part_as_guim():
    from guim_features.downstream.baselines.sasrec import length_batches, training_windows

    items = pd.DataFrame({"item_id": [f"i{i}" for i in range(3, 16)], "item_idx": list(range(3, 16))})
    seqs = pd.DataFrame({"user_id": ["u1", "u2"], "item_idx": [list(range(3, 15)), [15, 3, 4]],
                         "behavior": [[1] * 12, [1] * 3], "gaps": [[0] * 12, [0] * 3],
                         "split": [[0] * 10 + [1, 2], [0, 1, 2]]})
    d = BenchData.from_frames(items, seqs, pd.DataFrame({"user_id": ["u1", "u2"]}), None, None, BEHAVIORS)
    wins = [w.tolist() for w in training_windows(d, max_len=4)]
    # u1's train part 3..12 in windows of 5 from the newest, overlapping by one: each of its items but
    # the first is a target exactly once; u2 has one train event, so no window
    assert wins == [[8, 9, 10, 11, 12], [4, 5, 6, 7, 8], [3, 4]]
    batches = length_batches(np.array([5, 2, 5, 3, 2, 5]), 2, np.random.default_rng(0))
    assert sorted(np.concatenate(batches).tolist()) == list(range(6))
    assert sorted(sorted(np.array([5, 2, 5, 3, 2, 5])[b].tolist()) for b in batches) == [[2, 2], [3, 5], [5, 5]]


def test_a_method_that_cannot_run_here_is_skipped_not_failed(tmp_path, monkeypatch):
    from guim_features.downstream import baselines
    from guim_features.downstream.baselines import Unavailable
    from guim_features.downstream.baselines.simple import Popularity
    from guim_features.cli import main

    class NothingRegistered(Boom):
        name = "gone"

        def embed(self, data, seed):
            raise Unavailable("no model registered yet")

    monkeypatch.setattr(BenchData, "load", classmethod(lambda cls, cfg: tiny()))
    monkeypatch.setattr(baselines, "methods_by_name", lambda: {"popularity": Popularity, "gone": NothingRegistered})
    load_config(tmp_path)   # an existing workspace
    assert main(["bench", "--workspace", str(tmp_path), "--set", "bench.methods=[popularity,gone]",
                 "--set", "bench.tasks=[next_item]", "--set", "bench.log_mlflow=false"]) == 0
    md = next((tmp_path / "reports").glob("bench-*/bench.md")).read_text()
    assert "method `gone` skipped: no model registered yet" in md and "FAILED" not in md


class SeedRecorder(ReadsContent):
    """Records the seeds it is fitted with; a deterministic method (seeded False) runs once."""

    name, reads_content = "recorder", False

    def __init__(self, seeded=True):
        super().__init__()
        self.seeded, self.seeds = seeded, []
        self.name = "recorder" if seeded else "once"

    def embed(self, data, seed):
        self.seeds.append(seed)
        return super().embed(data, seed)


def test_first_seed_runs_the_later_seeds_and_the_report_names_them():
    from guim_features.downstream import run_suite
    from guim_features.downstream.report import markdown

    cfg = load_config("unused", ["bench.tasks=[similar_items]", "bench.item_scope=all", "bench.neighbours=2"],
                      write_default=False)
    seeded, once = SeedRecorder(), SeedRecorder(seeded=False)
    rep = run_suite(cfg, tiny(), [seeded, once], seeds=2, log=lambda s: None, first_seed=3)
    assert seeded.seeds == [3, 4] and once.seeds == [3]
    assert len(rep["results"]["recorder"]["similar_items"]["precision@2"]["values"]) == 2
    assert "over 2 seeds (seeds 3–4)" in markdown(rep)
    one = run_suite(cfg, tiny(), [SeedRecorder()], seeds=1, log=lambda s: None, first_seed=1)
    assert "One seed (seed 1)" in markdown(one)
    assert "(seeds " not in markdown(run_suite(cfg, tiny(), [SeedRecorder()], seeds=2, log=lambda s: None))


def test_combined_seed_runs_equal_one_run_of_all_seeds(tmp_path, monkeypatch, capsys):
    from guim_features.downstream import baselines
    from guim_features.downstream.baselines.simple import Popularity, RandomVectors
    from guim_features.cli import main

    monkeypatch.setattr(BenchData, "load", classmethod(lambda cls, cfg: tiny()))
    monkeypatch.setattr(baselines, "methods_by_name", lambda: {"random": RandomVectors, "popularity": Popularity})
    load_config(tmp_path)
    args = ["bench", "--workspace", str(tmp_path), "--set", "bench.methods=[random,popularity]",
            "--set", "bench.tasks=[similar_items]", "--set", "bench.item_scope=all", "--set", "bench.neighbours=2",
            "--set", "bench.log_mlflow=false"]

    def latest():
        return sorted((tmp_path / "reports").glob("bench-*"))[-1]

    assert main(args + ["--seeds", "3"]) == 0
    whole = json.loads((latest() / "bench.json").read_text())
    assert main(args + ["--seeds", "2", "--first-seed", "1"]) == 0
    later = latest()
    assert main(args + ["--seeds", "1"]) == 0
    first = latest()
    assert main(["bench", "--workspace", str(tmp_path), "--combine", str(later), str(first / "bench.json")]) == 0
    pooled = json.loads((latest() / "bench.json").read_text())
    for m in ("random", "popularity"):
        assert pooled["results"][m] == whole["results"][m]     # seeds 0, 1, 2 in order; popularity once
    assert len(pooled["results"]["popularity"]["similar_items"]["precision@2"]["values"]) == 1
    assert pooled["seeds"] == 3 and pooled["first_seed"] == 0
    assert "over 3 seeds" in (latest() / "bench.md").read_text()
    # the same seed twice, or runs of other settings, are refused by name
    capsys.readouterr()
    assert main(["bench", "--workspace", str(tmp_path), "--combine", str(first), str(first)]) != 0
    assert "seed 0 is in both" in capsys.readouterr().err
    assert main(args + ["--seeds", "1", "--first-seed", "5", "--set", "bench.neighbours=3"]) == 0
    assert main(["bench", "--workspace", str(tmp_path), "--combine", str(first), str(latest())]) != 0
    assert "bench.neighbours: 2 in" in capsys.readouterr().err
    assert main(["bench", "--workspace", str(tmp_path), "--combine", str(tmp_path / "nowhere"), str(first)]) != 0
    assert "no bench report at" in capsys.readouterr().err


def test_combine_pools_values_and_recomputes_the_interval():
    from guim_features.downstream.report import combine

    def rep(first, values):
        return {"methods": ["m"], "tasks": ["t"], "seeds": len(values), "first_seed": first,
                "results": {"m": {"t": {"k": {"values": values}}}}, "headline": {"t": "k"},
                "skipped_tasks": {}, "failed_methods": {}, "skipped_methods": {}, "fit_seconds": {"m": 10.0 * first},
                "data": {"fingerprint": "same"}}

    out = combine([rep(2, [0.3]), rep(0, [0.1, 0.2])], ["b", "a"])
    r = out["results"]["m"]["t"]["k"]
    assert r["values"] == [0.1, 0.2, 0.3]
    assert r["mean"] == pytest.approx(0.2) and r["std"] == pytest.approx(0.1)
    assert r["ci95"] == pytest.approx(4.302653 * 0.1 / math.sqrt(3), rel=1e-5)   # t(0.975, 2 d.f.)
    assert out["fit_seconds"]["m"] == pytest.approx((0 * 2 + 20 * 1) / 3)
    with pytest.raises(Exception, match="other data"):
        combine([rep(0, [0.1]), {**rep(1, [0.2]), "data": {"fingerprint": "other"}}], ["a", "b"])


def test_combine_pools_the_finished_methods_of_stopped_runs(tmp_path, monkeypatch, capsys):
    """Two one-seed runs of one workspace stopped (Ctrl-C) while their slowest method was fitting
    leave a partial file each; --combine over them pools the methods they finished, as one run of
    both seeds would, and names the unfinished method."""
    from guim_features.downstream import baselines
    from guim_features.downstream.baselines.simple import Popularity, RandomVectors
    from guim_features.cli import main

    class Slow(Boom):
        name = "slow"

        def embed(self, data, seed):
            raise KeyboardInterrupt

    monkeypatch.setattr(BenchData, "load", classmethod(lambda cls, cfg: tiny()))
    monkeypatch.setattr(baselines, "methods_by_name",
                        lambda: {"random": RandomVectors, "popularity": Popularity, "slow": Slow})
    load_config(tmp_path)
    base = ["bench", "--workspace", str(tmp_path), "--set", "bench.tasks=[similar_items]", "--set",
            "bench.item_scope=all", "--set", "bench.neighbours=2", "--set", "bench.log_mlflow=false"]
    assert main(base + ["--set", "bench.methods=[random,popularity]", "--seeds", "2"]) == 0
    whole = json.loads(sorted((tmp_path / "reports").glob("bench-*/bench.json"))[-1].read_text())
    for seed in (0, 1):    # one workspace: each run keeps its own partial file
        assert main(base + ["--set", "bench.methods=[random,popularity,slow]", "--seeds", "1",
                            "--first-seed", str(seed)]) != 0
    stopped = [tmp_path / "reports" / "bench-partial.json", tmp_path / "reports" / "bench-partial-seed1.json"]
    assert all(p.exists() for p in stopped)
    capsys.readouterr()
    assert main(["bench", "--workspace", str(tmp_path), "--combine", *map(str, stopped)]) == 0
    pooled = json.loads(sorted((tmp_path / "reports").glob("bench-*/bench.json"))[-1].read_text())
    assert pooled["methods"] == ["random", "popularity"] and pooled["seeds"] == 2
    for m in ("random", "popularity"):
        assert pooled["results"][m] == whole["results"][m]
    assert pooled["skipped_methods"] == {"slow": "unfinished: the run was stopped before it"}
    assert "method `slow` skipped: unfinished" in capsys.readouterr().out
    # a stopped two-seed run (the deterministic popularity run once) pools with a stopped one-seed run
    for p in stopped:
        p.unlink()
    assert main(base + ["--set", "bench.methods=[popularity,random,slow]", "--seeds", "2"]) != 0
    assert main(base + ["--set", "bench.methods=[popularity,random,slow]", "--seeds", "1", "--first-seed", "2"]) != 0
    assert main(["bench", "--workspace", str(tmp_path), "--combine", *map(str, stopped[:1]),
                 str(tmp_path / "reports" / "bench-partial-seed2.json")]) == 0
    pooled = json.loads(sorted((tmp_path / "reports").glob("bench-*/bench.json"))[-1].read_text())
    assert pooled["methods"] == ["popularity", "random"] and pooled["seeds"] == 3
