"""A Taobao-like synthetic behaviour log with planted interests.

Users have 1–4 latent interests over item categories with Dirichlet weights; items carry a
category, brand, shop, a price drawn around their category's price level, a title of tokens,
a 32-d "image" vector (category centre plus noise) and tags. Behaviours are page views whose
interest is drawn from the user's weights, drifting over the span towards the last interest;
a view may lead to a fav or cart, and a cart to a buy (pv → fav/cart → buy funnel). User
attributes (age bucket, gender, purchase power) are correlated with the interests so that the
downstream profile tasks have signal. Fully vectorised with numpy; seeded.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd

IMAGE_DIM = 32
AGE_BUCKETS = np.array(["18-24", "25-34", "35-44", "45+"])
GENDERS = np.array(["F", "M"])
POWER = np.array(["low", "mid", "high"])


@dataclass
class SyntheticData:
    events: pd.DataFrame   # user_id, item_id, behavior, ts (datetime64[us])
    items: pd.DataFrame    # item_id, category, brand, shop, price, year, title, tags, image
    users: pd.DataFrame    # user_id, age_bucket, gender, occupation, purchase_power, planted_interests


def _zipf_weights(n: int, a: float, rng: np.random.Generator) -> np.ndarray:
    w = 1.0 / np.arange(1, n + 1) ** a
    return w[rng.permutation(n)]


@dataclass
class Catalogue:
    """The items and the category-level state that users and events are drawn against."""
    items: pd.DataFrame        # item_id, category, brand, shop, price, year, title, tags, image
    cat_share: np.ndarray      # (C,) category popularity weights (unnormalised)
    cat_price: np.ndarray      # (C,) price level per category
    cum: np.ndarray            # (items,) category c's items cover (c, c + 1] by within-category popularity


def generate(users: int = 2000, items: int = 1000, events_per_user: int = 60, categories: int = 20,
             days: int = 30, seed: int = 42, start_date: str = "2026-01-01") -> SyntheticData:
    """Generate the three bronze inputs; about ``users * events_per_user`` events in total."""
    if users < 1 or items < categories or categories < 2 or events_per_user < 1 or days < 1:
        raise ValueError("synthetic: need users >= 1, items >= categories >= 2, events_per_user >= 1, days >= 1")
    rng = np.random.default_rng(seed)
    cat = catalogue(rng, items, categories)
    events, users_df = population(rng, cat, users, events_per_user, days, start_date)
    return SyntheticData(events=events, items=cat.items, users=users_df)


def catalogue(rng: np.random.Generator, items: int, categories: int) -> Catalogue:
    """Items with content and within-category Zipf popularity (draws from ``rng`` first, before any user)."""
    C = categories
    # -- items ------------------------------------------------------------------------------
    cat_share = _zipf_weights(C, 0.6, rng)
    item_cat = np.sort(rng.choice(C, size=items, p=cat_share / cat_share.sum()))
    item_cat[:C] = np.arange(C)                      # every category has at least one item
    item_cat = np.sort(item_cat)
    cat_start = np.searchsorted(item_cat, np.arange(C))
    cat_price = np.exp(rng.uniform(1.5, 6.0, size=C))            # price level per category
    price = np.round(cat_price[item_cat] * np.exp(rng.normal(0, 0.35, size=items)), 2)
    brands_per_cat = 6
    brand = item_cat * brands_per_cat + rng.integers(0, brands_per_cat, size=items)
    shops_per_cat = max(1, items // (20 * C))                  # shops specialise in one category
    n_shops = shops_per_cat * C
    shop = np.where(rng.random(items) < 0.8, item_cat + C * rng.integers(0, shops_per_cat, size=items),
                    rng.integers(0, n_shops, size=items))
    centres = rng.normal(0, 1, size=(C, IMAGE_DIM))
    image = (centres[item_cat] + rng.normal(0, 0.6, size=(items, IMAGE_DIM))).astype(np.float32)
    words = rng.integers(0, 12, size=(items, 3))                 # category-specific title words
    generic = rng.integers(0, 40, size=items)
    title = [f"c{c}w{a} c{c}w{b} b{br} g{g} c{c}w{w3}" for c, (a, b, w3), br, g
             in zip(item_cat.tolist(), words.tolist(), brand.tolist(), generic.tolist())]
    n_tags = rng.integers(1, 4, size=items)
    tag_pool = rng.integers(0, 5, size=(items, 3))
    tags = [[f"t{c}_{t}" for t in dict.fromkeys(row[:n])] + (["sale"] if s else [])
            for c, row, n, s in zip(item_cat.tolist(), tag_pool.tolist(), n_tags.tolist(),
                                    (rng.random(items) < 0.1).tolist())]
    # popularity within category (Zipf), as a cumulative table over the sorted items
    pop = np.concatenate([_zipf_weights(int(n), 0.9, rng) for n in np.bincount(item_cat, minlength=C)])
    cum = np.zeros(items)
    for c in range(C):
        s, e = cat_start[c], (cat_start[c + 1] if c + 1 < C else items)
        cum[s:e] = c + np.cumsum(pop[s:e]) / pop[s:e].sum()
    item_ids = np.char.add("i", np.arange(items).astype(str))
    items_df = pd.DataFrame({
        "item_id": item_ids, "category": np.char.add("c", item_cat.astype(str)),
        "brand": np.char.add("b", brand.astype(str)), "shop": np.char.add("s", shop.astype(str)),
        "price": price, "year": pd.array([None] * items, dtype="Int32"), "title": title, "tags": tags,
        "image": list(image),
    })
    return Catalogue(items_df, cat_share, cat_price, cum)


EXPLORE = 0.08   # share of page views outside the user's interests, drawn by category popularity


def draw_tastes(rng: np.random.Generator, cat_share: np.ndarray, users: int):
    """Each user's planted interests: (n_int (U,) in 1..4, interests (U, 4) distinct categories,
    w (U, 4) Dirichlet weights, 0 beyond the user's n_int)."""
    C = len(cat_share)
    n_int = rng.choice([1, 2, 3, 4], size=users, p=[0.3, 0.3, 0.25, 0.15])
    keys = rng.random((users, C)) / cat_share[None, :] ** 0.5   # popular categories more likely
    interests = np.argsort(keys, axis=1)[:, :4]                 # (U, 4) distinct categories
    w = rng.dirichlet(np.ones(4) * 2.0, size=users)
    w[np.arange(4)[None, :] >= n_int[:, None]] = 0
    w /= w.sum(1, keepdims=True)                                # (U, 4)
    return n_int, interests, w


