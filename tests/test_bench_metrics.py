"""GUIM-Bench metrics and tasks against values computed by hand on tiny hand-written inputs."""
from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest

from guim_features.bench import metrics as M
from guim_features.bench.baselines import Embeddings
from guim_features.bench.data import BenchData
from guim_features.bench.tasks import (category_propensity, interest_coverage, item_category, item_demand,
                                       next_item, purchase_propensity, similar_items, user_profile)
from guim_features.config import BenchConfig, replace

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


def test_a_task_the_data_cannot_support_is_skipped_with_a_reason():
    from guim_features.bench.tasks import Skip

    d, e = tiny(), tiny_embeddings()
    with pytest.raises(Skip, match="min_class_size"):
        user_profile.evaluate(d, e, CFG)   # one user per gender


def test_unknown_method_or_task_is_a_clear_error():
    from guim_features.bench import make_methods, run_suite
    from guim_features.config import load_config
    from guim_features.errors import GuimError

    cfg = load_config("unused", ["bench.methods=[random,bpr]"], write_default=False)
    with pytest.raises(GuimError, match="unknown bench method 'bpr'.*known: random, popularity"):
        make_methods(cfg)
    cfg = load_config("unused", ["bench.tasks=[next_item,churn]"], write_default=False)
    with pytest.raises(GuimError, match="unknown bench task 'churn'"):
        run_suite(cfg, tiny(), [], seeds=1)
