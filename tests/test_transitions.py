"""The transition prior: pair counts and the blend by hand, the bench's rerank hook, and a training
run that fits it, chooses its weight on valid and saves it with the model."""
from __future__ import annotations

import math
from dataclasses import replace

import numpy as np
import pytest

from guim_features.config import load_config
from guim_features.model.transitions import TransitionPrior


def hand_prior(weight: float = 0.0) -> TransitionPrior:
    # [3, 4, 5]: 3->4 and 4->5 one apart, 3->5 two apart (0.5); [3, 4]: 3->4; [4, 4, 6]: the repeat 4->4
    # is not a pair, 4->6 one apart and two apart (1 + 0.5); 0 (padding) and 9 (outside 8 items) are skipped
    p = TransitionPrior.fit([np.array([0, 3, 4, 5]), np.array([3, 4, 9]), np.array([4, 4, 6])], n_items=8,
                            window=2, decay=0.5)
    p.weight = weight
    return p


def test_pair_counts_read_as_next_item_probabilities():
    p = hand_prior()
    P = p.probs(np.array([3, 4, 5, 0]))
    # item 3: counts 4: 2, 5: 0.5 (total 2.5, + 1); item 4: 5: 1, 6: 1.5 (total 2.5, + 1); 5 leads nowhere
    assert P[0].tolist() == pytest.approx([0, 0, 0, 0, 2 / 3.5, 0.5 / 3.5, 0, 0])
    assert P[1].tolist() == pytest.approx([0, 0, 0, 0, 0, 1 / 3.5, 1.5 / 3.5, 0])
    assert not P[2].any() and not P[3].any()             # no pairs from 5; 0 = no history


def test_the_blend_mixes_the_softmax_with_the_prior_and_weight_zero_is_the_model():
    p = hand_prior(weight=0.1)
    logits = np.array([[-np.inf, -np.inf, -np.inf, 0.0, 0.0, 0.0, 0.0, 0.0]], np.float32)   # uniform over 5 items
    out = p.blend(logits, np.array([3]))
    assert out[0, 4] == pytest.approx(math.log(0.9 / 5 + 0.1 * 2 / 3.5), abs=1e-6)
    assert out[0, 5] == pytest.approx(math.log(0.9 / 5 + 0.1 * 0.5 / 3.5), abs=1e-6)
    assert out[0, 6] == pytest.approx(math.log(0.9 / 5), abs=1e-6)
    assert np.isneginf(out[0, :3]).all()
    assert np.argsort(-out[0])[:3].tolist() == [4, 5, 3]           # the pairs first; the rest keep their order
    assert p.blend(logits, np.array([3]), weight=0.0) is logits     # weight 0: the model's own ranking
    with pytest.raises(ValueError, match="expected \\[0, 1\\)"):
        p.blend(logits, np.array([3]), weight=1.0)


def test_parts_computed_once_serve_every_weight_and_factor():
    """The shared parts give what blend gives at each weight, and a second factor's parts that reuse
    the first's P give what blend gives for those logits."""
    p = hand_prior()
    logits = np.array([[-np.inf, -np.inf, -np.inf, 0.5, 0.0, -1.0, 2.0, 0.0],
                       [-np.inf, -np.inf, -np.inf, 0.0, 1.0, 0.0, 0.0, -np.inf]], np.float32)
    history = np.array([3, 4])
    parts = p.parts(logits, history)
    doubled = p.parts(logits * 2, history, like=parts)
    for w in (0.05, 0.1, 0.5):
        assert np.array_equal(p.mix(parts, w), p.blend(logits, history, w))
        assert np.array_equal(p.mix(doubled, w), p.blend(logits * 2, history, w))
    # by hand, row 2 at w = 0.5: item 6 has P = 1.5 / 3.5 and softmax e^0 / (e^0 + e^1 + 2 e^0)
    soft = 1 / (3 + math.e)
    assert p.mix(parts, 0.5)[1, 6] == pytest.approx(math.log(0.5 * soft + 0.5 * 1.5 / 3.5), abs=1e-6)
    with pytest.raises(ValueError, match="expected \\(0, 1\\)"):
        p.mix(parts, 0.0)


