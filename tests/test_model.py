"""GUIM model and data loader: interface, shapes, properties, options; no training."""
from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from guim_features.config import TrainConfig, load_config
from guim_features.errors import GuimError
from guim_features.model import GUIM, model_args
from guim_features.model.guim import (BANK_SLOTS, SameTargetBank, attribute_loss, contrastive_loss,
                                     hard_negative_logits, routing_penalty, seen_mask, separation_penalty)

SIZES = {"n_items": 53, "cat_sizes": [6, 4, 2], "n_num": 2, "title_buckets": 100, "tag_size": 6, "title_len": 4,
         "tags_len": 3, "image_dim": 8, "n_behaviors": 4, "gap_buckets": 8}


def make(**kw) -> GUIM:
    torch.manual_seed(0)
    tc = TrainConfig(**{"d": 16, "heads": 2, "max_len": 10, **kw})
    return GUIM(model_args(tc, SIZES)).eval()


def seqs(B=3, L=10, seed=0):
    g = torch.Generator().manual_seed(seed)
    items = torch.randint(3, 53, (B, L), generator=g)
    items[0, :4] = 0                                              # a shorter, left-padded user
    beh = torch.randint(1, 5, (B, L), generator=g) * (items > 0)
    gaps = torch.randint(0, 8, (B, L), generator=g)
    return items, beh, gaps


@pytest.mark.parametrize("K", [1, 4])
def test_interface_shapes(K):
    m = make(K=K, diversity_weight=0.1, routing_weight=1.0)       # the penalty terms exist for K > 1
    interests, weights = m.encode_users(*seqs())
    assert interests.shape == (3, K, 16) and weights.shape == (3, K)
    assert torch.allclose(weights.sum(-1), torch.ones(3), atol=1e-5)
    items = m.tower.embed_idx(torch.arange(3, 53))
    assert items.shape == (50, 16)
    assert m.score(interests, weights, items).shape == (3, 50)
    loss, parts = m.train().loss({"items": seqs(4, 11)[0], "behavior": seqs(4, 11)[1], "gaps": seqs(4, 11)[2]})
    assert loss.dim() == 0 and torch.isfinite(loss) and set(parts) == ({"next"} if K == 1 else {"next", "overlap", "routing"})


def test_score_rules_by_hand():
    m = make(K=2, normalize=False, score="max")                   # dot product, best interest
    interests = torch.tensor([[[1.0, 0.0], [0.0, 2.0]]])          # (1, K=2, d=2)
    weights = torch.tensor([[0.25, 0.75]])
    items = torch.tensor([[3.0, 1.0], [0.0, -1.0]])               # (N=2, d=2)
    # dot products: item0 -> (3, 2), item1 -> (0, -2)
    assert torch.allclose(m.score(interests, weights, items), torch.tensor([[3.0, 0.0]]))
    # lse: tau * log sum_k w_k exp(s_k / tau)
    m = make(K=2, normalize=False, score="lse", temperature=1.0)
    expect = [np.log(0.25 * np.exp(3) + 0.75 * np.exp(2)), np.log(0.25 * np.exp(0) + 0.75 * np.exp(-2))]
    assert torch.allclose(m.score(interests, weights, items), torch.tensor([expect], dtype=torch.float32), atol=1e-5)
    m = make(K=2, normalize=False, score="lse", temperature=0.5)
    expect = [0.5 * np.log(0.25 * np.exp(6) + 0.75 * np.exp(4)), 0.5 * np.log(0.25 * np.exp(0) + 0.75 * np.exp(-4))]
    assert torch.allclose(m.score(interests, weights, items), torch.tensor([expect], dtype=torch.float32), atol=1e-5)


def test_fused_training_logits_equal_the_score_over_tau():
    # the fused lse path must give log sum_k w_k exp(cos_k / tau), as score() / tau does
    g = torch.Generator().manual_seed(3)
    interests, items = torch.randn(5, 3, 16, generator=g), torch.randn(40, 16, generator=g)
    weights = torch.softmax(torch.randn(5, 3, generator=g), -1)
    for tau in (0.05, 0.1, 1.0):
        m = make(K=3, normalize=True, score="lse", temperature=tau)
        cos = torch.einsum("pkd,nd->pkn", F.normalize(interests, dim=-1), F.normalize(items, dim=-1))
        expect = torch.log((weights[..., None] * torch.exp(cos / tau)).sum(1))
        assert torch.allclose(m.logits(interests, weights, items), expect, atol=1e-4)
        assert torch.allclose(m.score(interests, weights, items) / tau, expect, atol=1e-4)


def test_cosine_score_by_hand():
    m = make(K=2, normalize=True, score="max")
    interests = torch.tensor([[[2.0, 0.0], [0.0, 3.0]]])
    items = torch.tensor([[1.0, 1.0], [0.0, -5.0]])
    # cosines: item0 -> (0.7071, 0.7071), item1 -> (0, -1); max over interests
    assert torch.allclose(m.score(interests, torch.ones(1, 2) / 2, items), torch.tensor([[0.70711, 0.0]]), atol=1e-4)


def test_routed_and_exact_training_logits():
    for rule in ("route", "exact"):
        m = make(K=3, train_score=rule).train()
        items = torch.randint(3, 53, (4, 11))
        loss, parts = m.loss({"items": items, "behavior": torch.ones_like(items), "gaps": torch.zeros_like(items)})
        loss.backward()
        assert torch.isfinite(loss) and m.mixture.queries.grad is not None
        # the interest weights are trained in both modes (route: they predict the routed interest)
        assert m.mixture.gate.weight.grad is not None and m.mixture.gate.weight.grad.abs().sum() > 0


def test_unknown_options_raise():
    with pytest.raises(GuimError, match="train.score"):
        make(score="mean")
    with pytest.raises(GuimError, match="negatives"):
        make(negatives="hard")
    with pytest.raises(GuimError, match="unknown"):
        GUIM({**make().args, "colour": 1})
    with pytest.raises(GuimError, match="divisible"):
        make(d=15, heads=2)


