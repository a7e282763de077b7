"""guim recommend: one online lookup, one HNSW search per interest, merged by the score rule."""
from __future__ import annotations

import argparse
import math

import numpy as np
import pytest

from gold import ITEMS, T1, T2, USERS_V1, USERS_V2, write_events, write_gold


@pytest.fixture(scope="module")
def ws(tmp_path_factory):
    """Snapshots of models 1 and 2 (2 newest), popular items axis2 > mix01 > axis0, published."""
    from guim_features import publish
    from guim_features.config import load_config

    path = tmp_path_factory.mktemp("rec") / "ws"
    cfg = load_config(path)
    write_gold(cfg, USERS_V1, ITEMS, "1", T1)
    write_gold(cfg, USERS_V2, ITEMS, "2", T2)
    write_events(cfg, {"axis2": 5, "mix01": 3, "axis0": 1})
    publish.run(cfg, argparse.Namespace(model_version=None))
    return path


def _rec(ws, user, k, *overrides):
    from guim_features.config import load_config
    from guim_features.recommend import recommend

    return recommend(load_config(ws, list(overrides)), user, k)


def test_max_rule_by_hand(ws):
    # alice (model 2): interest 0 = 3*e3 (weight .1), interest 1 = e1 (weight .9)
    rec = _rec(ws, "alice", 4)
    assert not rec.fallback and rec.model_version == "2"
    assert [(i["item_id"], i["interest"]) for i in rec.items] == [
        ("axis3", 0), ("mix23", 0), ("axis1", 1), ("mix01", 1)]
    assert [i["score"] for i in rec.items] == pytest.approx([3.0, 1.5, 1.0, 0.6], abs=1e-5)
    assert [i["weight"] for i in rec.items] == pytest.approx([0.1, 0.1, 0.9, 0.9])


def test_lse_rule_by_hand(ws):
    # log(.1 exp(s0) + .9 exp(s1)) reorders: the heavy interest 1 lifts axis1 and mix01 above mix23
    rec = _rec(ws, "alice", 4, "publish.score=lse")
    expect = {"axis3": math.log(.1 * math.e ** 3 + .9), "axis1": math.log(.1 + .9 * math.e),
              "mix01": math.log(.1 + .9 * math.e ** .6), "mix23": math.log(.1 * math.e ** 1.5 + .9)}
    assert [i["item_id"] for i in rec.items] == ["axis3", "axis1", "mix01", "mix23"]
    assert [i["score"] for i in rec.items] == pytest.approx([expect[i["item_id"]] for i in rec.items], abs=1e-5)
    assert [i["interest"] for i in rec.items] == [0, 1, 1, 1]



def test_lse_rule_uses_the_model_temperature(ws):
    # tau log(sum_k w_k exp(s_k / tau)) with tau = 0.2, the temperature recorded with the index:
    # sharper than tau = 1, so mix23 (interest 0 at 1.5) now beats axis1 (heavy interest 1 at 1.0)
    from guim_features.ann import ItemIndex
    from guim_features.config import load_config
    from guim_features.publish import ann_dir
    from guim_features.recommend import Recommender

    cfg = load_config(ws, ["publish.score=lse"])
    index = ItemIndex.load(ann_dir(cfg))
    index.meta["temperature"] = 0.2
    rec = Recommender(cfg, index=index).recommend("alice", 4)
    lse = lambda s0, s1: 0.2 * math.log(.1 * math.exp(s0 / .2) + .9 * math.exp(s1 / .2))  # noqa: E731
    expect = {"axis3": lse(3, 0), "axis1": lse(0, 1), "mix01": lse(0, .6), "mix23": lse(1.5, 0)}
    assert [i["item_id"] for i in rec.items] == ["axis3", "mix23", "axis1", "mix01"]
    assert [i["score"] for i in rec.items] == pytest.approx([expect[i["item_id"]] for i in rec.items], abs=1e-5)


def test_unknown_user_gets_flagged_popular_items(ws):
    rec = _rec(ws, "nobody", 2)
    assert rec.fallback and rec.model_version is None
    assert [i["item_id"] for i in rec.items] == ["axis2", "mix01"]


def test_unknown_user_without_popularity_is_a_clear_error(tmp_path):
    from guim_features import publish
    from guim_features.config import load_config
    from guim_features.errors import GuimError

    cfg = load_config(tmp_path / "ws")
    write_gold(cfg, USERS_V1, ITEMS, "1", T1)
    publish.run(cfg, argparse.Namespace(model_version=None))
    with pytest.raises(GuimError, match="'nobody' is not in the online store"):
        _rec(tmp_path / "ws", "nobody", 3)