def test_following_two_items_mixes_their_rows_from_the_newest():
    p = hand_prior(weight=0.1)
    p.follow = 2
    # histories in time order, left-padded: [3, 4] follows 4 (weight 1) and 3 (0.5), renormalised by 1.5;
    # [0, 3] has one item, whose row is the whole prior; a (B,) array is the last item alone
    P = p.probs(np.array([[3, 4], [0, 3], [5, 4]]))
    row3 = np.array([0, 0, 0, 0, 2 / 3.5, 0.5 / 3.5, 0, 0])
    row4 = np.array([0, 0, 0, 0, 0, 1 / 3.5, 1.5 / 3.5, 0])
    assert P[0].tolist() == pytest.approx((row4 + 0.5 * row3) / 1.5)
    assert P[1].tolist() == pytest.approx(row3)
    assert P[2].tolist() == pytest.approx(row4 / 1.5)       # 5 leads nowhere but still takes its share
    assert p.probs(np.array([4]))[0].tolist() == pytest.approx(row4)
    logits = np.zeros((1, 8), np.float32)
    logits[0, :3] = -np.inf
    out = p.blend(logits, np.array([[3, 4]]))
    assert out[0, 5] == pytest.approx(math.log(0.9 / 5 + 0.1 * (1 / 3.5 + 0.5 * 0.5 / 3.5) / 1.5), abs=1e-6)


def test_bad_settings_are_refused():
    with pytest.raises(ValueError, match="window 0"):
        TransitionPrior.fit([np.array([3, 4])], 8, window=0, decay=0.5)
    with pytest.raises(ValueError, match="decay 0"):
        TransitionPrior.fit([np.array([3, 4])], 8, window=1, decay=0.0)
    with pytest.raises(ValueError, match="follow 0"):
        TransitionPrior.fit([np.array([3, 4])], 8, window=1, decay=0.5, follow=0)


def test_bench_rankings_go_through_the_methods_rerank():
    from test_bench_metrics import tiny, tiny_embeddings

    from guim_features.downstream.baselines import Embeddings

    d, e = tiny(), tiny_embeddings()
    assert e.top_items(d, 3).tolist() == [[5, 7, 8], [5, 6, 8]]
    # a rerank that puts item 8 first for every user
    lifted = Embeddings(e.items, e.users, rerank=lambda rows, s: s + 10.0 * (np.arange(s.shape[1]) == 8))
    assert lifted.top_items(d, 3).tolist() == [[8, 5, 7], [8, 5, 6]]


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """A barely trained model (two steps) with the prior, on planted cycles: the next item is usually
    the successor of the user's previous item of that category."""
    from silver import write_silver

    from guim_features.train import train_model

    ws = tmp_path_factory.mktemp("transitions") / "ws"
    write_silver(ws / "lakehouse", users=80, items=40, categories=4, events=14, seed=1)
    cfg = load_config(ws)
    res = train_model(cfg, overrides={"d": 16, "layers": 1, "heads": 1, "K": 2, "batch_size": 16, "epochs": 1,
                                      "max_steps": 2, "valid_users": 0, "profile_steps": 0, "transition_window": 1,
                                      "transition_weights": [0.0, 0.5]},
                      mlflow_log=True, register=True, progress=False)
    return ws, cfg, res


def test_training_fits_the_prior_chooses_its_weight_on_valid_and_saves_it(trained):
    from guim_features.data import train_sequences
    from guim_features.embedder import CHECKPOINT, from_checkpoint

    ws, cfg, res = trained
    m = res.metrics
    # two steps leave the model near chance; the counted successors predict the planted cycles
    assert m["transition_weight"] == 0.5
    assert m["valid_ndcg@20"] > m["model_only_valid_ndcg@20"] and m["test_ndcg@20"] > m["model_only_test_ndcg@20"]
    assert "train_counts_test_ndcg@20" in m          # test ranked with the training parts' counts alone too
    # the saved prior is the one test was ranked with: the pairs of every event before the test split
    n = res.embedder.model.args["n_items"]
    expect = TransitionPrior.fit(train_sequences(cfg, with_valid=True), n, 1, 0.5)
    assert len(expect.values) > len(TransitionPrior.fit(train_sequences(cfg), n, 1, 0.5).values)
    for emb in (res.embedder, from_checkpoint(ws / "checkpoints" / CHECKPOINT)):
        got = emb.transitions
        assert got.weight == 0.5 and got.window == 1
        assert np.array_equal(got.indptr, expect.indptr) and np.array_equal(got.indices, expect.indices)
        assert np.allclose(got.values, expect.values)


def bench_data(ws):
    import pandas as pd
    from deltalake import DeltaTable

    from guim_features.downstream.data import BenchData

    read = lambda name: DeltaTable(str(ws / "lakehouse" / name)).to_pandas()   # noqa: E731
    none = pd.DataFrame({"user_id": pd.Series([], dtype=str)})
    return BenchData.from_frames(read("item_index"), read("user_sequences"), none, none, none, ["buy"],
                                 read("item_features"))