def test_causal_encoding_does_not_see_the_future():
    m = make()
    items, beh, gaps = seqs()
    h1, _ = m.encode(items, beh, gaps, causal=True)
    items2 = items.clone()
    items2[:, 7] = (items2[:, 7] - 3 + 1) % 50 + 3                  # change the 8th event only
    h2, _ = m.encode(items2, beh, gaps, causal=True)
    assert torch.allclose(h1[:, :7], h2[:, :7], atol=1e-6)            # earlier positions unchanged
    assert not torch.allclose(h1[:, 7:], h2[:, 7:])
    hb, _ = m.encode(items2, beh, gaps, causal=False)                 # bidirectional: everything sees it
    hb1, _ = m.encode(items, beh, gaps, causal=False)
    assert not torch.allclose(hb[:, :7], hb1[:, :7])


def test_left_padding_does_not_change_a_user():
    m = make()
    items = torch.tensor([[0, 0, 0, 0, 0, 7, 8, 9]])
    beh, gaps = (items > 0).long(), torch.zeros_like(items)
    i1, w1 = m.encode_users(items[:, -3:], beh[:, -3:], gaps[:, -3:])
    i2, w2 = m.encode_users(items, beh, gaps)
    assert torch.allclose(i1, i2, atol=1e-5) and torch.allclose(w1, w2, atol=1e-5)


def test_unseen_items_get_vectors_from_content():
    m = make()
    base = {"cat": torch.tensor([[2, 2, 0], [3, 2, 0]]), "num": torch.zeros(2, 2),
            "title": torch.tensor([[5, 6, 0, 0], [7, 0, 0, 0]]), "tags": torch.zeros(2, 3, dtype=torch.long),
            "image": torch.zeros(2, 8), "has_image": torch.zeros(2)}
    unseen = m.encode_items({**base, "item_idx": torch.tensor([1000, 1000])})   # same id bucket
    assert torch.isfinite(unseen).all()
    assert not torch.allclose(unseen[0], unseen[1])                    # content differs -> vector differs
    # an unseen item does not use any trained item's own id row
    rows = m.tower.id_rows(torch.tensor([1000, 52, 3]))
    assert rows[0] >= 53 and rows[1] == 52 and rows[2] == 3


def test_item_fields_select_what_the_tower_reads():
    def two_items(**change):   # item 7 twice: same id, different content unless a field is not read
        f = {"item_idx": torch.tensor([7, 7]), "cat": torch.tensor([[2, 2, 0], [3, 3, 1]]),
             "num": torch.tensor([[0.0, 0.0], [1.0, 2.0]]), "title": torch.tensor([[5, 6, 0, 0], [7, 0, 0, 0]]),
             "tags": torch.tensor([[2, 0, 0], [3, 4, 0]]), "image": torch.stack([torch.zeros(8), torch.ones(8)]),
             "has_image": torch.ones(2)}
        return {**f, **change}

    blind = make(item_fields=[]).encode_items(two_items())
    assert torch.allclose(blind[0], blind[1])                          # id only: content ignored
    aware = make().encode_items(two_items())
    assert not torch.allclose(aware[0], aware[1])
    # reading only the category: differing tags, title, price, image and brand change nothing
    cat_only = make(item_fields=["category"])
    same_cat = two_items(cat=torch.tensor([[2, 2, 0], [2, 3, 1]]))
    v = cat_only.encode_items(same_cat)
    assert torch.allclose(v[0], v[1])
    assert not torch.allclose(*cat_only.encode_items(two_items()))
    with pytest.raises(ValueError, match="item_fields"):
        make(item_fields=["colour"])
    # a model saved before the option existed read every field
    args = model_args(TrainConfig(d=16, heads=2, max_len=10), SIZES)
    del args["item_fields"]
    assert GUIM(args).args["item_fields"] == list(TrainConfig().item_fields)


def test_excluded_users_are_neither_trained_nor_validated_on(tmp_path):
    from silver import write_silver

    from guim_features.data import TrainStream, count_windows, eval_batches, item_counts

    cfg = load_config(tmp_path / "ws")
    info = write_silver(tmp_path / "ws" / "lakehouse", users=20, items=30, events=12)
    out = frozenset({"u0", "u1"})
    # 10 training events per user, L = 4: 3 windows per user, 18 users left
    assert count_windows(cfg, 4, "all", skip_users=out) == 54
    wins = [w for b in TrainStream(cfg, 4, 8, seed=1, buffer=16, skip_users=out) for w in b["items"]]
    assert len(wins) == 54
    kept = [s[:10] for s in info["sequences"][2:]]
    expected = np.bincount(np.concatenate(kept), minlength=33)
    assert np.array_equal(item_counts(cfg, 33, skip_users=out), expected)
    assert sum(len(b["target"]) for b in eval_batches(cfg, "valid", 50, 100, skip_users=out)) == 18


def test_sampled_infonce_cost_does_not_grow_with_vocabulary():
    counts = {}
    for n_items in (1_000, 200_000):
        torch.manual_seed(0)
        m = GUIM(model_args(TrainConfig(d=16, heads=2, max_len=10, negatives="sampled", num_negatives=64),
                            {**SIZES, "n_items": n_items})).train()
        seen = []
        m.tower.register_forward_hook(lambda mod, inp, out: seen.append(out.shape[0]))
        items = torch.randint(3, 900, (4, 11))
        loss, _ = m.loss({"items": items, "behavior": torch.ones_like(items), "gaps": torch.zeros_like(items)})
        assert torch.isfinite(loss)
        counts[n_items] = max(seen)
    # item vectors computed per step: inputs (4 x 10) and at most 40 targets + 64 negatives
    assert counts[1_000] <= 104 and counts[200_000] <= 104


def test_sampled_mode_uses_sparse_id_gradients_and_popularity_sampler():
    from guim_features.train import optimizers

    m = make(negatives="sampled", num_negatives=16, sampler="popularity").train()
    counts = np.zeros(53)
    counts[10] = 1000.0                                       # one very popular item
    m.set_popularity(counts + 1e-3)
    opts = optimizers(m, TrainConfig(lr=1e-2))
    assert [type(o).__name__ for o in opts] == ["AdamW", "SparseAdam"]
    items = torch.randint(3, 53, (4, 11))
    loss, _ = m.loss({"items": items, "behavior": torch.ones_like(items), "gaps": torch.zeros_like(items)})
    loss.backward()
    assert m.tower.id_emb.weight.grad.is_sparse
    for o in opts:
        o.step()
    # popularity sampling: nearly every negative is the popular item
    neg = {}
    m._candidates(torch.tensor([3]), neg)
    assert (neg["neg"] == 10).float().mean() > 0.9