def test_version_mismatch_refused(ws):
    from guim_features.ann import ItemIndex
    from guim_features.config import load_config
    from guim_features.errors import GuimError
    from guim_features.recommend import Recommender

    stale = ItemIndex.build(list(ITEMS), np.array(list(ITEMS.values()), np.float32), "1", K=2)
    with pytest.raises(GuimError, match="model version 2 but the item index is of version 1"):
        Recommender(load_config(ws), index=stale).recommend("alice", 3)


def test_cli_prints_interest_weight_score(ws, capsys):
    from guim_features.cli import main

    assert main(["recommend", "bob", "-k", "2", "--workspace", str(ws)]) == 0
    out = capsys.readouterr().out.splitlines()
    # bob (model 2): interests e0, e2 with weights .5/.5 -> axis0 and axis2 score 1; ties keep index order
    assert "model version 2" in out[0]
    assert [line.split()[1] for line in out[2:]] == ["axis0", "axis2"]
    assert [line.split()[2:] for line in out[2:]] == [["1.0000", "0", "0.500"], ["1.0000", "1", "0.500"]]
    assert main(["recommend", "ghost", "-k", "1", "--workspace", str(ws)]) == 0
    assert "FALLBACK" in capsys.readouterr().out


def test_excluded_items_never_come_back_and_k_is_still_filled(ws):
    # alice (model 2, max rule): axis3 3.0, mix23 1.5, axis1 1.0, mix01 0.6, axis0 0, axis2 0.
    # Without axis3 and axis1 the next two move up; the two zeros tie and keep index order.
    rec = _rec_ex(ws, "alice", 4, ["axis3", "axis1"])
    assert [i["item_id"] for i in rec.items] == ["mix23", "mix01", "axis0", "axis2"]
    assert [i["score"] for i in rec.items] == pytest.approx([1.5, 0.6, 0.0, 0.0], abs=1e-5)
    # the popular fallback obeys it too: axis2 > mix01 > axis0 without axis2
    rec = _rec_ex(ws, "nobody", 2, ["axis2"])
    assert rec.fallback and [i["item_id"] for i in rec.items] == ["mix01", "axis0"]


def test_exclude_takes_a_list_not_one_id(ws):
    from guim_features.errors import GuimError

    with pytest.raises(GuimError, match="list of item ids"):
        _rec_ex(ws, "alice", 2, "axis3")


def test_cli_exclude_seen_reads_the_users_events(ws, capsys):
    import pyarrow as pa
    from deltalake import write_deltalake

    from guim_features.cli import main
    from guim_features.config import load_config
    from guim_features.recommend import seen_items

    cfg = load_config(ws)
    write_deltalake(cfg.table("events"), pa.table({   # bob bought axis0 (twice); popularity was fixed at publish
        "event_id": ["b1", "b2"], "user_id": ["bob", "bob"], "item_id": ["axis0", "axis0"],
        "behavior": ["buy", "buy"], "ts": pa.array([T1, T2], type=pa.timestamp("us", tz="UTC")),
        "source": ["test", "test"]}), mode="append")
    assert seen_items(cfg, "bob") == ["axis0"]
    assert seen_items(cfg, "nobody") == []
    # bob (model 2): interests e0, e2 -> axis0 1, axis2 1, mix01 .6, mix23 .5. His snapshot predates
    # seen_items (the gold rows have no such column), so the CLI says so and reads bronze instead
    assert main(["recommend", "bob", "-k", "2", "--exclude-seen", "--workspace", str(ws)]) == 0
    out = capsys.readouterr().out.splitlines()
    assert out[0].startswith("no seen_items online for user bob")
    assert [line.split()[1] for line in out[3:]] == ["axis2", "mix01"]
    assert main(["recommend", "bob", "-k", "2", "--exclude-seen", "--exclude", "mix01", "--workspace", str(ws)]) == 0
    assert [line.split()[1] for line in capsys.readouterr().out.splitlines()[3:]] == ["axis2", "mix23"]