def interest_shares(w: np.ndarray, n_int: np.ndarray, at) -> np.ndarray:
    """(..., 4) probability that an in-interest view at time fraction ``at`` (0 = start of the span,
    1 = its end) goes to each planted interest: the weights, with the user's last interest
    drifting up to 2.5x its weight by the end of the span."""
    at = np.asarray(at, dtype=np.float64)
    drift = 1.0 + 1.5 * at[..., None] * (np.arange(4) == (np.asarray(n_int) - 1)[..., None])
    p = w * drift
    return p / p.sum(-1, keepdims=True)


def view_probabilities(catalog: Catalogue, n_int, interests, w, at) -> np.ndarray:
    """(U, items) the generating distribution of a user's page view at time fraction ``at`` (a
    scalar or (U,)): P(item) = ((1 - EXPLORE) share(c) + EXPLORE pop(c)) p(item | c), c the item's
    category. Every fav, cart and buy repeats a viewed item, so this also ranks the items a user's
    later events may hold: the Bayes-optimal ranking for the planted data. Its log is a category
    term plus an item term, log a_u[c(item)] + log p(item | c(item)): one (C + 1)-dimensional dot
    product represents it exactly, for any mixture of interests."""
    C, items = len(catalog.cat_share), len(catalog.items)
    item_cat = np.floor(catalog.cum - 1e-12).astype(np.int64).clip(0, C - 1)    # cum lies in (c, c + 1]
    first = np.r_[True, item_cat[1:] != item_cat[:-1]]
    within = catalog.cum - np.where(first, item_cat, np.r_[0.0, catalog.cum[:-1]])   # p(item | c)
    share = interest_shares(np.asarray(w, np.float64), n_int, at)            # (U, 4)
    per_cat = np.zeros((len(share), C))
    np.add.at(per_cat, (np.arange(len(share))[:, None], np.asarray(interests)), share)
    per_cat = (1 - EXPLORE) * per_cat + EXPLORE * (catalog.cat_share / catalog.cat_share.sum())[None]
    return per_cat[:, item_cat] * within[None]