def test_full_catalogue_when_small_and_mlm_objective():
    m = make(negatives="auto", mlm_weight=0.5, mask_prob=0.5).train()
    items = torch.randint(3, 53, (4, 11))
    loss, parts = m.loss({"items": items, "behavior": torch.ones_like(items), "gaps": torch.zeros_like(items)})
    assert set(parts) == {"next", "mlm", "routing"}               # routing on, diversity off by default
    loss.backward()
    assert m.tower.id_emb.weight.grad is not None


def test_train_stream_windows_and_determinism(tmp_path):
    from silver import write_silver

    from guim_features.data import TrainStream, count_windows, eval_batches, rank_metrics

    cfg = load_config(tmp_path / "ws")
    info = write_silver(tmp_path / "ws" / "lakehouse", users=20, items=30, events=12)
    # 10 training events per user and L = 4: windows end at 10, 6, 2 -> 3 windows per user
    assert count_windows(cfg, 4, "all") == 60 and count_windows(cfg, 4, "last") == 20
    s = TrainStream(cfg, 4, 8, seed=1, buffer=16)
    a = [b["items"] for b in s]
    assert sum(len(x) for x in a) == 60 and all(x.shape[1] <= 5 for x in a)
    assert all(np.array_equal(x, y) for x, y in zip(a, [b["items"] for b in s]))      # same seed+epoch
    s.set_epoch(1)
    assert not all(np.array_equal(x, y) for x, y in zip(a, [b["items"] for b in s]))  # reshuffled
    # every training next-item target appears exactly once across the windows of a user
    got = sorted(int(v) for x in a for row in x for v in row[1:][row[:-1] > 0])
    want = sorted(v for seq in info["sequences"] for v in seq[1:10])
    assert got == want
    # eval: valid target = 11th event, test target = 12th
    b = next(eval_batches(cfg, "test", 50, 100))
    assert b["target"].tolist() == [seq[11] for seq in info["sequences"]]
    assert [len(x) for x in b["seen"]] == [11] * 20


def test_train_batches_are_grouped_by_length(tmp_path):
    from silver import write_silver

    from guim_features.data import TrainStream

    cfg = load_config(tmp_path / "ws")
    write_silver(tmp_path / "ws" / "lakehouse", users=20, items=30, events=12)
    # windows per user (L = 4): events 6..10 and 2..6 (5 long) and 0..2 (2 long): 40 of 5, 20 of 2.
    # One buffer fill holds all 60; sorted by length and cut by 8: two batches of the 2-long
    # windows, one batch with 4 + 4, five batches of 5-long ones (the last holds 4).
    batches = list(TrainStream(cfg, 4, 8, seed=3, buffer=100))
    lengths = sorted([tuple(sorted((b["items"] > 0).sum(1).tolist())) for b in batches])
    assert lengths == sorted([(2,) * 8] * 2 + [(2,) * 4 + (5,) * 4] + [(5,) * 8] * 4 + [(5,) * 4])
    for b in batches:                           # each batch is padded to its own longest window only
        assert b["items"].shape[1] == (b["items"] > 0).sum(1).max()


def test_rank_metrics_by_hand():
    from guim_features.data import rank_metrics

    scores = np.array([[0, 0, 0, 5.0, 4.0, 3.0, 2.0], [0, 0, 0, 1.0, 2.0, 3.0, 4.0]])
    # user 0: target 5 ranks 3rd, but item 3 was seen -> 2nd; user 1: target 3 is last of 4 -> 4th
    m = rank_metrics(scores, np.array([5, 3]), [np.array([3]), np.array([], int)], ks=(1, 2))
    assert m["recall@1"] == 0 and m["recall@2"] == 1
    assert m["ndcg@2"] == pytest.approx(1 / np.log2(3))


def test_inclusion_probability_by_hand():
    from guim_features.model.guim import inclusion_log_prob

    # uniform sampler over 4 items, 2 draws, no other targets: P(drawn at least once) = 1 - (3/4)^2
    pi = inclusion_log_prob(torch.tensor([0.0]), torch.tensor([0.25]), 0, 2).exp()
    assert pi.item() == pytest.approx(7 / 16, rel=1e-5)
    # 3 other targets from p = 0.5 and 1 draw from q = 0.5: 1 - 0.5^3 * 0.5; never above 1 for popular items
    pi = inclusion_log_prob(torch.tensor([0.5, 0.999]), torch.tensor([0.5, 0.999]), 3, 1).exp()
    assert pi[0].item() == pytest.approx(1 - 0.5 ** 4, rel=1e-5) and pi[1].item() <= 1.0


def test_sampled_softmax_optimum_equals_full_softmax_optimum():
    """One context, 8 items, targets drawn from a Zipf p: the full-softmax optimum is softmax(theta) = p.
    Free logits trained with the sampler the model uses (16 in-batch targets + 3 uniform negatives,
    de-duplicated, HT-corrected) must land on p; without the correction popular items lose mass and
    with the expected-count correction they gain far too much (both checked as a control)."""
    from guim_features.model.guim import corrected_logits, inclusion_log_prob

    p = torch.tensor([1 / (i + 1) ** 1.2 for i in range(8)])
    p = p / p.sum()
    q = torch.full((8,), 1 / 8)
    P, M = 16, 3

    def fit(correction):
        torch.manual_seed(0)
        theta = torch.zeros(8, requires_grad=True)
        opt = torch.optim.Adam([theta], lr=0.02)
        for s in range(3000):
            y = torch.multinomial(p, P, replacement=True)
            cand = torch.unique(torch.cat([y, torch.multinomial(q, M, replacement=True)]))
            labels = torch.searchsorted(cand, y)
            logits = theta[cand][None].expand(P, -1)
            if correction == "ht":
                logits = corrected_logits(logits, inclusion_log_prob(p[cand], q[cand], P - 1, M), labels)
            elif correction == "expected_count":
                logits = logits - torch.log(P * p[cand] + M * q[cand])[None]
            loss = torch.nn.functional.cross_entropy(logits, labels)
            opt.zero_grad()
            loss.backward()
            opt.step()
            for g in opt.param_groups:
                g["lr"] = 0.02 * (1 - s / 3000) + 1e-4
        return 0.5 * (torch.softmax(theta.detach(), 0) - p).abs().sum().item()   # total variation to p

    assert fit("ht") < 0.02
    assert fit("none") > 0.04 and fit("expected_count") > 0.15