def test_exclude_seen_reads_seen_items_in_the_same_lookup(tmp_path, capsys):
    from guim_features import publish
    from guim_features.cli import main
    from guim_features.config import load_config
    from guim_features.recommend import recommend

    cfg = load_config(tmp_path / "ws")
    # model 2's snapshots: alice has seen axis3 and axis1, bob nothing yet, carol's row predates the
    # column (null); bronze says alice bought mix23, which the online path must not read
    users = {**USERS_V2, "carol": USERS_V2["bob"]}
    write_gold(cfg, users, ITEMS, "2", T2, seen={"alice": ["axis3", "axis1"], "bob": []})
    write_events(cfg, {"axis2": 2, "mix01": 1})
    publish.run(cfg, argparse.Namespace(model_version=None))
    import pyarrow as pa
    from deltalake import write_deltalake

    write_deltalake(cfg.table("events"), pa.table({
        "event_id": ["a1"], "user_id": ["alice"], "item_id": ["mix23"], "behavior": ["buy"],
        "ts": pa.array([T2], type=pa.timestamp("us", tz="UTC")), "source": ["test"]}), mode="append")
    # alice (max rule): axis3 3.0, mix23 1.5, axis1 1.0, mix01 0.6, axis0 0, axis2 0
    rec = recommend(cfg, "alice", 4, exclude_seen=True)
    assert [i["item_id"] for i in rec.items] == ["mix23", "mix01", "axis0", "axis2"] and rec.seen_excluded == 2
    rec = recommend(cfg, "alice", 3, exclude=["mix23"], exclude_seen=True)
    assert [i["item_id"] for i in rec.items] == ["mix01", "axis0", "axis2"]
    rec = recommend(cfg, "bob", 2, exclude_seen=True)
    assert [i["item_id"] for i in rec.items] == ["axis0", "axis2"] and rec.seen_excluded == 0
    assert recommend(cfg, "carol", 2, exclude_seen=True).seen_excluded is None
    assert recommend(cfg, "alice", 2).seen_excluded is None                   # not asked
    capsys.readouterr()
    assert main(["recommend", "alice", "-k", "2", "--exclude-seen", "--workspace", str(tmp_path / "ws")]) == 0
    out = capsys.readouterr().out.splitlines()
    assert "2 seen items excluded" in out[0]
    assert [line.split()[1] for line in out[2:]] == ["mix23", "mix01"]


def test_exclude_seen_without_events_is_a_clear_error(tmp_path):
    from guim_features.config import load_config
    from guim_features.errors import GuimError
    from guim_features.recommend import seen_items

    with pytest.raises(GuimError, match="no bronze events table .*run `guim ingest`"):
        seen_items(load_config(tmp_path / "empty"), "bob")


def _rec_ex(ws, user, k, exclude):
    from guim_features.config import load_config
    from guim_features.recommend import recommend

    return recommend(load_config(ws), user, k, exclude)


class _CountingIndex:
    """An ItemIndex that records the depth of every search it answers."""

    def __init__(self, index):
        self.inner, self.depths = index, []

    def __getattr__(self, name):
        return getattr(self.inner, name)

    def search(self, queries, n):
        self.depths.append(n)
        return self.inner.search(queries, n)


def test_exclusions_near_the_interests_make_the_search_go_deeper(ws):
    # alice (model 2, max rule): interest 0 = 3*e3, interest 1 = e1. Item line_j has e3-component
    # 1 - j/100 and none along e1, so it scores 3 (1 - j/100) through interest 0 and 0 through
    # interest 1; a far item has no e3-component and -1 along e1 (scores 0 and -1): nearer to neither
    # interest than any line item. The e0/e2 components only keep the vectors apart for the HNSW graph. With line_0..line_59 excluded the top 3 are
    # line_60..line_62: each interest must look past 60 excluded items, not 3 + 3.
    from guim_features.ann import ItemIndex
    from guim_features.config import load_config
    from guim_features.recommend import Recommender

    line = {f"line_{j}": [math.cos(j), 0, math.sin(j), 1 - j / 100] for j in range(100)}
    far = {f"far_{j}": [math.cos(j), -1, math.sin(j), 0] for j in range(400)}
    items = {**line, **far}
    vecs = np.array(list(items.values()), np.float32)

    def exact_index(ef_search):
        # meta says ef_search (the first search's depth follows it); the graph is searched 500 wide,
        # so every search is exact here: this tests the depths, not HNSW's recall
        index = ItemIndex.build(list(items), vecs, "2", K=2, ef_search=ef_search)
        index.index.hnsw.efSearch = 500
        return _CountingIndex(index)

    index = exact_index(4)
    rec = Recommender(load_config(ws), index=index)
    out = rec.recommend("alice", 3, exclude=[f"line_{j}" for j in range(60)])
    assert [i["item_id"] for i in out.items] == ["line_60", "line_61", "line_62"]
    assert [i["score"] for i in out.items] == pytest.approx([1.2, 1.17, 1.14], abs=1e-5)
    assert index.depths == [6, 63]                                      # 3 + 3 first, then 3 + 60
    # 400 excluded items none of which is near: one search, 3 + 3 deep (not 403)
    index.depths.clear()
    out = rec.recommend("alice", 3, exclude=list(far))
    assert [i["item_id"] for i in out.items] == ["line_0", "line_1", "line_2"]
    assert index.depths == [6]
    # a first search shallower than efSearch costs what efSearch costs: it goes that deep (capped
    # at 3 + the 30 excluded), which here is deep enough
    index = exact_index(40)
    out = Recommender(load_config(ws), index=index).recommend("alice", 3, exclude=[f"line_{j}" for j in range(30)])
    assert [i["item_id"] for i in out.items] == ["line_30", "line_31", "line_32"]
    assert index.depths == [33]


