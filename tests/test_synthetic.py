"""The synthetic generator's ground truth: the view distribution it samples from, stated in closed form."""
import numpy as np
import pandas as pd

from guim_features.ingest.synthetic import (EXPLORE, Catalogue, catalogue, draw_tastes, generate,
                                            view_probabilities)


def tiny_catalogue() -> Catalogue:
    # category 0: items 0, 1 with within-category popularity .25 / .75; category 1: items 2, 3 at .5 / .5
    items = pd.DataFrame({"item_id": ["i0", "i1", "i2", "i3"]})
    return Catalogue(items, cat_share=np.array([1.0, 1.0]), cat_price=np.ones(2),
                     cum=np.array([0.25, 1.0, 1.5, 2.0]))


def test_view_probabilities_by_hand():
    cat = tiny_catalogue()
    # one interest (category 0): 92 % in it, 8 % explored by category share (half each)
    p = view_probabilities(cat, np.array([1]), np.array([[0, 1, 0, 0]]), np.array([[1.0, 0, 0, 0]]), 0.0)
    in0, in1 = (1 - EXPLORE) + EXPLORE / 2, EXPLORE / 2
    np.testing.assert_allclose(p[0], [.25 * in0, .75 * in0, .5 * in1, .5 * in1])
    # two interests at .5 / .5, at the end of the span: the last one drifts to 2.5x its weight
    p = view_probabilities(cat, np.array([2]), np.array([[0, 1, 0, 0]]), np.array([[.5, .5, 0, 0]]), 1.0)
    s0, s1 = (1 - EXPLORE) * 2 / 7 + EXPLORE / 2, (1 - EXPLORE) * 5 / 7 + EXPLORE / 2
    np.testing.assert_allclose(p[0], [.25 * s0, .75 * s0, .5 * s1, .5 * s1])


def test_generated_views_follow_the_stated_distribution():
    seed, items, categories, days = 3, 60, 6, 30
    data = generate(users=4, items=items, events_per_user=20000, categories=categories, days=days, seed=seed)
    rng = np.random.default_rng(seed)
    cat = catalogue(rng, items, categories)                    # the generator's own draws, in its order
    n_int, interests, w = draw_tastes(rng, cat.cat_share, 4)
    planted = [[f"c{c}" for c in interests[u, :n_int[u]]] for u in range(4)]
    assert data.users["planted_interests"].tolist() == planted
    views = data.events[data.events["behavior"] == "pv"]
    grid = np.linspace(0, 1, 41)                                # views are uniform over the span
    for u in range(4):
        expected = np.mean([view_probabilities(cat, n_int[[u]], interests[[u]], w[[u]], t)[0] for t in grid], axis=0)
        got = views[views["user_id"] == f"u{u}"]["item_id"].str[1:].astype(int).value_counts(normalize=True)
        observed = np.zeros(items)
        observed[got.index.to_numpy()] = got.to_numpy()
        assert 0.5 * np.abs(observed - expected).sum() < 0.03   # total variation over ~17k views


def test_log_probability_is_a_category_term_plus_an_item_term():
    """What makes one vector enough on this data: for items of one category, the ratio of their
    probabilities is the same for every user and every time."""
    rng = np.random.default_rng(0)
    cat = catalogue(rng, 200, 8)
    n_int, interests, w = draw_tastes(rng, cat.cat_share, 50)
    logp = np.log(view_probabilities(cat, n_int, interests, w, rng.random(50)))        # (50, 200)
    np.testing.assert_allclose(np.exp(logp).sum(1), 1.0, rtol=1e-9)
    item_cat = np.floor(cat.cum - 1e-12).astype(int)
    for c in range(8):
        block = logp[:, item_cat == c]
        diffs = block - block[:, :1]                                  # log p(i) - log p(first of c)
        np.testing.assert_allclose(diffs, np.broadcast_to(diffs[:1], diffs.shape), atol=1e-9)