def test_rank_metrics_count_ties_against_the_target():
    from guim_features.data import rank_metrics

    rng = np.random.default_rng(0)
    n, V = 3000, 203                                   # 200 rankable items after the 3 reserved
    target = rng.integers(3, V, n)
    for scores in (np.zeros((n, V)), np.full((n, V), np.nan)):   # a model that learned nothing
        m = rank_metrics(scores, target, [np.array([], int)] * n, ks=(20,))
        assert abs(m["recall@20"] / n - 20 / 200) < 0.02   # k / N, not 1.0
    # target tied with exactly two other items at the top: rank 0, 1 or 2 with equal chance
    s = np.zeros((n, 10))
    s[:, 3:6] = 1.0
    m = rank_metrics(s, np.full(n, 4), [np.array([], int)] * n, ks=(1,))
    assert abs(m["recall@1"] / n - 1 / 3) < 0.03
    # a NaN target ranks below every real score
    s = rng.normal(size=(n, 10))
    s[:, 4] = np.nan
    assert rank_metrics(s, np.full(n, 4), [np.array([], int)] * n, ks=(6,))["recall@6"] == 0


def test_validation_sample_is_a_fixed_subset(tmp_path):
    from silver import write_silver

    from guim_features.data import eval_batches

    cfg = load_config(tmp_path / "ws")
    write_silver(tmp_path / "ws" / "lakehouse", users=20, items=30, events=12)
    targets = lambda **kw: [t for b in eval_batches(cfg, "valid", 50, 4, **kw) for t in b["target"]]  # noqa: E731
    assert len(targets()) == 20 and len(targets(max_users=7, seed=1)) == 7
    assert targets(max_users=7, seed=1) == targets(max_users=7, seed=1)       # the same users every epoch
    assert targets(max_users=50) == targets()                                  # more than there are: all


def test_failed_compile_falls_back_to_eager(capsys):
    from guim_features.train import _Guarded

    def broken(batch):
        raise RuntimeError("no C++ compiler")

    g = _Guarded(lambda batch: batch * 2, broken)
    assert g(3) == 6 and g(4) == 8
    assert "torch.compile failed (RuntimeError: no C++ compiler)" in capsys.readouterr().err


def test_user_vector_fold_in_by_hand():
    from guim_features.embedder import fold_in

    table = np.zeros((6, 2))
    table[3], table[4], table[5] = (3.0, 4.0), (0.0, 2.0), (1.0, 0.0)   # unit: (.6, .8), (0, 1), (1, 0)
    # YᵀY = [[1.36, .48], [.48, 1.64]]; user [3]: A = YᵀY + Y_uᵀY_u + .05 I = [[1.77, .96], [.96, 2.33]],
    # b = 2 (.6, .8); x = A⁻¹ b = (1.26, 1.68) / 3.2025
    v = fold_in(table, [np.array([3]), np.array([], dtype=int)])
    assert v.shape == (2, 2) and v.dtype == np.float32                     # d per user
    assert v.ravel().tolist() == pytest.approx([1.26 / 3.2025, 1.68 / 3.2025, 0.0, 0.0], abs=1e-6)


def test_embedder_user_vector_reads_the_whole_history():
    from guim_features.embedder import Embedder, fold_in

    emb = Embedder(make(K=2, profile_steps=0))                   # d = 16, max_len = 10, catalogue 3..52; no head
    long = np.arange(3, 28)                                      # 25 events: more than max_len
    v = emb.user_vector([long, np.array([7, 7, 60])])            # a repeat and an item outside the catalogue
    assert v.shape == (2, 16)
    table = emb.catalogue()
    assert v[0] == pytest.approx(fold_in(table, [long])[0], abs=1e-6)          # all 25 events, not the last 10
    assert v[0] != pytest.approx(fold_in(table, [long[-10:]])[0], abs=1e-3)
    assert v[1] == pytest.approx(fold_in(table, [np.array([7])])[0], abs=1e-6)  # 7 once; 60 skipped


def test_profile_head_learns_which_items_go_together():
    """Two planted groups of users, each buying from its own half of the catalogue: after training,
    every user's vector is closer (cosine) to its own group's mean vector than to the other's, and a
    user is encoded from the set of its items (order does not matter; no items is allowed)."""
    from guim_features.model.profile import ProfileHead, fit_profile

    torch.manual_seed(0)
    rng = np.random.default_rng(0)
    halves = (np.arange(3, 23), np.arange(23, 43))                   # catalogue 3..42
    group = np.arange(120) % 2
    sets = [np.unique(rng.choice(halves[g], 5, replace=False)) for g in group]
    head = ProfileHead(43, 8)
    losses = fit_profile(head, sets, steps=300, keep=0.5, seed=0)
    assert len(losses) == 300 and np.mean(losses[-20:]) < np.mean(losses[:20])
    v = head.encode(sets)
    assert np.array_equal(head.encode([sets[7]])[0], v[7])          # alone or among 120: the same bits
    v /= np.linalg.norm(v, axis=1, keepdims=True)
    means = np.stack([v[group == g].mean(0) for g in (0, 1)])      # (2, 8)
    nearest = (v @ means.T).argmax(1)
    assert (nearest == group).all()
    a = head.encode([np.array([3, 9, 15]), np.array([15, 3, 9]), np.array([], dtype=np.int64)])
    assert a.shape == (3, 8) and np.allclose(a[0], a[1], atol=1e-6) and np.isfinite(a[2]).all()


def test_profile_head_sampled_softmax_above_full_max(monkeypatch):
    """Above FULL_MAX items the softmax runs over the batch's items plus uniform draws: the head still
    learns the planted groups (catalogue of 43 items, FULL_MAX lowered to 10, 8 draws a step)."""
    from guim_features.model import profile
    from guim_features.model.profile import ProfileHead, fit_profile

    monkeypatch.setattr(profile, "FULL_MAX", 10)
    torch.manual_seed(0)
    rng = np.random.default_rng(1)
    halves = (np.arange(3, 23), np.arange(23, 43))
    group = np.arange(120) % 2
    sets = [np.unique(rng.choice(halves[g], 5, replace=False)) for g in group]
    head = ProfileHead(43, 8)
    losses = fit_profile(head, sets, steps=300, keep=0.5, num_negatives=8, seed=0)
    assert np.mean(losses[-20:]) < np.mean(losses[:20])
    v = head.encode(sets)
    v /= np.linalg.norm(v, axis=1, keepdims=True)
    means = np.stack([v[group == g].mean(0) for g in (0, 1)])
    assert ((v @ means.T).argmax(1) == group).all()


