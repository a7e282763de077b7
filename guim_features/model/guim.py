"""GUIM: general user-item embeddings with a mixture of K user interests (Yang et al. 2022, arXiv 2207.00750).

One fixed interface: ``encode_items`` (content -> (N, d)), ``encode_users`` (sequences ->
interests (B, K, d) and weights (B, K)), ``score`` (users x items -> (B, N)), ``loss`` (a training
batch -> scalar). The model is built from one plain dict of arguments (``model_args``), saved with
the weights, so loading never needs the caller to restate hyper-parameters.

- User encoder: Transformer over item (from the item tower, shared with the output side),
  behaviour, time-gap and position embeddings.
- Mixture of representation: K learned interest queries (each shifted by the position's own
  state) attend over the encoded sequence; interest k = LayerNorm(W_o attn_k), + h_t for the first
  ``state_interests`` of them (all K with ``interest_residual``: the K interests then collapse onto
  h_t); the K weights are a softmax of a learned gate over the interests.
- Score (``score``): ``lse`` = tau log sum_k w_k exp(cos(u_k, v) / tau), a w-weighted mixture of the
  K interests' softmax kernels at the training temperature; ``max`` = max_k cos(u_k, v). Training
  uses the same score (``train_score=exact``) or, with ``route``, only the interest nearest the
  target (ComiRec, Cen et al. 2020; K = 1 cost, but .09 Recall@20 worse on ML-100K).
- Objectives: next-item prediction at every position plus BERT-style masked-item prediction
  (80 % [MASK], 10 % random item, 10 % unchanged), weights ``next_weight`` / ``mlm_weight``.
- Regularisers of the mixture: ``routing_weight`` (REMI's routing regulariser, on by default: with it
  K = 4 beats K = 1 on multi-interest retrieval) and ``diversity_weight`` (ComiRec-SA's
  ||A A^T - I||^2 over the K attention maps, off) and ``separation_weight`` (the mean squared cosine
  between the interests that do not carry the state, off); ``hard_negative_beta`` reweights the InfoNCE
  negatives towards the hard ones (REMI, off).
- Contrastive regulariser (``cl_weight``, off by default; DuoRec, Qiu et al. 2022): the sequence
  states of a second forward pass with fresh dropout are contrasted with the first pass's, at every
  target position of the batch: a state's positives are its own dropout view and the states whose
  next item is the same (supervised), its negatives every other state of the batch. It spreads the
  states apart (against representation degeneration) and pulls same-target histories together.
  ``cl_positive=same_target`` replaces the second view by DuoRec's supervised one: another
  training history that led to the same item, drawn from the whole training set
  (:class:`SameTargetBank`) and encoded in the step.
- Loss: InfoNCE. Candidates are the whole catalogue when it is small (``negatives=all``/``auto``)
  or the batch's targets plus ``num_negatives`` shared sampled negatives, each negative corrected
  by its inclusion probability (``inclusion_log_prob``), so the cost does not grow with the
  vocabulary. Options, off by default (level on Amazon Sports): ``exclude_seen`` drops a state's own
  earlier items from its negatives (as evaluation drops them from the ranking); ``input_noise``
  reads input events as random items (stochastic shared embeddings, Wu et al. 2019).
- Attribute prediction (``attribute_weight``, off): each state also predicts the next item's attribute
  set (its tags: brand, category levels) through a softmax over the attribute vocabulary; the real
  attributes as coarse intents (S3-Rec's attribute ids; ICLRec/ICSRec learn intents by clustering).
- Profile head (``profile_steps`` > 0, :mod:`.profile`): a set model over the user's whole history,
  trained after the sequence model, whose output is the fixed-length ``Embedder.user_vector``.

NOTE (departs from the paper): the same Transformer runs with *causal* attention for the
next-item objective and for user embeddings (so every position is a training target without
leaking the future, as in SASRec) and with *bidirectional* attention for masked-item prediction.
Positions are counted back from the newest event (``positions=right``, SASRec's convention), so a
training state at an earlier position carries a position id the newest event never has at
inference; ``positions=left`` counts from the window's first event instead, which makes a training
state exactly the state its prefix gets at inference (measured level on Amazon Sports).
"""
from __future__ import annotations

import math

import torch
import torch.nn as nn
import torch.nn.functional as F

from ..errors import GuimError
from ..schemas import FIRST_ITEM_INDEX, MASK
from .profile import ProfileHead
from .towers import ITEM_FIELDS, ItemTower

# Hyper-parameters read from TrainConfig; sizes come from the data (see data.ItemBank.sizes()).
HYPER = ("d", "K", "layers", "heads", "dropout", "interest_dropout", "max_len", "positions", "id_buckets", "id_dropout",
         "item_graph", "graph_neighbours",
         "interest_residual", "state_interests", "diversity_weight", "separation_weight", "routing_weight", "hard_negative_beta", "cl_weight", "cl_temperature",
         "cl_positive", "attribute_weight", "score", "train_score", "normalize", "temperature", "learn_temperature", "next_weight",
         "mlm_weight", "mask_prob", "exclude_seen", "input_noise", "negatives", "full_catalogue_max", "num_negatives", "sampler", "item_fields",
         "profile_steps", "profile_keep")