def population(rng: np.random.Generator, catalog: Catalogue, users: int, events_per_user: int, days: int,
               start_date: str, first_user: int = 0) -> tuple[pd.DataFrame, pd.DataFrame]:
    """(events, users) of ``users`` users with ids ``u{first_user}``, ``u{first_user + 1}``, …; drawing a
    population in chunks with one generator per chunk keeps memory bounded at any size."""
    C, items = len(catalog.cat_share), len(catalog.items)
    cat_share, cat_price, cum = catalog.cat_share, catalog.cat_price, catalog.cum
    item_ids = catalog.items["item_id"].to_numpy()
    # -- users: 1-4 interests with weights, attributes correlated with them ---------------------
    n_int, interests, w = draw_tastes(rng, cat_share, users)
    top = interests[np.arange(users), w.argmax(1)]
    gender = np.where(rng.random(users) < np.where(top % 2 == 0, 0.8, 0.2), "F", "M")
    age = np.where(rng.random(users) < 0.7, top % 4, rng.integers(0, 4, size=users))
    level = (np.log(cat_price[interests]) * w).sum(1)
    power = np.clip(np.digitize(level + rng.normal(0, 0.4, size=users),
                                np.quantile(level, [1 / 3, 2 / 3])), 0, 2)
    user_ids = np.char.add("u", np.arange(first_user, first_user + users).astype(str))
    planted = [interests[u, :n_int[u]].tolist() for u in range(users)]

    # -- events: page views, then the funnel --------------------------------------------------
    n_pv = np.maximum(rng.poisson(events_per_user / 1.16, size=users), 3)  # funnel adds ~16%
    uid = np.repeat(np.arange(users), n_pv)
    E = len(uid)
    t = rng.random(E) * days                                    # day offset of each view
    p = interest_shares(w[uid], n_int[uid], t / days)
    k = (rng.random(E)[:, None] > np.cumsum(p, 1)).sum(1).clip(0, 3)
    cat = interests[uid, k]
    explore = rng.random(E) < EXPLORE                           # off-interest browsing
    cat = np.where(explore, rng.choice(C, size=E, p=cat_share / cat_share.sum()), cat)
    item = np.searchsorted(cum, cat + rng.random(E) * 0.999999).clip(0, items - 1)
    ts = t * 86400.0
    beh = np.zeros(E, dtype=np.int8)                            # 0 pv
    nxt = rng.random(E)
    fav, cart = nxt < 0.04, (nxt >= 0.04) & (nxt < 0.12)
    buy = cart & (rng.random(E) < 0.45)
    parts_u = [uid, uid[fav], uid[cart], uid[buy]]
    parts_i = [item, item[fav], item[cart], item[buy]]
    parts_t = [ts, ts[fav] + rng.uniform(5, 600, fav.sum()), ts[cart] + rng.uniform(5, 900, cart.sum()),
               ts[buy] + rng.uniform(900, 7200, buy.sum())]
    parts_b = [beh, np.full(fav.sum(), 1, np.int8), np.full(cart.sum(), 2, np.int8), np.full(buy.sum(), 3, np.int8)]
    uid, item = np.concatenate(parts_u), np.concatenate(parts_i)
    ts, beh = np.concatenate(parts_t), np.concatenate(parts_b)
    start = np.datetime64(start_date, "us")
    events = pd.DataFrame({
        "user_id": user_ids[uid],
        "item_id": item_ids[item],
        "behavior": np.array(["pv", "fav", "cart", "buy"])[beh],
        "ts": start + (ts * 1e6).astype("int64").astype("timedelta64[us]"),
    })
    users_df = pd.DataFrame({
        "user_id": user_ids, "age_bucket": AGE_BUCKETS[age], "gender": gender,
        "occupation": None, "purchase_power": POWER[power],
        "planted_interests": [[f"c{c}" for c in row] for row in planted],
    })
    return events, users_df