def test_embedder_user_vector_uses_the_profile_head_when_the_model_has_one():
    from guim_features.embedder import Embedder, fold_in

    with_head, without = make(K=2, profile_steps=10), make(K=2, profile_steps=0)
    assert with_head.profile is not None and without.profile is None
    # the head is initialised from a forked random stream: the sequence model starts the same either way
    assert all(torch.equal(p, q) for (n, p), q in zip(with_head.named_parameters(), without.parameters())
               if not n.startswith("profile."))
    emb = Embedder(with_head)
    hist = [np.array([5, 9, 9, 60]), np.array([9, 5])]          # 60 is outside the catalogue; a repeat
    v = emb.user_vector(hist)                                    # the head's 16 floats, then the fold-in's 16
    assert v.shape == (2, 32) and np.array_equal(v[0], v[1])
    assert np.allclose(v[:, :16], with_head.profile.encode([np.array([5, 9])] * 2), atol=1e-6)
    assert np.allclose(v[:, 16:], fold_in(emb.catalogue(), [np.array([5, 9])] * 2), atol=1e-6)
    assert Embedder(without).user_vector(hist).shape == (2, 16)  # no head: the fold-in alone
    with pytest.raises(GuimError, match="profile_keep"):
        make(profile_keep=0.0)
    # the sequence model's optimisers never hold the head's parameters (it is trained afterwards)
    from guim_features.train import optimizers

    held = {id(p) for o in optimizers(with_head, TrainConfig()) for g in o.param_groups for p in g["params"]}
    assert not held & {id(p) for p in with_head.profile.parameters()}
    assert {id(p) for p in with_head.parameters() if p.requires_grad} - held == {id(p) for p in with_head.profile.parameters()}


def test_hard_negative_logits_by_hand():
    # one row, label 0, negatives with logits 1 and 2, beta 1: the partition over negatives is
    # sum_j exp(2 s_j) / mean_j exp(s_j) = (e^2 + e^4) / ((e + e^2) / 2)
    logits = torch.tensor([[0.5, 1.0, 2.0]])
    out = hard_negative_logits(logits, torch.tensor([0]), 1.0)
    expect = -0.5 + np.log(np.exp(0.5) + (np.exp(2) + np.exp(4)) / ((np.exp(1) + np.exp(2)) / 2))
    assert float(F.cross_entropy(out, torch.tensor([0]))) == pytest.approx(expect, rel=1e-5)
    assert out[0, 0] == 0.5                                       # the positive keeps its logit
    # beta = 0: every negative weighs (N - 1) / (N - 1) = 1, plain InfoNCE
    assert torch.allclose(hard_negative_logits(logits, torch.tensor([2]), 0.0), logits)


def test_routing_penalty_by_hand():
    allowed = torch.tensor([[True, True, True, False]])           # the fourth event is not readable
    even = torch.tensor([[[1 / 3, 1 / 3, 1 / 3, 0.0]]])           # (1, K=1, L=4): spread evenly
    one = torch.tensor([[[1.0, 0.0, 0.0, 0.0]]])                  # all weight on one event
    assert float(routing_penalty(even, allowed)) == pytest.approx(0.0, abs=1e-7)
    # mean 1/3 over the three readable events; variance ((2/3)^2 + 2 (1/3)^2) / 3 = 2/9
    assert float(routing_penalty(one, allowed)) == pytest.approx((2 / 9) ** 2, rel=1e-5)
    both = torch.cat([even, one], 1)                              # K = 2: summed over interests
    assert float(routing_penalty(both, allowed)) == pytest.approx((2 / 9) ** 2, rel=1e-5)


@pytest.mark.parametrize("key", ["routing_weight", "hard_negative_beta", "diversity_weight", "cl_weight",
                                 "separation_weight", "attribute_weight"])
def test_a_negative_regulariser_weight_is_refused_by_name(key):
    with pytest.raises(GuimError, match=f"train.{key}=-1"):
        make(**{key: -1.0})


def test_attribute_loss_by_hand():
    # 6 attribute ids, 0 (pad) and 1 (out of vocabulary) never count: 4 real ones, 2..5
    flat = torch.zeros(3, 6)
    tags = torch.tensor([[2, 3, 0], [5, 1, 0], [0, 0, 0]])        # two attributes; one (+ OOV); none
    # equal logits: -log(1/4) for every attribute; the attribute-less row is left out of the mean
    assert float(attribute_loss(flat, tags)) == pytest.approx(np.log(4), rel=1e-6)
    # row 0 puts its mass on 2 and 3 (logit 10), row 1 on 5: each attribute of a set gets half / all of it
    sharp = torch.tensor([[0, 0, 10, 10, 0, 0], [0, 0, 0, 0, 0, 10], [9, 9, 9, 9, 9, 9.0]])
    want = (np.log(2 + 2 * np.exp(-10)) + np.log(1 + 3 * np.exp(-10))) / 2
    assert float(attribute_loss(sharp, tags)) == pytest.approx(want, rel=1e-4)
    assert float(attribute_loss(flat, torch.zeros(3, 3, dtype=torch.long))) == 0.0


def off_and_on(key: str, prepare=None) -> dict:
    """One training loss of a K = 1 model with the term ``key`` at weight 0 and at 0.5, the same
    initial weights and the same dropout masks for the first pass: weight -> (loss, parts, the
    gradient of the first block's first norm). ``prepare(model)`` runs before the loss."""
    items, beh, gaps = seqs(4, 11)
    batch = {"items": items, "behavior": beh, "gaps": gaps}
    out = {}
    for w in (0.0, 0.5):
        m = make(K=1, **{key: w}).train()
        if prepare is not None:
            prepare(m)
        torch.manual_seed(1)
        loss, parts = m.loss(batch)
        loss.backward()
        out[w] = (loss.item(), parts, m.blocks[0].ln1.weight.grad.clone())
    return out