def test_serving_bench_seen_items_nearest_first():
    # bench/serving.py's seen ids: with --seen-near 1 they are each interest's nearest items, rank
    # by rank (interest 0's first, interest 1's first, interest 0's second, ...), distinct
    import importlib.util
    from pathlib import Path

    import pyarrow as pa

    from guim_features.ann import ItemIndex
    from guim_features.views import nested_lists

    spec = importlib.util.spec_from_file_location("serving_bench", Path(__file__).parents[1] / "bench" / "serving.py")
    bench = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(bench)
    # along e0: i0 (1.0) > i1 (.9) > i2 (.8); along e1: i3 (1.0) > i4 (.9); i5 and i6 far from both
    vecs = np.array([[1, 0], [.9, .1], [.8, .2], [0, 1], [.1, .9], [-1, 0], [0, -1]], np.float32)
    index = ItemIndex.build([f"i{j}" for j in range(7)], vecs, "bench", K=2)
    users = pa.table({"user_id": ["u0"], "interests": nested_lists(np.array([[[1, 0], [0, 1]]], np.float32), 2, 2)})
    near = bench.with_seen(users, index, 3, 1.0)["seen_items"].to_pylist()[0]
    assert near == ["i0", "i3", "i1"]
    half = bench.with_seen(users, index, 4, 0.5)["seen_items"].to_pylist()[0]
    assert half[:2] == ["i0", "i3"] and len(set(half)) == 4
    assert sorted(bench.with_seen(users, index, 7, 0.0)["seen_items"].to_pylist()[0]) == [f"i{j}" for j in range(7)]


def with_prior(ws, tmp_path, weight: float = 0.5):
    """The published index of ``ws`` with a hand-written prior: after axis1 come axis0 (.6) and mix23 (.2),
    saved and loaded back as ``guim publish`` writes it."""
    from guim_features.ann import ItemIndex
    from guim_features.config import load_config
    from guim_features.publish import ann_dir

    index = ItemIndex.load(ann_dir(load_config(ws)))
    row = {i: r for r, i in enumerate(index.item_ids)}
    n = len(index.item_ids)
    indptr = np.zeros(n + 1, np.int64)
    indptr[row["axis1"] + 1:] = 2
    nxt = sorted([(row["axis0"], .6), (row["mix23"], .2)])
    index.transitions = {"indptr": indptr, "indices": np.array([r for r, _ in nxt]),
                         "values": np.array([p for _, p in nxt], np.float32)}
    index.meta["transitions"] = {"weight": weight, "window": 1, "decay": 0.5, "pairs": 2}
    return ItemIndex.load(index.save(tmp_path / "ann"))


def test_the_transition_prior_reranks_by_the_blend_computed_by_hand(ws, tmp_path):
    from guim_features.config import load_config
    from guim_features.recommend import Recommender, format_table

    index = with_prior(ws, tmp_path)
    assert [index.item_ids[r] for r in index.successors(int(np.flatnonzero(index.item_ids == "axis1")[0]))[0]] \
        == sorted(["axis0", "mix23"], key=lambda i: int(np.flatnonzero(index.item_ids == i)[0]))
    rec = Recommender(load_config(ws, ["publish.score=lse"]), index=index)
    # alice (model 2), tau 1: exp(score) = .1 exp(3 v_3) + .9 exp(v_1) per item; the softmax is over all six
    e = {"axis0": 1.0, "axis1": .1 + .9 * math.e, "axis2": 1.0, "axis3": .1 * math.e ** 3 + .9,
         "mix01": .1 + .9 * math.e ** .6, "mix23": .1 * math.e ** 1.5 + .9}
    prior = {"axis0": .6, "mix23": .2}
    blend = {i: math.log(.5 * v / sum(e.values()) + .5 * prior.get(i, 0.0)) for i, v in e.items()}
    out = rec.recommend("alice", 4, last_item="axis1")
    want = sorted(blend, key=lambda i: -blend[i])[:4]
    assert want[0] == "axis0" and [i["item_id"] for i in out.items] == want     # axis0, far from alice, leads
    assert [i["score"] for i in out.items] == pytest.approx([blend[i] for i in want], abs=1e-5)
    assert [i["prior"] for i in out.items] == pytest.approx([prior.get(i, 0.0) for i in want])
    assert out.last_item == "axis1" and out.transition_weight == 0.5
    assert "transition prior from axis1" in format_table(out)
    # without the prior, from an item with no successors, or under the max rule: the model's own ranking
    plain = [i["item_id"] for i in rec.recommend("alice", 4, prior=False).items]
    assert plain == ["axis3", "axis1", "mix01", "mix23"]
    after_axis2 = rec.recommend("alice", 4, last_item="axis2")     # applied, but axis2 leads nowhere
    assert [i["item_id"] for i in after_axis2.items] == plain and not any(i["prior"] for i in after_axis2.items)
    no_seen = rec.recommend("alice", 4)                  # no last item given and no seen_items published
    assert no_seen.last_item is None and [i["item_id"] for i in no_seen.items] == plain
    assert Recommender(load_config(ws, ["publish.score=max"]), index=index).prior_weight is None