def likeliest_successors(prior, data) -> dict:
    """{user row: the unseen item their test input most likely leads to (the prior's ``follow`` latest
    items)}, where one item is likeliest."""
    out = {}
    for u in range(data.n_users):
        history = data.test_input(u)
        P = prior.probs(history[None, :], data.n_items)[0]
        P[history] = 0
        if P.max() > 0 and (P == P.max()).sum() == 1:
            out[u] = int(P.argmax())
    return out


def test_the_bench_ranks_each_user_with_the_prior_of_their_latest_items(trained):
    from guim_features.downstream.baselines.guim import embed_with

    ws, cfg, res = trained
    emb = res.embedder
    data = bench_data(ws)
    assert embed_with(emb, data).rerank is not None
    emb.transitions.weight = 0.999            # the prior all but decides: the top item is the history's likeliest
    try:                                      # successor among the items the user has not had yet
        top = embed_with(emb, data).top_items(data, 1)[:, 0]
    finally:
        emb.transitions.weight = 0.5
    want = likeliest_successors(emb.transitions, data)
    assert len(want) > data.n_users // 2
    assert {u: int(top[u]) for u in want} == want


def test_the_bench_gives_a_baseline_the_same_prior_chosen_on_valid(trained):
    """``train.transition_window`` > 0 gives every method the prior: the trainer's pairs (for the test
    ranking, those of the train and valid parts), its weight chosen on valid, and a method that ranks
    at chance then ranks each user's history's likeliest successor first."""
    from guim_features.downstream.baselines import Embeddings, add_transition_prior

    ws, cfg, res = trained
    data = bench_data(ws)
    tc = replace(cfg.train, transition_window=1, transition_weights=[0.0, 0.5])
    flat = np.zeros((data.n_users, 1, 2), np.float32)         # every item scores 0: chance

    def chance():
        return Embeddings(np.zeros((data.n_items, 2)), flat, valid_users=flat)

    emb = chance()
    add_transition_prior(emb, data, tc)
    assert emb.transition_weight == 0.5 and emb.rerank is not None
    expect = res.embedder.transitions                           # the trainer's count of the same train parts
    want = likeliest_successors(expect, data)
    top = emb.top_items(data, 1)[:, 0]
    assert len(want) > data.n_users // 2 and {u: int(top[u]) for u in want} == want

    # off, a method without valid vectors, or one that reranks already: left as it is
    for setting, e in ((replace(cfg.train, transition_window=0), chance()),
                       (tc, Embeddings(np.zeros((data.n_items, 2)), flat)),
                       (tc, Embeddings(np.zeros((data.n_items, 2)), flat, valid_users=flat, rerank=lambda r, s: s))):
        before = e.rerank
        add_transition_prior(e, data, setting)
        assert e.rerank is before and e.transition_weight is None


def test_the_bench_never_counts_a_held_out_users_events(trained):
    """In multi_interest_retrieval's user-holdout view the held-out users' input is coded valid: the
    baselines' before-test count must leave it out, as GUIM's trainer does."""
    from guim_features.downstream.baselines import bench_prior

    ws, cfg, res = trained
    view = bench_data(ws).user_holdout_view(0.5, seed=0)
    tc = replace(cfg.train, transition_window=1)
    held = {view.user_row[u] for u in view.holdout}
    assert held and all(len(view.test_input(u)) for u in held)
    got = bench_prior(view, tc, view.test_input)
    kept = TransitionPrior.fit([view.test_input(u) for u in range(view.n_users) if u not in held], view.n_items, 1, 0.5)
    every = TransitionPrior.fit([view.test_input(u) for u in range(view.n_users)], view.n_items, 1, 0.5)
    assert np.array_equal(got.indptr, kept.indptr) and np.array_equal(got.indices, kept.indices)
    assert np.allclose(got.values, kept.values)
    assert not np.allclose(np.diff(every.indptr), np.diff(got.indptr))      # the held-out users' pairs are many


def test_a_method_that_ranks_valid_perfectly_keeps_weight_zero(trained):
    """An oracle on valid cannot gain from the prior: the tie goes to the smaller weight, 0, and the
    method ranks alone."""
    from guim_features.downstream.baselines import Embeddings, add_transition_prior
    from guim_features.schemas import VALID

    ws, cfg, res = trained
    data = bench_data(ws)
    items = np.eye(data.n_items, dtype=np.float32)                       # one dimension per item
    valid = np.zeros((data.n_users, data.n_items), np.float32)
    for u in range(data.n_users):
        if len(data.part(u, (VALID,))):
            valid[u, data.part(u, (VALID,))[0]] = 50.0                   # the valid target, far ahead
    emb = Embeddings(items, valid, valid_users=valid)
    add_transition_prior(emb, data, replace(cfg.train, transition_window=1, transition_weights=[0.0, 0.5]))
    assert emb.transition_weight == 0.0 and emb.rerank is None