def test_attribute_prediction_is_a_training_term_that_reaches_the_encoder():
    def random_tags(m):
        m.tower.tags.copy_(torch.randint(0, 6, m.tower.tags.shape, generator=torch.Generator().manual_seed(2)))

    out = off_and_on("attribute_weight", random_tags)
    assert set(out[0.0][1]) == {"next"} and set(out[0.5][1]) == {"next", "attr"}
    assert out[0.5][1]["next"] == pytest.approx(out[0.0][1]["next"], rel=1e-6)
    assert out[0.5][0] == pytest.approx(out[0.0][0] + 0.5 * out[0.5][1]["attr"], rel=1e-5)
    assert 0 < out[0.5][1]["attr"] and not torch.allclose(out[0.5][2], out[0.0][2])
    assert make(K=1).attr_head is None                            # off: no head, nothing saved


def test_contrastive_loss_by_hand():
    z = torch.tensor([[1.0, 0.0], [0.0, 1.0]])                    # two orthogonal states, cosines 1 and 0
    # distinct next items: row i's only positive is its own view: log(e^1 + e^0) - 1, both views alike
    assert float(contrastive_loss(z, z, torch.tensor([5, 6]), 1.0)) == pytest.approx(np.log(1 + np.exp(-1)), rel=1e-6)
    # the same next item: every state is a positive, nothing is pushed away
    assert float(contrastive_loss(z, z, torch.tensor([5, 5]), 1.0)) == pytest.approx(0.0, abs=1e-6)
    # scale does not matter (cosine); a lower temperature sharpens: log(1 + e^-10) ~ 4.5e-5
    sharp = contrastive_loss(3 * z, z, torch.tensor([5, 6]), 0.1)
    assert float(sharp) == pytest.approx(np.log1p(np.exp(-10)), abs=1e-6)


def test_contrastive_regulariser_is_a_training_term_that_reaches_the_encoder():
    grads = off_and_on("cl_weight")
    assert set(grads[0.0][1]) == {"next"} and set(grads[0.5][1]) == {"next", "cl"}
    assert grads[0.5][1]["next"] == pytest.approx(grads[0.0][1]["next"], rel=1e-6)
    assert grads[0.5][0] == pytest.approx(grads[0.0][0] + 0.5 * grads[0.5][1]["cl"], rel=1e-5)
    assert grads[0.5][1]["cl"] > 0 and not torch.allclose(grads[0.5][2], grads[0.0][2])
    with pytest.raises(GuimError, match="train.cl_weight > 0 .* train.next_weight > 0"):
        make(cl_weight=0.5, next_weight=0.0, mlm_weight=1.0)
    with pytest.raises(GuimError, match="train.cl_temperature=0"):
        make(cl_weight=0.5, cl_temperature=0.0)


def test_same_target_bank_keeps_the_latest_histories_per_item():
    bank = SameTargetBank(n_items=10, max_len=3, device="cpu")
    hist = lambda v: torch.full((1, 3), v)                                      # noqa: E731
    (_, _, _), found = bank.sample(torch.tensor([7]))
    assert not found.item()                                       # nothing stored for item 7 yet
    for v in range(1, BANK_SLOTS + 2):                            # one more than the slots: the oldest goes
        bank.add(torch.tensor([7]), hist(v), hist(0), hist(0))
    kept = {int(bank.sample(torch.tensor([7]))[0][0][0, 0]) for _ in range(200)}
    assert kept == set(range(2, BANK_SLOTS + 2))
    assert not bank.sample(torch.tensor([8]))[1].item()          # other items are untouched


def test_same_target_positive_is_another_history_of_the_same_item():
    M = 10
    m = make(K=1, cl_weight=0.5, cl_positive="same_target")      # eval(): no dropout, encodings repeat
    first = torch.tensor([[0, 0, 0, 0, 5, 6, 7, 8, 9, 10, 11]])  # targets 6..11 after 1..6 real items
    z = torch.zeros_like(first)
    m.loss({"items": first, "behavior": (first > 0).long(), "gaps": z})
    # each target's history is stored right-aligned: item 9 followed 5, 6, 7, 8
    assert m._bank.items[9, 0].tolist() == [0] * 6 + [5, 6, 7, 8]
    assert m._bank.items[11, 0].tolist() == [0] * 4 + [5, 6, 7, 8, 9, 10]
    assert int(m._bank.count[4]) == 0
    # a second user reaches item 9 after other items: its positive is the first user's history
    inp = torch.tensor([[20, 21, 22]])
    h = m._same_target_states(torch.tensor([2]), torch.tensor([9]), inp, torch.ones_like(inp),
                              torch.zeros_like(inp), None)
    hist = torch.tensor([[5, 6, 7, 8]])
    want = m.encode(hist, torch.ones_like(hist), torch.zeros_like(hist), causal=True)[0][:, -1]
    assert torch.allclose(h, want, atol=1e-5)
    # an item never seen before: the anchor's own history (its dropout view)
    h = m._same_target_states(torch.tensor([2]), torch.tensor([40]), inp, torch.ones_like(inp),
                              torch.zeros_like(inp), None)
    assert torch.allclose(h, m.encode(inp, torch.ones_like(inp), torch.zeros_like(inp), causal=True)[0][:, -1],
                          atol=1e-5)
    assert m._bank.items[40, 0].tolist() == [0] * (M - 3) + [20, 21, 22]


def test_same_target_contrastive_loss_trains_the_encoder():
    items, beh, gaps = seqs(4, 11)
    m = make(K=1, cl_weight=0.5, cl_positive="same_target").train()
    for _ in range(2):                                            # the second step draws from the bank
        m.zero_grad()
        loss, parts = m.loss({"items": items, "behavior": beh, "gaps": gaps})
        loss.backward()
    assert set(parts) == {"next", "cl"} and parts["cl"] > 0
    assert m.blocks[0].ln1.weight.grad.abs().sum() > 0
    with pytest.raises(GuimError, match="train.cl_positive='x' is not one of dropout, same_target"):
        make(cl_weight=0.5, cl_positive="x")