SIZES = ("n_items", "cat_sizes", "n_num", "title_buckets", "tag_size", "title_len", "tags_len", "image_dim",
         "n_behaviors", "gap_buckets")
CHOICES = {"cl_positive": ("dropout", "same_target"), "positions": ("right", "left"), "score": ("max", "lse"),
           "train_score": ("route", "exact"), "negatives": ("auto", "all", "sampled"), "sampler": ("uniform", "popularity")}


def model_args(train_cfg, sizes: dict) -> dict:
    """The model's arguments: TrainConfig's model fields + the data's sizes. Validates them."""
    a = {k: getattr(train_cfg, k) for k in HYPER}
    a.update({k: sizes[k] for k in SIZES})
    return check_args(a)


def check_args(a: dict) -> dict:
    if "item_fields" not in a:   # saved before the tower's fields were selectable: it read them all
        a["item_fields"] = list(ITEM_FIELDS)
    a.setdefault("routing_weight", 0.0)      # saved before these options: both off
    a.setdefault("hard_negative_beta", 0.0)
    a.setdefault("item_graph", 0.0)          # saved before it: no item graph in the tower
    a.setdefault("graph_neighbours", 16)
    a.setdefault("separation_weight", 0.0)   # saved before it: the free interests were not pushed apart
    a.setdefault("cl_weight", 0.0)
    a.setdefault("attribute_weight", 0.0)    # saved before it: no attribute head
    a.setdefault("cl_temperature", 0.2)
    a.setdefault("cl_positive", "dropout")
    a.setdefault("positions", "right")       # saved before positions were selectable
    a.setdefault("interest_dropout", -1.0)   # saved before it was separate: the interests took `dropout`
    a.setdefault("state_interests", 0)       # saved before it: no interest carried the state on its own
    a.setdefault("exclude_seen", False)      # saved before it: earlier items were negatives like any other
    a.setdefault("input_noise", 0.0)         # saved before it: inputs read as they are
    a.setdefault("profile_steps", 0)         # saved before it: no profile head (user_vector = the fold-in)
    a.setdefault("profile_keep", 0.5)
    unknown = sorted(set(a) - set(HYPER) - set(SIZES))
    missing = sorted((set(HYPER) | set(SIZES)) - set(a))
    if unknown or missing:
        raise GuimError(f"GUIM arguments: unknown {unknown}, missing {missing}")
    for k, allowed in CHOICES.items():
        if a[k] not in allowed:
            raise GuimError(f"train.{k}={a[k]!r} is not one of {', '.join(allowed)}")
    for k in ("diversity_weight", "separation_weight", "routing_weight", "hard_negative_beta", "cl_weight",
              "attribute_weight"):
        if a[k] < 0:
            raise GuimError(f"train.{k}={a[k]}: expected 0 (off) or a positive number")
    if not (a["interest_dropout"] == -1 or 0 <= a["interest_dropout"] < 1):
        raise GuimError(f"train.interest_dropout={a['interest_dropout']}: expected -1 (= train.dropout) or 0 <= p < 1")
    if a["item_graph"] < 0 or a["graph_neighbours"] < 1:
        raise GuimError(f"train.item_graph={a['item_graph']}, train.graph_neighbours={a['graph_neighbours']}: "
                        f"expected a weight >= 0 (0 = off) and at least 1 neighbour")
    if not 0 <= a["input_noise"] < 1:
        raise GuimError(f"train.input_noise={a['input_noise']}: expected 0 <= p < 1")
    if a["profile_steps"] < 0 or not 0 < a["profile_keep"] <= 1:
        raise GuimError(f"train.profile_steps={a['profile_steps']}, train.profile_keep={a['profile_keep']}: "
                        f"expected steps >= 0 (0 = no profile head) and 0 < keep <= 1")
    if not 0 <= a["state_interests"] <= a["K"]:
        raise GuimError(f"train.state_interests={a['state_interests']}: expected 0 to train.K ({a['K']})")
    if a["cl_temperature"] <= 0:
        raise GuimError(f"train.cl_temperature={a['cl_temperature']}: expected a positive number")
    if a["cl_weight"] > 0 and a["next_weight"] <= 0:
        raise GuimError("train.cl_weight > 0 contrasts the states of next-item prediction: it needs "
                        "train.next_weight > 0")
    if a["K"] < 1 or a["d"] % a["heads"]:
        raise GuimError(f"train.K must be >= 1 and train.d ({a['d']}) divisible by train.heads ({a['heads']})")
    if a["n_items"] <= FIRST_ITEM_INDEX:
        raise GuimError("the item index is empty: run `guim sequences` first")
    return a


def inclusion_log_prob(p_target: torch.Tensor, q: torch.Tensor, n_targets: int, n_sampled: int) -> torch.Tensor:
    """log pi_j: the probability that item j is among a row's candidates (sampled InfoNCE).

    A row's candidates are the de-duplicated union of the batch's other ``n_targets`` targets
    (drawn, approximately independently, from the training target distribution p) and
    ``n_sampled`` shared negatives drawn with replacement from the sampler q. So

        pi_j = 1 - (1 - p_j)^n_targets (1 - q_j)^n_sampled        (always <= 1)

    Dividing each negative's exp(logit) by pi_j (subtracting log pi_j from its logit) makes the
    sum over the sampled set an unbiased (Horvitz-Thompson) estimate of the full partition
    function sum_j exp(logit_j); the row's positive is always present (pi = 1) and keeps its
    logit. Each candidate counts once because the union is de-duplicated, so accidental hits of
    the positive among the negatives cannot double it. The expected count n_t p_j + n_s q_j used
    before exceeds 1 for popular items and over-corrects them."""
    log_miss = n_targets * torch.log1p(-p_target.clamp_max(1 - 1e-7)) + n_sampled * torch.log1p(-q.clamp_max(1 - 1e-7))
    return torch.log((-torch.expm1(log_miss)).clamp_min(1e-30))