def test_above_the_sample_size_the_normaliser_counts_the_candidates_and_estimates_the_rest(ws, tmp_path):
    """Past ``publish.normaliser_sample`` items the softmax's normaliser is the candidates' terms plus
    the other items' sum estimated from the sample, scaled to their number; at or below it, exact."""
    from guim_features.config import load_config
    from guim_features.errors import GuimError
    from guim_features.recommend import Recommender

    index = with_prior(ws, tmp_path)
    index.meta["ef_search"] = 1          # each interest's search stops at k: axis3 (interest 0), axis1 (1)
    e = {"axis0": 1.0, "axis1": .1 + .9 * math.e, "axis2": 1.0, "axis3": .1 * math.e ** 3 + .9,
         "mix01": .1 + .9 * math.e ** .6, "mix23": .1 * math.e ** 1.5 + .9}      # exp(score), as above

    def axis0_score(rec):                # axis0, the likeliest successor of axis1, leads the blend
        top = rec.recommend("alice", 1, last_item="axis1").items[0]
        assert top["item_id"] == "axis0"
        return top["score"]

    exact = math.log(.5 * e["axis0"] / sum(e.values()) + .5 * .6)
    assert axis0_score(Recommender(load_config(ws, ["publish.score=lse", "publish.normaliser_sample=6"]),
                                   index=index)) == pytest.approx(exact, abs=1e-5)
    rec = Recommender(load_config(ws, ["publish.score=lse", "publish.normaliser_sample=3"]), index=index)
    got = axis0_score(rec)
    # the candidates: axis3 and axis1 from the search, axis0 and mix23 the prior's successors of axis1;
    # axis2 and mix01 are the rest, estimated from those the sample of 3 rows holds (2 / held x their sum)
    held = [i for i in ("axis2", "mix01") if i in set(index.item_ids[rec.normaliser.sample[0]])]
    assert len(held) == 1 and got != pytest.approx(exact, abs=1e-3)    # this sample: one of the two, an estimate
    z = sum(e[i] for i in ("axis0", "axis1", "axis3", "mix23")) + 2 / len(held) * sum(e[i] for i in held)
    assert got == pytest.approx(math.log(.5 * e["axis0"] / z + .5 * .6), abs=1e-5)
    with pytest.raises(GuimError, match="normaliser_sample=-1"):
        Recommender(load_config(ws, ["publish.score=lse", "publish.normaliser_sample=-1"]), index=index)


def test_a_prior_that_follows_two_items_mixes_their_successors_from_the_newest(ws, tmp_path):
    from guim_features.config import load_config
    from guim_features.recommend import Recommender

    index = with_prior(ws, tmp_path)
    index.meta["transitions"]["follow"] = 2
    rec = Recommender(load_config(ws, ["publish.score=lse"]), index=index)
    assert (rec.follow, rec.decay) == (2, 0.5)
    row = {i: r for r, i in enumerate(index.item_ids)}
    # newest first: axis2 leads nowhere (share 1 / 1.5), axis1 leads to axis0 .6 and mix23 .2 (share .5 / 1.5)
    succ, p = rec._successors([row["axis2"], row["axis1"]])
    got = {index.item_ids[r]: float(x) for r, x in zip(succ, p)}
    assert got == pytest.approx({"axis0": .6 / 3, "mix23": .2 / 3})
    succ, p = rec._successors([row["axis1"]])                       # one item: its own row
    assert {index.item_ids[r]: float(x) for r, x in zip(succ, p)} == pytest.approx({"axis0": .6, "mix23": .2})