def test_left_positions_give_a_training_state_the_encoding_it_has_at_inference():
    items, beh, gaps = seqs(1, 8)
    for positions, same in (("left", True), ("right", False)):
        m = make(positions=positions)                             # eval(): no dropout
        h, _ = m.encode(items, beh, gaps, causal=True)            # (1, 8, d): a training window
        # the prefix ending at position 5, encoded alone as a user's whole history would be at inference
        alone, _ = m.encode(items[:, :6], beh[:, :6], gaps[:, :6], causal=True)
        assert torch.allclose(h[0, 5], alone[0, -1], atol=1e-5) is same, positions
    # left positions ignore left padding: the same history padded wider encodes the same
    m = make(positions="left")
    wide = [F.pad(x, (2, 0)) for x in (items, beh, gaps)]            # width 10 = max_len
    assert torch.allclose(m.encode(*wide, causal=True)[0][:, 2:], m.encode(items, beh, gaps, causal=True)[0],
                          atol=1e-5)
    with pytest.raises(GuimError, match="train.positions='middle' is not one of right, left"):
        make(positions="middle")


def test_interest_dropout_is_the_readouts_own_and_defaults_to_dropout():
    """The interests' read-out takes ``interest_dropout`` (-1 = ``dropout``), the encoder ``dropout``:
    with the encoder's (and id dropout) at 0 and the read-out's at 0, two training passes give the same
    interests; with the read-out's at 0.5 they differ; an old model's arguments (no key) keep ``dropout``."""
    x = seqs()

    def two_passes(**kw):
        m = make(K=4, id_dropout=0.0, **kw).train()
        return m.encode_users(*x)[0], m.encode_users(*x)[0]

    a, b = two_passes(dropout=0.0, interest_dropout=0.0)
    assert torch.equal(a, b)
    a, b = two_passes(dropout=0.0, interest_dropout=0.5)
    assert not torch.allclose(a, b)
    assert make(dropout=0.3).mixture.drop.p == 0.3                   # -1: the encoder's dropout
    assert make(dropout=0.3, interest_dropout=0.0).mixture.drop.p == 0.0
    old = {k: v for k, v in make(dropout=0.3).args.items() if k != "interest_dropout"}
    assert GUIM(old).mixture.drop.p == 0.3
    with pytest.raises(GuimError, match="interest_dropout"):
        make(interest_dropout=1.0)


@pytest.mark.parametrize("n_state", [0, 1, 3])
def test_state_interests_carry_the_last_state_the_others_only_their_read_out(n_state):
    """With the read-out zeroed (W_o = 0, bias 0) an interest is LayerNorm(h_t) if it carries the state
    and LayerNorm(0) = the norm's bias (0 at init) if not: ``state_interests`` = n picks the first n,
    ``interest_residual`` all K whatever n; a count outside 0..K is refused."""
    m = make(K=3, state_interests=n_state)
    with torch.no_grad():
        m.mixture.o.weight.zero_()
        m.mixture.o.bias.zero_()
    x = seqs()
    interests, _ = m.encode_users(*x)
    h_t = m.encode(*x, causal=True)[0][:, -1]                          # (B, d) the last position's state
    expect = F.layer_norm(h_t, (16,))
    for k in range(3):
        assert torch.allclose(interests[:, k], expect if k < n_state else torch.zeros_like(expect), atol=1e-5)
    with torch.no_grad():
        every = make(K=3, interest_residual=True, state_interests=n_state)   # the residual: all K, whatever n
        every.mixture.o.weight.zero_()
        every.mixture.o.bias.zero_()
    assert torch.allclose(every.encode_users(*x)[0], expect[:, None].expand(-1, 3, -1), atol=1e-5)
    old = {k: v for k, v in make(K=3).args.items() if k != "state_interests"}
    assert GUIM(old).mixture.n_state == 0                             # saved before the option: none
    with pytest.raises(GuimError, match="state_interests=4: expected 0 to train.K"):
        make(K=3, state_interests=4)


def test_seen_mask_by_hand():
    ids = torch.tensor([3, 5, 7, 9])                              # the candidates' item indices, sorted
    seen = torch.tensor([[0, 5, 9], [7, 7, 0], [3, 4, 0]])        # 0 = no item; 4 is not a candidate
    labels = torch.tensor([1, 2, 0])                              # positives 5, 7 and 3: all seen before
    expect = [[False, False, False, True],                        # 9 dropped, the positive 5 kept
              [False, False, False, False],                       # only the positive was seen
              [False, False, False, False]]
    assert seen_mask(seen, ids, labels).tolist() == expect


@pytest.mark.parametrize("negatives", ["all", "sampled"])
def test_exclude_seen_drops_a_states_own_history_from_its_negatives(negatives):
    items = torch.tensor([[0, 0, 7, 9, 7, 11, 13, 9, 15, 17, 19],
                          [5, 6, 8, 5, 10, 12, 6, 14, 16, 18, 20]])
    batch = {"items": items, "behavior": (items > 0).long(), "gaps": torch.zeros_like(items)}
    plain = make(negatives=negatives, num_negatives=8, routing_weight=0.0)
    excl = make(negatives=negatives, num_negatives=8, routing_weight=0.0, exclude_seen=True)
    excl.load_state_dict(plain.state_dict())
    torch.manual_seed(1)
    base, _ = plain.loss(batch)
    torch.manual_seed(1)                                          # the same sampled negatives
    loss, _ = excl.loss(batch)
    assert loss.item() < base.item()                              # fewer negatives, every row has some seen
    if negatives == "all":                                        # by hand: full softmax minus the history
        inp, tgt = items[:, :-1], items[:, 1:]
        h, valid = plain.encode(inp, batch["behavior"][:, :-1], batch["gaps"][:, :-1], causal=True)
        L = inp.shape[1]
        allowed = (valid[:, None, :] & torch.tril(torch.ones(L, L, dtype=torch.bool))[None]) | torch.eye(L, dtype=torch.bool)
        interests, weights, _ = plain.mixture(h, allowed)
        terms = []
        for b in range(2):
            for t in range(L):
                if not valid[b, t]:
                    continue
                lg = plain.logits(interests[b, t][None], weights[b, t][None], plain.catalogue())[0]  # items 3..52
                y = int(tgt[b, t])
                drop = {int(i) for i in inp[b, :t + 1] if int(i) > 0} - {y}
                keep = [j for j in range(3, 53) if j not in drop]
                terms.append(-(lg[y - 3] - torch.logsumexp(lg[[j - 3 for j in keep]], 0)))
        assert loss.item() == pytest.approx(torch.stack(terms).mean().item(), rel=1e-5)