def corrected_logits(logits: torch.Tensor, log_pi: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """Sampled-softmax logits (P, N) with each negative's log inclusion probability log_pi (N,)
    subtracted and each row's positive (column labels[p]) left as it is (see inclusion_log_prob)."""
    rows = torch.arange(len(labels), device=labels.device)
    out = logits - log_pi[None]
    out[rows, labels] = logits[rows, labels]
    return out


def seen_mask(seen: torch.Tensor, ids: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """(P, N) True where candidate n (item index ids[n], ids sorted) is among row p's already-seen
    items seen[p] (P, S; 0 = no item), except at the row's own positive, column labels[p].

    Evaluation ranks the catalogue without the user's earlier items, so a training state that
    scores its own history high costs nothing there; kept as negatives, they push the state away
    from the items it has just read (and from their neighbours)."""
    P, N = len(labels), len(ids)
    col = torch.searchsorted(ids, seen).clamp_max(N - 1)                     # (P, S)
    hit = (ids[col] == seen) & (seen >= FIRST_ITEM_INDEX)
    rows = torch.arange(P, device=labels.device)
    mask = torch.zeros(P, N, dtype=torch.bool, device=labels.device)
    mask[rows[:, None].expand_as(col)[hit], col[hit]] = True
    mask[rows, labels] = False
    return mask


def hard_negative_logits(logits: torch.Tensor, labels: torch.Tensor, beta: float) -> torch.Tensor:
    """Interest-aware hard negatives (REMI, Xie et al. 2023) as a change of logits (P, N).

    Each row's negatives (every column but labels[p]) get log((N - 1) softmax_j(beta s_j)) added, so
    the cross-entropy of the result is -s_+ + log(exp(s_+) + sum_j exp((beta + 1) s_j) / mean_j exp(beta s_j)):
    the partition over negatives as if they had been drawn in proportion to exp(beta s_j), the
    ideal hard-negative distribution, estimated from the candidates at hand. beta = 0 leaves the
    logits unchanged."""
    P, N = logits.shape
    if N < 2:
        return logits
    pos = torch.zeros_like(logits, dtype=torch.bool)
    pos[torch.arange(P, device=logits.device), labels] = True
    bs = (beta * logits).masked_fill(pos, float("-inf"))
    log_w = math.log(N - 1) + bs - torch.logsumexp(bs, -1, keepdim=True)
    return torch.where(pos, logits, logits + log_w)


CL_ROWS = 1024   # states contrasted per step at most (the loss is quadratic in them)


def contrastive_loss(z1: torch.Tensor, z2: torch.Tensor, labels: torch.Tensor, tau: float) -> torch.Tensor:
    """Contrastive loss of P sequence states seen under two dropout masks (DuoRec, Qiu et al. 2022).

    z1, z2 (P, d): the same positions, two views; labels (P,): each position's next item. State i of
    one view scores every state of the other by cosine / tau; its positives are its own other view
    and every state with the same next item (supervised positives), the rest are negatives. The
    loss is -log of the positives' share of the softmax, averaged over the rows of both views."""
    z1, z2 = F.normalize(z1.float(), dim=-1), F.normalize(z2.float(), dim=-1)
    logits = z1 @ z2.T / tau                                                  # (P, P)
    positive = labels[:, None] == labels[None, :]                             # (P, P), diagonal included

    def side(lg):
        return (torch.logsumexp(lg, -1) - torch.logsumexp(lg.masked_fill(~positive, float("-inf")), -1)).mean()

    return 0.5 * (side(logits) + side(logits.T))


BANK_SLOTS = 4   # same-target histories kept per item (cl_positive=same_target)


class SameTargetBank:
    """The latest ``BANK_SLOTS`` training histories that led to each item (overwritten oldest
    first), right-aligned to ``max_len``: where DuoRec's supervised positives are drawn from, with
    the whole training set as the pool rather than the batch (in a batch of 128 windows two
    states rarely share a next item among thousands). Filled as training goes, so it costs no
    pass over the data; not saved with the weights. Memory: n_items x BANK_SLOTS x max_len x 8
    bytes on the training device (18k items, max_len 50: 29 MB)."""

    def __init__(self, n_items: int, max_len: int, device):
        shape = (n_items, BANK_SLOTS, max_len)
        self.items = torch.zeros(shape, dtype=torch.int32, device=device)
        self.behavior = torch.zeros(shape, dtype=torch.int16, device=device)
        self.gaps = torch.zeros(shape, dtype=torch.int16, device=device)
        self.count = torch.zeros(n_items, dtype=torch.long, device=device)

    def sample(self, y: torch.Tensor):
        """One stored history per target in y (P,), uniformly among those stored: ((items,
        behavior, gaps) each (P, max_len), found (P,) bool: False where y has none yet)."""
        n = self.count[y].clamp(max=BANK_SLOTS)
        slot = (torch.rand(len(y), device=y.device) * n).long().clamp(max=BANK_SLOTS - 1)
        return (self.items[y, slot], self.behavior[y, slot], self.gaps[y, slot]), n > 0

    def add(self, y: torch.Tensor, items, behavior, gaps) -> None:
        """Store the histories (P, max_len) that led to targets y (P,)."""
        slot = self.count[y] % BANK_SLOTS
        self.items[y, slot] = items.to(torch.int32)
        self.behavior[y, slot] = behavior.to(torch.int16)
        self.gaps[y, slot] = gaps.clamp(max=torch.iinfo(torch.int16).max).to(torch.int16)
        self.count.index_add_(0, y, torch.ones_like(y))


def attribute_loss(logits: torch.Tensor, tags: torch.Tensor) -> torch.Tensor:
    """Cross-entropy of a softmax over the attribute vocabulary against each row's attribute set,
    every attribute of the set weighted equally (Mult-DAE's multinomial likelihood): logits (P, A),
    tags (P, G) attribute ids (0 pad, 1 out of vocabulary: neither counts). Rows without an
    attribute count 0 and do not dilute the mean."""
    target = torch.zeros_like(logits, dtype=torch.float32).scatter_(1, tags, 1.0)[:, 2:]   # (P, A - 2)
    n = target.sum(1)                                                               # (P,)
    has = n > 0
    if not has.any():
        return logits.sum() * 0.0
    logp = logits.float()[:, 2:].log_softmax(-1)                                    # (P, A - 2)
    return -((target[has] * logp[has]).sum(1) / n[has]).mean()


def routing_penalty(att: torch.Tensor, allowed: torch.Tensor) -> torch.Tensor:
    """REMI's routing regulariser: sum_k Var_l(a_kl)^2 of each interest's attention a_k over the
    events l it may read. att (..., K, L), allowed (..., L) broadcastable to it -> (...). Large when an interest puts
    its weight on one event (routing collapse), 0 when it spreads evenly."""
    m = allowed[..., None, :].to(att.dtype)                                  # (..., 1, L)
    n = m.sum(-1, keepdim=True).clamp_min(1.0)
    mean = (att * m).sum(-1, keepdim=True) / n
    var = (((att - mean) * m) ** 2).sum(-1) / n.squeeze(-1)                 # (..., K)
    return (var ** 2).sum(-1)


def separation_penalty(u: torch.Tensor) -> torch.Tensor:
    """Mean squared cosine over the pairs of J vectors u (..., J, d) -> (...): 0 when they are
    orthogonal, 1 when they point the same way. Applied to the interests that do not carry the
    state, it keeps them from reading out the same thing (their cosine, not their attention maps:
    two maps on different events can still give the same vector)."""
    J = u.shape[-2]
    if J < 2:
        return u.new_zeros(u.shape[:-2])
    v = F.normalize(u.float(), dim=-1)
    cos2 = (v @ v.transpose(-1, -2)).pow(2).sum((-1, -2)) - J                 # the diagonal's J ones out
    return cos2 / (J * (J - 1))


def attention_bias(valid: torch.Tensor, causal: bool, dtype=torch.float32) -> torch.Tensor:
    """(B, L) mask of real positions -> (B, 1, L, L) additive attention bias: 0 where a query may
    see a key (a real one; with ``causal``, not a later one), else -inf. Every position also sees
    itself, so a padding query has a finite (unused) output and never turns into NaN."""
    L = valid.shape[1]
    keys = valid[:, None, :]                                                    # (B, 1, L)
    if causal:
        keys = keys & torch.tril(torch.ones(L, L, dtype=torch.bool, device=valid.device))[None]
    allowed = (keys | torch.eye(L, dtype=torch.bool, device=valid.device)[None])[:, None]  # (B, 1, L, L)
    return torch.zeros(allowed.shape, dtype=dtype, device=valid.device).masked_fill(~allowed, float("-inf"))


class Block(nn.Module):
    """Pre-LN Transformer block; ``bias`` (B, 1, L, L) is 0 where a query may see a key, else -inf."""

    def __init__(self, d: int, heads: int, p: float):
        super().__init__()
        self.heads, self.p = heads, p
        self.ln1, self.ln2 = nn.LayerNorm(d), nn.LayerNorm(d)
        self.qkv, self.proj = nn.Linear(d, 3 * d), nn.Linear(d, d)
        self.ff = nn.Sequential(nn.Linear(d, 4 * d), nn.GELU(), nn.Linear(4 * d, d))
        self.drop = nn.Dropout(p)

    def forward(self, x: torch.Tensor, bias: torch.Tensor) -> torch.Tensor:
        B, L, d = x.shape
        q, k, v = self.qkv(self.ln1(x)).view(B, L, 3, self.heads, d // self.heads).permute(2, 0, 3, 1, 4)
        a = F.scaled_dot_product_attention(q, k, v, attn_mask=bias,
                                           dropout_p=self.p if self.training else 0.0)  # (B, H, L, d/H)
        x = x + self.drop(self.proj(a.transpose(1, 2).reshape(B, L, d)))
        return x + self.drop(self.ff(self.ln2(x)))


class InterestMixture(nn.Module):
    """K interest queries attend over the encoded sequence -> K vectors and K softmax weights."""

    def __init__(self, d: int, K: int, p: float, n_state: int):
        super().__init__()
        # 1 for the first n_state interests, which add the query row's own state before the norm
        self.register_buffer("state_mask", (torch.arange(K) < n_state).float()[:, None], persistent=False)
        self.n_state = n_state
        self.queries = nn.Parameter(torch.randn(K, d))     # (K, d); unit scale so the K maps start apart
        self.q, self.k, self.v, self.o = (nn.Linear(d, d) for _ in range(4))
        self.gate = nn.Linear(d, 1)
        self.norm, self.drop = nn.LayerNorm(d), nn.Dropout(p)

    def forward(self, h: torch.Tensor, allowed: torch.Tensor, rows: torch.Tensor | None = None,
                penalty: bool = False, routing: bool = False, separation: bool = False):
        """h (B, L, d); allowed (B, T, L) keys visible to each query row; rows: positions used as
        queries (None = all L). Returns interests (B, T, K, d), weights (B, T, K) and a dict of
        regularisers (B, T): with ``penalty`` "overlap", ||A A^T - I||_F^2 of the K attention maps
        (0 when they are one-hot on different events); with ``routing`` "routing" (routing_penalty);
        with ``separation`` "separation" (separation_penalty of the free interests)."""
        hq = h if rows is None else h[:, rows]                                 # (B, T, d)
        B, T, d = hq.shape
        K = self.queries.shape[0]
        q = (self.queries[None, None] + self.q(hq)[:, :, None]).view(B, T * K, d)   # (B, T*K, d)
        att = torch.bmm(q, self.k(h).transpose(1, 2)) / math.sqrt(d)         # (B, T*K, L)
        bias = torch.zeros(allowed.shape, dtype=att.dtype, device=att.device).masked_fill(~allowed, float("-inf"))
        att = (att.view(B, T, K, -1) + bias[:, :, None]).softmax(-1)           # (B, T, K, L)
        reg = {}
        if penalty:
            gram = att @ att.transpose(-1, -2)                                  # (B, T, K, K)
            reg["overlap"] = ((gram - torch.eye(K, device=h.device)) ** 2).sum((-1, -2))   # (B, T)
        if routing:
            reg["routing"] = routing_penalty(att, allowed)                   # (B, T)
        o = torch.bmm(att.view(B, T * K, -1), self.v(h)).view(B, T, K, d)      # (B, T, K, d)
        interests = self.drop(self.o(o))                                       # (B, T, K, d)
        if self.n_state:
            interests = interests + hq[:, :, None] * self.state_mask                # (B, T, K, d)
        interests = self.norm(interests)
        if separation:
            reg["separation"] = separation_penalty(interests[:, :, self.n_state:])   # (B, T)
        weights = self.gate(interests).squeeze(-1).softmax(-1)                  # (B, T, K)
        return interests, weights, reg


class GUIM(nn.Module):
    def __init__(self, args: dict):
        super().__init__()
        self.args = a = check_args(dict(args))
        d, L = a["d"], a["max_len"]
        self.tower = ItemTower(a)
        self.beh_emb = nn.Embedding(a["n_behaviors"] + 1, d, padding_idx=0)
        self.gap_emb = nn.Embedding(a["gap_buckets"] + 1, d)
        self.pos_emb = nn.Embedding(L, d)
        self.in_norm, self.drop = nn.LayerNorm(d), nn.Dropout(a["dropout"])
        self.blocks = nn.ModuleList(Block(d, a["heads"], a["dropout"]) for _ in range(a["layers"]))
        self.out_norm = nn.LayerNorm(d)
        p_int = a["dropout"] if a["interest_dropout"] < 0 else a["interest_dropout"]
        self.mixture = InterestMixture(d, a["K"], p_int, a["K"] if a["interest_residual"] else a["state_interests"])
        self.log_tau = nn.Parameter(torch.tensor(math.log(a["temperature"])),
                                    requires_grad=bool(a["learn_temperature"]))
        self.register_buffer("item_pop", torch.ones(a["n_items"]))              # (V,) train target counts
        self._pop_cdf = None                                                    # sampler cache (set_popularity)
        self._bank = None                                                       # SameTargetBank (cl_positive)
        # the next item's attributes (tags) from each state: a training-only head (attribute_weight > 0),
        # drawn from a forked RNG so the rest of the model starts from the same weights with or without it
        self.attr_head = None
        if a["attribute_weight"] > 0:
            with torch.random.fork_rng(devices=[]):
                self.attr_head = nn.Linear(d, a["tag_size"])
        for m in (self.beh_emb, self.gap_emb, self.pos_emb):
            nn.init.normal_(m.weight, std=0.02)
        # the whole-history user vector, trained after the sequence model (train.profile_steps; None: the
        # fold-in). Initialised from a forked RNG, so the sequence model's initial weights are the same with it
        self.profile = None
        if a["profile_steps"] > 0:
            with torch.random.fork_rng(devices=[]):
                self.profile = ProfileHead(a["n_items"], d)

    # -- the interface --------------------------------------------------------------------
    def encode_items(self, features: dict) -> torch.Tensor:
        """Content dict (item_idx + towers.BANK_KEYS, first dim N) -> item vectors (N, d)."""
        return self.tower(features)

    def catalogue(self) -> torch.Tensor:
        """Vectors of every real item of the training catalogue, item_idx 3.. -> (V - 3, d)."""
        idx = torch.arange(FIRST_ITEM_INDEX, self.args["n_items"], device=self.item_pop.device)
        return self.tower.embed_idx(idx)

    def encode_users(self, item_idx: torch.Tensor, behavior: torch.Tensor, gaps: torch.Tensor):
        """Left-padded (B, L) sequences (the last event at position L-1) -> interests (B, K, d), weights (B, K)."""
        h, valid = self.encode(item_idx, behavior, gaps, causal=True)       # (B, L, d)
        allowed = valid[:, None, :].clone()                                  # (B, 1, L)
        allowed[:, :, -1] = True                                             # empty sequence: itself
        interests, weights, _ = self.mixture(h, allowed, rows=torch.tensor([h.shape[1] - 1], device=h.device))
        return interests[:, 0], weights[:, 0]

    def score(self, interests: torch.Tensor, weights: torch.Tensor, items: torch.Tensor) -> torch.Tensor:
        """(..., K, d) interests, (..., K) weights, (N, d) items -> (..., N) scores."""
        if self.args["normalize"]:
            interests, items = F.normalize(interests, dim=-1), F.normalize(items, dim=-1)
        s = torch.einsum("...kd,nd->...kn", interests, items)                 # (..., K, N)
        if s.shape[-2] == 1:
            return s[..., 0, :]
        if self.args["score"] == "max":
            return s.max(-2).values
        # tau * log sum_k w_k exp(s_k / tau): divided by tau in the loss, this is the log of a
        # w-weighted mixture of the K interests' softmax kernels at the training temperature
        tau = self.log_tau.exp()
        return tau * torch.logsumexp(s / tau + torch.log(weights.clamp_min(1e-9))[..., None], dim=-2)

    def loss(self, batch: dict) -> tuple[torch.Tensor, dict]:
        """Batch of left-padded windows: items/behavior/gaps (B, L+1). Returns (loss, parts)."""
        a, items = self.args, batch["items"]
        parts, total = {}, 0.0
        inp, tgt = items[:, :-1], items[:, 1:]                                  # (B, L), (B, L)
        cache: dict = {}
        if self._full_catalogue():   # embed the catalogue once; inputs and candidates index into it
            cache["table"] = self.tower.embed_idx(torch.arange(a["n_items"], device=items.device))  # (V, d)
            cache["all"] = cache["table"][FIRST_ITEM_INDEX:]
        if a["next_weight"] > 0:
            beh, gaps = batch["behavior"][:, :-1], batch["gaps"][:, :-1]
            x = inp
            if self.training and a["input_noise"] > 0:   # SSE: some inputs read as a random item
                swap = (torch.rand(inp.shape, device=inp.device) < a["input_noise"]) & (inp >= FIRST_ITEM_INDEX)
                x = torch.where(swap, torch.randint_like(inp, FIRST_ITEM_INDEX, a["n_items"]), inp)
            h, valid = self.encode(x, beh, gaps, causal=True, table=cache.get("table"))
            L = inp.shape[1]
            causal = torch.tril(torch.ones(L, L, dtype=torch.bool, device=h.device))
            allowed = (valid[:, None, :] & causal[None]) | torch.eye(L, dtype=torch.bool, device=h.device)
            regs = {"overlap": a["diversity_weight"], "routing": a["routing_weight"],
                    "separation": a["separation_weight"]} if a["K"] > 1 else {}
            regs = {k: w for k, w in regs.items() if w > 0}
            interests, weights, reg = self.mixture(h, allowed, penalty="overlap" in regs, routing="routing" in regs,
                                                   separation="separation" in regs)   # (B, L, K, d), (B, L, K)
            pos = valid & (tgt > 0)                                             # (B, L)
            seen = None
            if a["exclude_seen"]:   # row (b, t) has seen inp[b, :t+1]: (B, L, L) -> (P, L), 0 = nothing
                seen = (inp[:, None, :] * causal[None])[pos]
            parts["next"] = self._infonce(interests[pos], weights[pos], tgt[pos], cache, seen=seen)
            total = total + a["next_weight"] * parts["next"]
            for k, w in regs.items():
                parts[k] = reg[k][pos].mean()
                total = total + w * parts[k]
            if self.attr_head is not None:
                parts["attr"] = attribute_loss(self.attr_head(h[pos]), self.tower.tags[tgt[pos]])
                total = total + a["attribute_weight"] * parts["attr"]
            if a["cl_weight"] > 0:
                rows = pos.flatten().nonzero().squeeze(1)                       # (P,)
                if len(rows) > CL_ROWS:
                    rows = rows[torch.randperm(len(rows), device=rows.device)[:CL_ROWS]]
                d, y = h.shape[-1], tgt.flatten()[rows]
                if a["cl_positive"] == "same_target":
                    z2 = self._same_target_states(rows, y, inp, beh, gaps, cache.get("table"))
                else:
                    z2 = self.encode(inp, beh, gaps, causal=True, table=cache.get("table"))[0].reshape(-1, d)[rows]
                parts["cl"] = contrastive_loss(h.reshape(-1, d)[rows], z2, y, a["cl_temperature"])
                total = total + a["cl_weight"] * parts["cl"]
        if a["mlm_weight"] > 0:
            seq, beh, gaps = tgt, batch["behavior"][:, 1:], batch["gaps"][:, 1:]
            real = seq >= FIRST_ITEM_INDEX
            pick = real & (torch.rand(seq.shape, device=seq.device) < a["mask_prob"])
            r = torch.rand(seq.shape, device=seq.device)
            rand_items = torch.randint(FIRST_ITEM_INDEX, a["n_items"], seq.shape, device=seq.device)
            masked = torch.where(pick & (r < 0.8), torch.full_like(seq, MASK), seq)
            masked = torch.where(pick & (r >= 0.8) & (r < 0.9), rand_items, masked)
            h, _ = self.encode(masked, beh, gaps, causal=False, table=cache.get("table"))  # (B, L, d)
            if pick.any():
                hp = h[pick][:, None]                                           # (P, 1, d)
                parts["mlm"] = self._infonce(hp, torch.ones_like(hp[..., 0]), seq[pick], cache)
                total = total + a["mlm_weight"] * parts["mlm"]
        if not parts:
            raise GuimError("train.next_weight and train.mlm_weight are both 0: nothing to learn")
        return total, {k: float(v.detach()) for k, v in parts.items()}

    def logits(self, interests: torch.Tensor, weights: torch.Tensor, items: torch.Tensor) -> torch.Tensor:
        """score / tau for (P, K, d) interests, (P, K) weights, (N, d) items -> (P, N): the training logits.
        Cosine ``lse`` takes a fused path: the bias log w_k - 1/tau rides in the matmul as an extra
        column, so the (P, K, N) tensor only sees exp and a sum (2x faster than logsumexp on CPU)."""
        tau = self.log_tau.exp()
        fused = (self.args["normalize"] and self.args["score"] == "lse" and interests.shape[1] > 1
                 and float(tau) > 0.035)   # cos in [-1, 1]: exp((cos - 1) / tau + log w) stays > 1e-38
        if not fused:
            return self.score(interests, weights, items) / tau
        P, K, d = interests.shape
        u, v = F.normalize(interests, dim=-1) / tau, F.normalize(items, dim=-1)
        bias = torch.log(weights.clamp_min(1e-9)) - 1.0 / tau                        # (P, K)
        q = torch.cat([u, bias[..., None]], -1).reshape(P * K, d + 1)                # (P*K, d+1)
        v = torch.cat([v, torch.ones_like(v[:, :1])], -1)                             # (N, d+1)
        return (q @ v.T).view(P, K, -1).exp().sum(1).log() + 1.0 / tau               # (P, N)

    def set_popularity(self, counts) -> None:
        """Training counts per item_idx (the popularity sampler and log-Q correction)."""
        self.item_pop.copy_(torch.as_tensor(counts, dtype=torch.float32))
        self._pop_cdf = None

    def forward(self, batch: dict):
        """= loss(batch), so DistributedDataParallel can wrap the model."""
        return self.loss(batch)

    # -- internals ------------------------------------------------------------------------
    def _same_target_states(self, rows, y, inp, beh, gaps, table) -> torch.Tensor:
        """DuoRec's supervised positive view (``cl_positive=same_target``): for each anchor state
        (flat index ``rows`` into the (B, L) batch, next item ``y``), the last state of another
        training history that was followed by the same item, drawn from :class:`SameTargetBank`
        and encoded now (fresh dropout, gradients flowing); an anchor whose item has no stored
        history yet gets its own history re-encoded (the dropout view). The anchors' histories
        are stored afterwards, so an anchor never draws itself within a step. -> (P, d)."""
        M, L = self.args["max_len"], inp.shape[1]
        if self._bank is None or self._bank.items.device != inp.device:
            self._bank = SameTargetBank(self.args["n_items"], M, inp.device)
        b, t = rows // L, rows % L
        cols = t[:, None] + 1 + torch.arange(M, device=inp.device)[None]        # (P, M) in the padded batch
        own = [F.pad(x, (M, 0))[b[:, None], cols] for x in (inp, beh, gaps)]    # each (P, M), right-aligned
        drawn, found = self._bank.sample(y)
        seqs = [torch.where(found[:, None], d.to(o.dtype), o) for d, o in zip(drawn, own)]
        self._bank.add(y, *own)
        z = torch.empty(len(rows), self.args["d"], device=inp.device, dtype=torch.float32)
        lengths = (seqs[0] > 0).sum(1)
        order = torch.argsort(lengths)
        for chunk in order.tensor_split(min(4, len(order))):                    # similar lengths together
            W = max(1, int(lengths[chunk].max()))
            hs, _ = self.encode(*(x[chunk, M - W:] for x in seqs), causal=True, table=table)
            z[chunk] = hs[:, -1].float()
        return z

    def encode(self, item_idx, behavior, gaps, causal: bool, table: torch.Tensor | None = None):
        """(B, L) ints -> hidden states (B, L, d) and the mask of real positions (B, L).
        ``table``: precomputed vectors of the whole catalogue (V, d), used instead of the tower."""
        B, L = item_idx.shape
        if L > self.args["max_len"]:
            m = self.args["max_len"]
            item_idx, behavior, gaps = item_idx[:, -m:], behavior[:, -m:], gaps[:, -m:]
            B, L = item_idx.shape
        valid = item_idx > 0                                                    # (B, L)
        if self.args["positions"] == "left":   # counted from the window's first event: (B, L)
            pos = (valid.cumsum(1) - 1).clamp_min(0)
        else:                                   # counted back from the last event: (1, L)
            pos = torch.arange(self.args["max_len"] - L, self.args["max_len"], device=item_idx.device)[None]
        gaps = gaps.clamp(0, self.args["gap_buckets"])
        behavior = behavior.clamp(0, self.args["n_behaviors"])
        x = self.tower.embed_idx(item_idx) if table is None else table[item_idx]   # (B, L, d)
        x = x * valid[..., None]
        x = x + self.beh_emb(behavior) + self.gap_emb(gaps) + self.pos_emb(pos)
        x = self.drop(self.in_norm(x))
        bias = attention_bias(valid, causal, x.dtype)                           # (B, 1, L, L)
        for blk in self.blocks:
            x = blk(x, bias)     # an additive float mask takes SDPA's fused CPU kernel (3x the bool path)
        return self.out_norm(x), valid

    def _candidates(self, y: torch.Tensor, cache: dict):
        """Candidate items for targets y (P,): (vectors (N, d), labels (P,), log-Q (N,) or None,
        the candidates' item indices (N,), sorted)."""
        a, V, dev = self.args, self.args["n_items"], y.device
        if self._full_catalogue():
            if "all" not in cache:
                cache["all"] = self.catalogue()                                 # (V - 3, d)
            return cache["all"], y - FIRST_ITEM_INDEX, None, torch.arange(FIRST_ITEM_INDEX, V, device=dev)
        if self._pop_cdf is None or self._pop_cdf.device != dev:   # once: O(V); per step: O(M log V)
            self._pop_cdf = torch.cumsum(self.item_pop[FIRST_ITEM_INDEX:].double(), 0)   # (V - 3,)
        cdf, M = self._pop_cdf, a["num_negatives"]
        total = cdf[-1]
        if "neg" not in cache:
            if a["sampler"] == "popularity":
                neg = torch.searchsorted(cdf, torch.rand(M, device=dev, dtype=torch.float64) * total)
                cache["neg"] = neg.clamp_max(V - FIRST_ITEM_INDEX - 1) + FIRST_ITEM_INDEX
            else:
                cache["neg"] = torch.randint(FIRST_ITEM_INDEX, V, (M,), device=dev)
        cand = torch.unique(torch.cat([y, cache["neg"]]))                      # (N,) sorted
        p_tgt = (self.item_pop[cand] / total).float()                           # (N,)
        q = p_tgt if a["sampler"] == "popularity" else torch.full_like(p_tgt, 1.0 / (V - FIRST_ITEM_INDEX))
        log_pi = inclusion_log_prob(p_tgt, q, y.numel() - 1, M)
        return self.tower.embed_idx(cand), torch.searchsorted(cand, y), log_pi, cand

    def _full_catalogue(self) -> bool:
        a = self.args
        return a["negatives"] == "all" or (a["negatives"] == "auto" and a["n_items"] <= a["full_catalogue_max"])

    def _infonce(self, interests, weights, y, cache, seen: torch.Tensor | None = None) -> torch.Tensor:
        """InfoNCE of P targets: interests (P, K, d), weights (P, K), targets (P,) -> scalar.
        ``seen`` (P, S): item indices each row has already seen (0 = none); they are dropped from
        the row's negatives (its own target stays the positive)."""
        vecs, labels, logq, ids = self._candidates(y, cache)
        aux = 0.0
        route = self.args["train_score"] == "route"
        # route, or exact max (whose weights get no gradient from the score): the weights learn to
        # predict the interest nearest the target (label-aware, ComiRec, Cen et al. 2020)
        if interests.shape[1] > 1 and (route or self.args["score"] == "max"):
            with torch.no_grad():
                t = vecs[labels].detach()                                     # (P, d)
                if self.args["normalize"]:
                    t = F.normalize(t, dim=-1)
                k = torch.einsum("pkd,pd->pk", F.normalize(interests, dim=-1) if self.args["normalize"]
                                 else interests, t).argmax(-1)                # (P,)
            aux = F.nll_loss(torch.log(weights.float().clamp_min(1e-9)), k)
            if route:                                                         # only it is scored: cost of K = 1
                interests = interests[torch.arange(len(k), device=k.device), k][:, None]   # (P, 1, d)
        logits = self.logits(interests, weights, vecs).float()                  # (P, N)
        if logq is not None:
            logits = corrected_logits(logits, logq, labels)
        if seen is not None:
            logits = logits.masked_fill(seen_mask(seen, ids, labels), float("-inf"))
        if self.args["hard_negative_beta"] > 0:
            logits = hard_negative_logits(logits, labels, self.args["hard_negative_beta"])
        return F.cross_entropy(logits, labels) + aux