def test_a_bad_transition_setting_is_refused_before_training(tmp_path):
    from silver import write_silver

    from guim_features.errors import GuimError
    from guim_features.train import train_model

    write_silver(tmp_path / "ws" / "lakehouse", users=20, items=12, events=8)
    cfg = load_config(tmp_path / "ws")
    with pytest.raises(GuimError, match="transition_weights"):
        train_model(cfg, overrides={"transition_window": 2, "transition_weights": [0.0, 1.5]},
                    mlflow_log=False, register=False, progress=False)


def test_publish_maps_the_registered_models_prior_onto_the_index_rows(trained):
    """``guim publish`` stores the registered version's prior over the item index's rows: every pair of
    two indexed items, with its probability; pairs with an item the index lacks drop."""
    from deltalake import DeltaTable

    from guim_features.publish import model_transitions

    ws, cfg, res = trained
    prior = res.embedder.transitions
    index = DeltaTable(str(ws / "lakehouse" / "item_index")).to_pandas()
    id_of = dict(zip(index["item_idx"], index["item_id"].astype(str)))
    ids = sorted(id_of.values(), reverse=True)[1:]                # another order, one item left out
    row = {i: r for r, i in enumerate(ids)}
    expect = {}
    for i in range(len(prior.indptr) - 1):
        for j, p in zip(prior.indices[prior.indptr[i]:prior.indptr[i + 1]], prior.values[prior.indptr[i]:prior.indptr[i + 1]]):
            a, b = row.get(id_of.get(i)), row.get(id_of.get(int(j)))
            if a is not None and b is not None:
                expect[(a, b)] = float(p)
    arrays, meta = model_transitions(cfg, res.model_version, ids)
    got = {(a, int(b)): float(p) for a in range(len(ids))
           for b, p in zip(arrays["indices"][arrays["indptr"][a]:arrays["indptr"][a + 1]],
                           arrays["values"][arrays["indptr"][a]:arrays["indptr"][a + 1]])}
    assert len(arrays["indptr"]) == len(ids) + 1 and len(expect) > 20
    assert got == pytest.approx(expect)
    assert meta == {"weight": 0.5, "window": 1, "decay": 0.5, "follow": 2, "pairs": len(expect)}
    assert model_transitions(cfg, "99", ids) is None                     # not in the registry: no prior


def test_publish_recounts_the_pairs_over_every_event_before_the_snapshot(tmp_path):
    """``publish.transitions=recount``: the pairs of every bronze event before the snapshot, ordered per
    user by time (seconds), then input position, then item; an item the index lacks is skipped and the
    gap closes over it; an event at or after the snapshot is never counted."""
    from datetime import datetime, timedelta, timezone

    import pyarrow as pa
    from deltalake import write_deltalake

    from guim_features.publish import recount_transitions

    cfg = load_config(tmp_path / "ws")
    t0 = datetime(2026, 3, 1, tzinfo=timezone.utc)
    at = lambda s: t0 + timedelta(seconds=s)                               # noqa: E731
    # u1: A B C in time, then D at the snapshot; u2: B, X (not indexed), C; u3: A and C in the same
    # second, and B half a second later but first by input position: within a second, ord decides
    rows = [("u1", "A", at(1), 0), ("u1", "B", at(2), 1), ("u1", "C", at(3), 2), ("u1", "D", at(10), 3),
            ("u2", "B", at(1), 4), ("u2", "X", at(2), 5), ("u2", "C", at(3), 6),
            ("u3", "C", at(5), 9), ("u3", "A", at(5), 8), ("u3", "B", at(5) + timedelta(microseconds=500_000), 7)]
    write_deltalake(cfg.table("events"), pa.table({
        "event_id": [f"e{i}" for i in range(len(rows))], "user_id": [r[0] for r in rows],
        "item_id": [r[1] for r in rows], "behavior": ["buy"] * len(rows),
        "ts": pa.array([r[2] for r in rows], pa.timestamp("us", tz="UTC")),
        "ord": pa.array([r[3] for r in rows], pa.int64()), "source": ["test"] * len(rows)}))
    ids = ["D", "C", "B", "A"]                                             # index rows 0..3
    meta = {"weight": 0.2, "window": 2, "decay": 0.5, "follow": 2, "pairs": 0}
    arrays, got_meta = recount_transitions(cfg, meta, ids, at(10))
    r = {i: n for n, i in enumerate(ids)}
    got = {(ids[a], ids[int(b)]): float(p) for a in range(len(ids))
           for b, p in zip(arrays["indices"][arrays["indptr"][a]:arrays["indptr"][a + 1]],
                           arrays["values"][arrays["indptr"][a]:arrays["indptr"][a + 1]])}
    # counts: u1 A->B 1, B->C 1, A->C .5; u2 B->C 1; u3 (B, A, C) B->A 1, A->C 1, B->C .5
    # A: B 1, C 1.5 (total 2.5, + 1); B: C 2.5, A 1 (3.5, + 1); C: none; D: none (its event is at the snapshot)
    assert got == pytest.approx({("A", "B"): 1 / 3.5, ("A", "C"): 1.5 / 3.5, ("B", "C"): 2.5 / 4.5,
                                 ("B", "A"): 1 / 4.5})
    assert len(arrays["indptr"]) == len(ids) + 1 and arrays["indptr"][r["D"] + 1] == 0
    assert got_meta["pairs"] == 4 and got_meta["events"] == 9 and got_meta["weight"] == 0.2
    assert recount_transitions(load_config(tmp_path / "empty"), meta, ids, at(10)) is None   # no events table