def test_input_noise_swaps_inputs_only_while_training():
    items = torch.randint(3, 53, (4, 11), generator=torch.Generator().manual_seed(2))
    batch = {"items": items, "behavior": torch.ones_like(items), "gaps": torch.zeros_like(items)}
    kw = dict(negatives="all", dropout=0.0, id_dropout=0.0, routing_weight=0.0)
    plain, noisy = make(**kw), make(input_noise=0.5, **kw)
    noisy.load_state_dict(plain.state_dict())
    ref = plain.loss(batch)[0].item()
    assert noisy.loss(batch)[0].item() == ref                     # evaluation reads the real items
    assert plain.train().loss(batch)[0].item() == pytest.approx(ref)   # no dropout: training = evaluation
    assert noisy.train().loss(batch)[0].item() != pytest.approx(ref)   # half the inputs read as others
    with pytest.raises(GuimError, match="input_noise"):
        make(input_noise=1.0)


def test_separation_penalty_by_hand():
    e1, e2 = torch.tensor([1.0, 0.0]), torch.tensor([0.0, 3.0])
    assert float(separation_penalty(torch.stack([e1, e2]))) == pytest.approx(0.0, abs=1e-7)    # orthogonal
    assert float(separation_penalty(torch.stack([e1, 2 * e1]))) == pytest.approx(1.0, rel=1e-6)  # one direction
    # J = 3: e1, e1, e2: of the 6 ordered pairs, 2 have cos^2 = 1 and 4 have 0 -> 1/3
    assert float(separation_penalty(torch.stack([e1, e1, e2]))) == pytest.approx(1 / 3, rel=1e-6)
    # 45 degrees apart: cos^2 = 1/2; one vector alone has no pair
    assert float(separation_penalty(torch.stack([e1, torch.tensor([1.0, 1.0])]))) == pytest.approx(0.5, rel=1e-6)
    assert float(separation_penalty(e1[None])) == 0.0


def test_separation_is_a_training_term_over_the_free_interests_only():
    items, beh, gaps = seqs(4, 11)
    batch = {"items": items, "behavior": beh, "gaps": gaps}
    _, parts = make(K=4, state_interests=1, separation_weight=1.0).train().loss(batch)
    assert 0 < parts["separation"] <= 1
    _, parts = make(K=2, state_interests=1, separation_weight=1.0).train().loss(batch)
    assert parts["separation"] == 0.0                             # one free interest: no pair to separate
    _, parts = make(K=4, state_interests=1).train().loss(batch)
    assert "separation" not in parts                               # off by default
    old = {k: v for k, v in make(K=4).args.items() if k != "separation_weight"}
    assert GUIM(old).args["separation_weight"] == 0.0             # saved before the option: off


def _write_sequences(cfg, users: dict) -> None:
    """user_sequences with only what data.item_neighbours reads: {user_id: (train items, valid, test)}."""
    import pyarrow as pa
    from deltalake import write_deltalake

    from guim_features.schemas import TEST, TRAIN, VALID

    seqs_, splits = [], []
    for train, valid, test in users.values():
        seqs_.append(list(train) + [valid, test])
        splits.append([TRAIN] * len(train) + [VALID, TEST])
    write_deltalake(cfg.table("user_sequences"), pa.table({
        "user_id": list(users), "item_idx": pa.array(seqs_, pa.list_(pa.int32())),
        "split": pa.array(splits, pa.list_(pa.int32()))}))


def test_item_neighbours_by_hand(tmp_path):
    """Pairs of consecutive TRAIN items, both ways: a: 3-4, 4-5, 5-4; b: 4-5, 5-8; d: 6-6 (a repeat,
    dropped), 6-9; c (held out): 8-9. Valid and test items (6 after a's 4, ...) never count."""
    from guim_features.data import item_neighbours

    cfg = load_config(tmp_path / "ws")
    _write_sequences(cfg, {"a": ([3, 4, 5, 4], 6, 7), "b": ([4, 5, 8], 3, 9), "c": ([8, 9], 3, 4), "d": ([6, 6, 9], 4, 5)})
    nbr, w = item_neighbours(cfg, 10, 2, skip_users=frozenset({"c"}))
    assert nbr.shape == w.shape == (10, 2)
    assert nbr[4].tolist() == [5, 3] and w[4].tolist() == pytest.approx([0.75, 0.25])   # 5 three times, 3 once
    assert nbr[5].tolist() == [4, 8] and w[5].tolist() == pytest.approx([0.75, 0.25])
    assert nbr[3].tolist() == [4, 0] and w[3].tolist() == pytest.approx([1.0, 0.0])
    assert nbr[6].tolist() == [9, 0] and nbr[9].tolist() == [6, 0]     # not 4: a's 4 -> 6 is valid
    assert nbr[8].tolist() == [5, 0]                                    # 8-9 is the held-out user's
    assert nbr[7].tolist() == [0, 0] and w[7].sum() == 0                # only ever a test item
    nbr, w = item_neighbours(cfg, 10, 1)                                 # nobody held out, one neighbour
    assert nbr[8].tolist() == [5] and nbr[9].tolist() == [6]            # ties: the lower item_idx first
    assert w[8].tolist() == [1.0]                                        # normalised over what is kept


def test_item_graph_adds_the_weighted_neighbour_ids_before_the_norm():
    m = make(item_fields=[], item_graph=0.5, graph_neighbours=2)       # content-blind: id + graph only
    nbr, w = torch.zeros(53, 2, dtype=torch.long), torch.zeros(53, 2)
    nbr[4], w[4] = torch.tensor([5, 3]), torch.tensor([0.75, 0.25])
    m.tower.set_neighbours(nbr, w)
    E = m.tower.id_emb.weight.detach()
    got = m.tower.embed_idx(torch.tensor([4, 7]))
    expect = torch.stack([E[4] + 0.5 * (0.75 * E[5] + 0.25 * E[3]), E[7]])   # 7 has no neighbours
    assert torch.allclose(got, m.tower.norm(expect), atol=1e-6)
    assert "tower.nbr" in m.state_dict()                                # saved with the weights
    assert "tower.nbr" not in make().state_dict()                       # off: nothing extra
    with pytest.raises(GuimError, match="train.item_graph=-1"):
        make(item_graph=-1.0)