def test_guim_publish_serves_the_recount_and_says_so(trained, capsys):
    """``guim publish`` of the registered version with a prior serves the pairs of the bronze events
    before the published snapshot, with the model's window and weight (``publish.transitions=model``:
    the counts the run was evaluated with)."""
    import argparse
    from datetime import timedelta

    import pyarrow as pa
    from deltalake import DeltaTable, write_deltalake
    from gold import T1, write_gold

    from guim_features import publish
    from guim_features.ann import ItemIndex

    ws, cfg, res = trained
    ids = sorted(DeltaTable(str(ws / "lakehouse" / "item_index")).to_pandas()["item_id"].astype(str))
    a, b, c, d = ids[:4]
    vectors = {i: [float(n % 4 == j) for j in range(4)] for n, i in enumerate(ids)}
    users = {"u1": ([[1, 0, 0, 0], [0, 1, 0, 0]], [0.5, 0.5], None), "u2": ([[0, 0, 1, 0], [0, 0, 0, 1]], [0.5, 0.5], None)}
    write_gold(cfg, users, vectors, res.model_version, T1, profile=False)
    rows = [("u1", a, -3), ("u1", b, -2), ("u1", c, -1), ("u1", d, 0), ("u2", b, -5), ("u2", c, -4)]
    write_deltalake(cfg.table("events"), pa.table({
        "event_id": [f"e{n}" for n in range(len(rows))], "user_id": [r[0] for r in rows],
        "item_id": [r[1] for r in rows], "behavior": ["buy"] * len(rows),
        "ts": pa.array([T1 + timedelta(seconds=r[2]) for r in rows], pa.timestamp("us", tz="UTC")),
        "ord": pa.array(range(len(rows)), pa.int64()), "source": ["test"] * len(rows)}))
    assert publish.run(cfg, argparse.Namespace(model_version=res.model_version)) == 0
    out = capsys.readouterr().out
    index = ItemIndex.load(publish.ann_dir(cfg))
    row = {i: n for n, i in enumerate(index.item_ids)}
    # window 1 (the model's): a->b once, b->c twice (u1, u2); d is at the snapshot, so c->d is not counted
    assert index.meta["transitions"]["pairs"] == 2 and index.meta["transitions"]["events"] == 5
    assert index.meta["transitions"]["weight"] == 0.5
    assert [(index.item_ids[j], p) for j, p in zip(*index.successors(row[a]))] == [(b, pytest.approx(1 / 2))]
    assert [(index.item_ids[j], p) for j, p in zip(*index.successors(row[b]))] == [(c, pytest.approx(2 / 3))]
    assert not len(index.successors(row[c])[0])
    assert "2 pairs (recounted over 5 events before 2026-01-01" in out
    # the model's own counts, as evaluated
    assert publish.run(load_config(ws, ["publish.transitions=model"]),
                       argparse.Namespace(model_version=res.model_version)) == 0
    assert "(the model's counts)" in capsys.readouterr().out
    assert "events" not in ItemIndex.load(publish.ann_dir(cfg)).meta["transitions"]
    from guim_features.errors import GuimError
    with pytest.raises(GuimError, match="publish.transitions='newest': expected recount or model"):
        publish.run(load_config(ws, ["publish.transitions=newest"]), argparse.Namespace(model_version=None))
