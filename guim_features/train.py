"""``guim train``: train GUIM on the silver tables and register it in MLflow.

AdamW with linear warm-up and cosine decay, gradient clipping, bf16 autocast, pinned-memory
batches and (``train.compile``) ``torch.compile`` on CUDA, a tqdm bar with loss and sequences/s,
full-ranking Recall/NDCG@20 on a fixed sample of valid users every epoch (``train.valid_users``;
the final valid and test metrics rank every user, or ``train.final_eval_users`` of them), early
stopping on valid NDCG@20, a stop with the step named if the loss is not finite, a checkpoint every
epoch (``<workspace>/checkpoints/last.pt``), ``--resume`` to continue an unfinished run, and
``train.max_steps`` to cap an epoch (throughput measurements on data too big for a whole one).
``train.pretrain_epochs`` > 0 first trains the tower and encoder on masked-item prediction alone, in
a warm-up and cosine cycle of its own, not validated and not counted by early stopping; the
next-item epochs then start a fresh cycle.
The best epoch's weights are tested, saved with their config, logged to MLflow and registered as a
new version of ``guim``. The version gets alias
``challenger`` only when its valid Recall@20 beats a popularity ranking of the same valid split
(same users, same metric, their earlier items excluded): a model that learned nothing is never
served by default; otherwise it is registered without the alias and a loud message gives both
numbers (guim_features/registry.py).

Python API: ``train_model(cfg, seed=..., overrides={...}, mlflow_log=..., register=...)``.
Several processes: ``guim train --num-processes N`` starts PyTorch DDP (gloo on CPU, nccl on
GPU) with ``torchrun`` or Spark's ``TorchDistributor``; on a cluster::

    torchrun --nnodes 2 --nproc_per_node 8 --rdzv_backend c10d --rdzv_endpoint HOST:29400 \\
        -m guim_features.train --workspace /shared/ws
"""
from __future__ import annotations

import dataclasses
import math
import os
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from .errors import GuimError
from .schemas import FIRST_ITEM_INDEX


@dataclass
class TrainResult:
    embedder: object                       # guim_features.embedder.Embedder (best epoch, CPU)
    metrics: dict                          # valid_/test_ recall@10/20, ndcg@10/20, best_epoch, epochs, ...
    model_version: str | None = None       # registered version of train.model_name, if registered
    run_id: str | None = None              # MLflow run id, if logged
    history: list = field(default_factory=list)   # per-epoch dicts (loss, valid metrics, seconds)
    challenger: bool = False               # the registered version got alias challenger (it beat popularity)
    gate: str = ""                         # the comparison with popularity behind that decision


def _train_config(cfg, seed, overrides):
    tc = cfg.train
    known = {f.name for f in dataclasses.fields(tc)}
    bad = sorted(set(overrides or {}) - known)
    if bad:
        raise GuimError(f"unknown train override {bad[0]!r} (known: {', '.join(sorted(known))})")
    tc = dataclasses.replace(tc, **(overrides or {}))
    if seed is not None:
        tc = dataclasses.replace(tc, seed=seed)
    if tc.transition_window < 0:
        raise GuimError(f"train.transition_window={tc.transition_window}: expected 0 (off) or a number of events")
    if tc.transition_window and not 0.0 < tc.transition_decay <= 1.0:
        raise GuimError(f"train.transition_decay={tc.transition_decay}: expected a weight in (0, 1]")
    if tc.transition_window and not (isinstance(tc.transition_follow, int) and tc.transition_follow >= 1):
        raise GuimError(f"train.transition_follow={tc.transition_follow}: expected a number of latest items, 1 or more")
    weights = tc.transition_weights
    if tc.transition_window and not (isinstance(weights, (list, tuple)) and weights
                                     and all(isinstance(w, (int, float)) and 0 <= w < 1 for w in weights)):
        raise GuimError(f"train.transition_weights={tc.transition_weights}: expected a list of blend weights in [0, 1)")
    for key in ("max_steps", "final_eval_users", "valid_users"):
        if getattr(tc, key) < 0:
            raise GuimError(f"train.{key}={getattr(tc, key)}: expected 0 (no limit) or a positive number")
    if not 0.0 <= tc.weight_average < 1.0:
        raise GuimError(f"train.weight_average={tc.weight_average}: the decay must be in [0, 1) (0 = off)")
    return tc


def _device(tc):
    import torch

    if tc.device == "cuda" and not torch.cuda.is_available():
        raise GuimError("train.device=cuda but no CUDA device is visible; use train.device=auto")
    if tc.device not in ("auto", "cpu", "cuda"):
        raise GuimError(f"train.device={tc.device!r} is not one of auto, cpu, cuda")
    return torch.device("cuda" if tc.device != "cpu" and torch.cuda.is_available() else "cpu")


EVAL_LOGITS = 1 << 25   # scores in one ranking batch (users x catalogue) and in one block of its K-interest
                        # logits (users x K x catalogue): 128 MB of floats, twice that with exp


def rank_split(cfg, which: str, L: int, batch_size: int, score, n_items: int, max_users: int = 0, seed: int = 0,
               skip_users: frozenset = frozenset(), ks=(10, 20), variants: dict | None = None) -> dict:
    """Mean Recall/NDCG@k (k in ``ks``) of the ``which`` split, ranking every item by ``score(batch)`` -> (B, V)
    (data.rank_metrics: the user's earlier items excluded, ties count against the target).
    ``variants``: {name: f(scores, batch) -> scores}, rankings derived from the same ``score`` (computed
    once per batch) -> {name: metrics}.
    Batches hold at most :data:`EVAL_LOGITS` scores (users x ``n_items``): a (B, V) score matrix and
    rank_metrics' copies of it are what a large catalogue makes big (512 users x 200k items: 410 MB each)."""
    from .data import eval_batches, rank_metrics

    batch_size = max(1, min(batch_size, EVAL_LOGITS // max(n_items, 1)))
    fns = variants or {None: lambda s, b: s}
    tot: dict = {name: {} for name in fns}
    for b in eval_batches(cfg, which, L, batch_size, max_users, seed, skip_users):
        s = score(b)
        for name, f in fns.items():
            for k, v in rank_metrics(f(s, b), b["target"], b["seen"], ks=ks).items():
                tot[name][k] = tot[name].get(k, 0.0) + v
    out = {name: {f"{which}_{k}": v / max(t.get("n", 0.0), 1.0) for k, v in t.items() if k != "n"}
           for name, t in tot.items()}
    return out if variants else out[None]


def ranking_score(model, device):
    """``score(batch)`` -> (B, V) numpy scores of every item_idx for an :func:`data.eval_batches`
    batch (-inf below FIRST_ITEM_INDEX): the model's training logits, which rank as its score does.
    The model is put in eval mode and the catalogue embedded once. A batch's users are scored in row
    blocks of at most :data:`EVAL_LOGITS` K-interest logits, so memory stays flat as the catalogue
    grows (512 users x 4 interests x 200k items would be 1.6 GB per intermediate)."""
    import torch

    model.eval()
    with torch.no_grad():
        cat = model.catalogue().float()                                      # (V - 3, d)

    def score(b):
        with torch.no_grad():
            t = [torch.as_tensor(b[k], device=device) for k in ("items", "behavior", "gaps")]
            interests, weights = model.encode_users(*t)                      # (B, K, d), (B, K)
            rows = max(1, EVAL_LOGITS // (interests.shape[1] * len(cat)))
            # the training logits = score / tau: the same ranking, and the fused K-mixture path is 2x cheaper
            s = torch.cat([model.logits(interests[r:r + rows].float(), weights[r:r + rows].float(), cat)
                           for r in range(0, len(interests), rows)])        # (B, V - 3)
            return torch.nn.functional.pad(s, (FIRST_ITEM_INDEX, 0), value=float("-inf")).cpu().numpy()  # (B, V)

    return score


def evaluate(model, cfg, which: str, L: int, batch_size: int, device, max_users: int = 0, seed: int = 0,
             skip_users: frozenset = frozenset()) -> dict:
    """Mean Recall/NDCG@10/20 of the ``which`` split by full ranking (data.rank_metrics; ties count
    against the target) of :func:`ranking_score`. ``max_users`` > 0: a fixed random subset of users
    (per-epoch validation)."""
    return rank_split(cfg, which, L, batch_size, ranking_score(model, device), model.args["n_items"], max_users,
                      seed, skip_users)


def fit_transition_prior(model, cfg, tc, device, skip_users: frozenset = frozenset(), progress: bool = False,
                         ks=(10, 20), score=None):
    """The transition prior (model/transitions.py) with ``tc.transition_window``, ``tc.transition_decay``
    and ``tc.transition_follow``, its weight chosen among ``tc.transition_weights`` by valid NDCG@20
    (the early-stopping metric; a tie goes to the smaller weight), the counts as of each ranked
    split: valid is ranked with the pairs of the training parts, test with those of the training and
    valid parts -> (prior, metrics). The prior returned is the test one (training and valid pairs),
    what a ranking after the valid events should read. ``metrics``: ``valid_*`` and ``test_*`` ranked
    with it, ``model_only_valid_*`` and ``model_only_test_*`` without, ``train_counts_test_*`` with the
    training parts' counts only, and ``transition_weight`` (Recall and NDCG at each of ``ks``, which
    must include 20). Valid and test rank ``tc.final_eval_users`` users (0: all). ``score``: rank by
    these logits instead of ``model``'s (a :func:`ranking_score`-like function, e.g. several models' mean)."""
    from .data import train_sequences
    from .model.transitions import TransitionPrior

    t0 = time.time()
    n = model.args["n_items"]

    def count(with_valid: bool) -> TransitionPrior:
        return TransitionPrior.fit(train_sequences(cfg, skip_users, with_valid), n, tc.transition_window,
                                   tc.transition_decay, tc.transition_follow)

    def rank(which: str, blends: dict) -> dict:
        return rank_split(cfg, which, tc.max_len, tc.eval_batch_size, score, n, tc.final_eval_users, tc.seed,
                          skip_users, ks, variants=blends)

    before_valid = count(with_valid=False)
    score = score or ranking_score(model, device)    # the model's logits, once per batch for every ranking
    weights = sorted({0.0, *map(float, tc.transition_weights)})
    parts = batch_parts(before_valid)                # its log softmax and P, once per batch for every weight
    scored = rank("valid", {x: (lambda s, b, x=x: TransitionPrior.mix(parts(s, b), x) if x > 0 else s)
                            for x in weights})
    w = max(weights, key=lambda x: (scored[x]["valid_ndcg@20"], -x))
    before_test = count(with_valid=True)
    before_valid.weight = before_test.weight = w
    test = rank("test", {"model": lambda s, b: s, "prior": lambda s, b: before_test.blend(s, b["items"]),
                         "train_counts": lambda s, b: before_valid.blend(s, b["items"])})
    metrics = {**scored[w], **test["prior"], "transition_weight": w,
               **{f"model_only_{k}": v for k, v in {**scored[0.0], **test["model"]}.items()},
               **{f"train_counts_{k}": v for k, v in test["train_counts"].items()}}
    if progress:
        print("transition prior: valid NDCG@20 " + ", ".join(f"{m['valid_ndcg@20']:.4f} at weight {x:g}"
                                                             for x, m in scored.items())
              + f" -> weight {w:g} ({len(before_valid.values)} pairs before valid, {len(before_test.values)} "
              f"before test, {time.time() - t0:.1f}s)", file=sys.stderr)
    return before_test, metrics


def batch_parts(prior):
    """``f(scores, batch)`` -> ``prior.parts`` of that batch, computed once while the same scores
    array comes back (rank_split hands every variant of a batch the same one)."""
    memo: dict = {}

    def f(s, b):
        if memo.get("scores") is not s:
            memo.clear()
            memo.update(scores=s, parts=prior.parts(s, b["items"]))
        return memo["parts"]
    return f


def popularity_metrics(cfg, counts: np.ndarray, which: str, L: int, batch_size: int,
                       skip_users: frozenset = frozenset(), max_users: int = 0, seed: int = 0) -> dict:
    """The same metrics for the popularity ranking (``counts``: training-part occurrences per item_idx),
    on the same users, targets and exclusions as :func:`evaluate` (with the same ``max_users`` and
    ``seed``: the same subset) — the floor a model must beat."""
    s = np.asarray(counts, np.float32)
    return rank_split(cfg, which, L, batch_size, lambda b: np.broadcast_to(s, (len(b["target"]), len(s))), len(s),
                       max_users, seed, skip_users)


def _lr_lambda(warmup: int, total: int, restart: int = 0):
    """Linear warm-up, then cosine decay to a tenth at ``total`` steps. ``restart`` > 0: a first
    cycle of ``restart`` steps (pretraining), then a fresh warm-up and cosine over ``total`` more."""
    def f(step: int) -> float:
        n = total
        if restart:
            if step < restart:
                n = restart
            else:
                step -= restart
        if step < warmup:
            return (step + 1) / warmup
        prog = min(1.0, (step - warmup) / max(1, n - warmup))
        return 0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * prog))
    return f


def optimizers(model, tc) -> list:
    """AdamW for dense parameters (+ SparseAdam for a sparse id embedding: O(rows touched) per step)."""
    import torch

    sparse = [m.weight for m in model.modules() if isinstance(m, torch.nn.Embedding) and m.sparse]
    skip = {id(p) for p in sparse}
    if model.profile is not None:                     # the profile head is trained on its own, afterwards
        skip |= {id(p) for p in model.profile.parameters()}
    decay = [p for n, p in model.named_parameters() if p.requires_grad and p.dim() >= 2 and "emb" not in n
             and "bag" not in n and "queries" not in n and id(p) not in skip]
    skip |= {id(p) for p in decay}
    rest = [p for p in model.parameters() if p.requires_grad and id(p) not in skip]
    opts = [torch.optim.AdamW([{"params": decay, "weight_decay": tc.weight_decay},
                               {"params": rest, "weight_decay": 0.0}], lr=tc.lr)]
    return opts + ([torch.optim.SparseAdam(sparse, lr=tc.lr)] if sparse else [])


class WeightAverage:
    """Exponential moving average of a model's parameters (Polyak averaging): after each optimiser
    step ``avg = decay * avg + (1 - decay) * w``; the first update copies ``w``. Validation, the
    best-epoch choice and the saved model then read the average, which smooths the last steps'
    noise. Buffers are not averaged (they are the model's constants: feature bank, counts)."""

    def __init__(self, model, decay: float):
        import copy

        self.decay, self.n = decay, 0
        self.module = copy.deepcopy(model).eval()
        for p in self.module.parameters():
            p.requires_grad_(False)

    def update(self, model) -> None:
        import torch

        with torch.no_grad():   # one fused lerp over every parameter: avg += (1 - decay) * (w - avg)
            torch._foreach_lerp_(list(self.module.parameters()), [p.detach() for p in model.parameters()],
                                 1.0 if self.n == 0 else 1.0 - self.decay)
        self.n += 1

    def state_dict(self) -> dict:
        return {"module": self.module.state_dict(), "n": self.n}

    def load_state_dict(self, state: dict) -> None:
        self.module.load_state_dict(state["module"])
        self.n = state["n"]


def train_model(cfg, *, seed: int | None = None, overrides: dict | None = None, mlflow_log: bool = True,
                register: bool = True, progress: bool = True, resume: bool = False,
                on_epoch_end=None, exclude_users: frozenset = frozenset()) -> TrainResult:
    """Train on ``cfg``'s silver tables; see the module docstring. ``on_epoch_end(epoch, record)`` is
    called after each epoch's checkpoint (tests use it to simulate a crash). ``exclude_users``:
    user_ids whose sequences are neither trained on nor validated on (a user-holdout benchmark)."""
    import torch
    from tqdm.auto import tqdm

    from . import registry
    from .data import ItemBank, TrainStream, count_windows, item_counts, item_neighbours, table_versions, train_item_sets
    from .embedder import CHECKPOINT, Embedder
    from .model import GUIM, model_args
    from .model.profile import fit_profile

    rank, world = int(os.environ.get("RANK", 0)), int(os.environ.get("WORLD_SIZE", 1))
    tc = _train_config(cfg, seed, overrides)
    ckdir = Path(cfg.resolve(tc.checkpoint_dir))
    last = ckdir / "last.pt"
    state = None
    if resume:
        if not last.exists():
            raise GuimError(f"--resume: no unfinished run to resume (no {last}); start one with `guim train`")
        state = torch.load(last, map_location="cpu", weights_only=False)
        tc = dataclasses.replace(cfg.train, **state["train_config"])     # the interrupted run's settings
    P = tc.pretrain_epochs
    if P < 0 or tc.epochs < 1:
        raise GuimError(f"train.pretrain_epochs={P}, train.epochs={tc.epochs}: expected >= 0 pretraining epochs "
                        f"and at least 1 training epoch")
    device = _device(tc)
    if device.type == "cpu" and tc.threads:
        torch.set_num_threads(tc.threads)
    torch.manual_seed(tc.seed + rank)
    np.random.seed(tc.seed)
    ddp = world > 1
    if ddp:
        import torch.distributed as dist
        if not dist.is_initialized():
            dist.init_process_group("nccl" if device.type == "cuda" else "gloo")
        if device.type == "cuda":
            device = torch.device("cuda", int(os.environ.get("LOCAL_RANK", 0)))

    bank = ItemBank(cfg)
    model = GUIM(model_args(tc, bank.sizes()))
    model.tower.set_bank(bank.arrays())
    skip = frozenset(exclude_users)
    if tc.item_graph > 0:
        model.tower.set_neighbours(*item_neighbours(cfg, bank.n_items, tc.graph_neighbours, skip))
    counts = item_counts(cfg, bank.n_items, skip)
    model.set_popularity(counts + 1.0)
    torch.manual_seed(tc.seed)   # same initial weights on every rank (DDP also broadcasts them)
    model.to(device)
    stream = TrainStream(cfg, tc.max_len, tc.batch_size, tc.seed, tc.windows, tc.shuffle_buffer, rank, world, skip)
    steps = math.ceil(count_windows(cfg, tc.max_len, tc.windows, rank, world, skip) / tc.batch_size)
    if tc.max_steps:
        steps = min(steps, tc.max_steps)    # the learning-rate schedule then spans the capped epochs
    if ddp:
        t = torch.tensor([steps], device=device)
        dist.all_reduce(t, op=dist.ReduceOp.MIN)   # every rank must take the same number of steps
        steps = int(t.item())
    if steps == 0:
        raise GuimError("no training sequences (users need >= 2 training events); check `guim sequences`")
    opts = optimizers(model, tc)
    scheds = [torch.optim.lr_scheduler.LambdaLR(o, _lr_lambda(tc.warmup_steps, steps * tc.epochs, steps * P))
              for o in opts]
    sparse_ids = {id(p) for o in opts[1:] for g in o.param_groups for p in g["params"]}
    dense = [p for p in model.parameters() if p.requires_grad and id(p) not in sparse_ids]
    net = torch.nn.parallel.DistributedDataParallel(model, find_unused_parameters=True) if ddp else model
    history, best, best_state, bad, start, run_id = [], -1.0, None, 0, 0, None
    pretrain = []   # the masked-item pretraining epochs' records (train.pretrain_epochs)
    avg = WeightAverage(model, tc.weight_average) if tc.weight_average > 0 else None
    if state is not None:
        model.load_state_dict(state["model"])
        if avg is not None and state.get("weight_average"):
            avg.load_state_dict(state["weight_average"])
        for o, s in zip(opts, state["opt"]):
            o.load_state_dict(s)
        for o, s in zip(scheds, state["sched"]):
            o.load_state_dict(s)
        history, best, bad, start, run_id = (state["history"], state["best"], state["bad"], state["epoch"],
                                             state["run_id"])
        best_state = state["best_state"]
        pretrain = state.get("pretrain", [])
        torch.set_rng_state(state["torch_rng"])
    versions = table_versions(cfg)
    fingerprint = registry.training_fingerprint(cfg, tc)
    logger = registry.RunLogger(cfg, tc, versions, run_id) if (mlflow_log and rank == 0) else None
    amp = device.type == "cuda" and tc.amp
    loss_fn = _compiled(net, tc, device)
    pin = device.type == "cuda"
    step = start * steps
    args = model.args

    def save_last(epoch: int) -> None:
        """The resumable state after ``epoch`` (0-based, pretraining epochs included)."""
        _save_checkpoint(last, {"model": model.state_dict(), "opt": [o.state_dict() for o in opts],
                                "sched": [s.state_dict() for s in scheds], "epoch": epoch + 1, "history": history,
                                "best": best, "best_state": best_state, "bad": bad, "run_id": run_id,
                                "train_config": dataclasses.asdict(tc), "torch_rng": torch.get_rng_state(),
                                "weight_average": avg.state_dict() if avg is not None else None,
                                "pretrain": pretrain})

    for epoch in range(start, P + tc.epochs):
        pre = epoch < P
        # pretraining: masked-item prediction alone (bidirectional; the K interests are not read)
        model.args = {**args, "next_weight": 0.0, "mlm_weight": 1.0, "cl_weight": 0.0} if pre else args
        stream.set_epoch(epoch)
        net.train()
        t0, seen, positions, losses = time.time(), 0, 0, []
        desc = f"pretraining {epoch + 1}/{P}" if pre else f"epoch {epoch + 1 - P}/{tc.epochs}"
        bar = tqdm(total=steps, desc=desc, disable=not progress or rank != 0, leave=False)
        for i, batch in enumerate(stream):
            if i >= steps:
                break
            positions += int(np.count_nonzero((batch["items"][:, :-1] > 0) & (batch["items"][:, 1:] > 0)))
            b = {k: (torch.from_numpy(v).pin_memory().to(device, non_blocking=True) if pin
                     else torch.as_tensor(v, device=device)) for k, v in batch.items()}
            with torch.autocast(device.type, dtype=torch.bfloat16, enabled=amp):
                loss, parts = loss_fn(b)
            loss_value = float(loss.detach())                          # one host sync per step, used twice
            if not math.isfinite(loss_value):
                raise GuimError(f"training loss is {loss_value} at epoch {epoch + 1}, step {i + 1} "
                                f"(global step {step + 1}); the run is stopped before the weights are updated. "
                                f"Try a lower train.lr (now {tc.lr}) or train.temperature >= 0.05, and check the "
                                f"silver tables for out-of-range values")
            for o in opts:
                o.zero_grad(set_to_none=True)
            loss.backward()
            if tc.grad_clip > 0:
                torch.nn.utils.clip_grad_norm_(dense, tc.grad_clip)     # sparse rows are not clipped
            for o, s in zip(opts, scheds):
                o.step()
                s.step()
            if avg is not None:
                avg.update(model)
            step, seen = step + 1, seen + len(b["items"])
            losses.append(loss_value)
            rate = seen * world / max(time.time() - t0, 1e-9)
            bar.set_postfix(loss=f"{losses[-1]:.3f}", seq_s=f"{rate:.0f}")
            bar.update()
            if logger and step % tc.log_every == 0:
                logger.step({"train_loss": losses[-1], "lr": scheds[0].get_last_lr()[0],
                             **{f"train_{k}": v for k, v in parts.items()}}, step)
        bar.close()
        secs = time.time() - t0
        if pre:
            pretrain.append({"epoch": epoch + 1, "loss": float(np.mean(losses)) if losses else float("nan"),
                             "seconds": secs})
            if progress and rank == 0:
                print(f"pretraining epoch {epoch + 1}/{P}: masked-item loss {pretrain[-1]['loss']:.4f} "
                      f"({len(losses)} steps in {secs:.1f}s)", file=sys.stderr)
            if logger:
                logger.step({"pretrain_loss": pretrain[-1]["loss"]}, step)
            if rank == 0:
                save_last(epoch)
            continue
        scored = model if avg is None else avg.module     # the weights validated, kept and saved
        rec = {"epoch": epoch + 1 - P, "loss": float(np.mean(losses)) if losses else float("nan"),
               "seq_per_s": seen * world / max(secs, 1e-9), "seconds": secs, "steps": len(losses),
               "positions_per_s": positions * world / max(secs, 1e-9),
               **evaluate(scored, cfg, "valid", tc.max_len, tc.eval_batch_size, device, tc.valid_users, tc.seed,
                          skip)}
        history.append(rec)
        if rec["valid_ndcg@20"] > best:
            best, bad = rec["valid_ndcg@20"], 0
            best_state = {k: v.detach().cpu().clone() for k, v in scored.state_dict().items()}
        else:
            bad += 1
        if progress and rank == 0:
            print(f"epoch {rec['epoch']}: loss {rec['loss']:.4f}  valid R@20 {rec['valid_recall@20']:.4f}  "
                  f"NDCG@20 {rec['valid_ndcg@20']:.4f}  {rec['seq_per_s']:.0f} seq/s  "
                  f"{rec['positions_per_s']:.0f} target positions/s  ({rec['steps']} steps in {secs:.1f}s)",
                  file=sys.stderr)
        if logger:
            logger.epoch(rec, step)
            run_id = logger.run_id
        if rank == 0:
            save_last(epoch)
        if on_epoch_end is not None:
            on_epoch_end(epoch, rec)
        if bad >= tc.patience:
            break
    model.args = args
    model.load_state_dict(best_state)
    if model.profile is not None and rank == 0:
        t0 = time.time()
        sets = train_item_sets(cfg, bank.n_items, skip)
        losses = fit_profile(model.profile, sets, tc.profile_steps, tc.profile_keep, num_negatives=tc.num_negatives,
                             seed=tc.seed, progress=progress)
        if progress:
            print(f"profile head: {len(losses)} steps over {sum(len(x) > 0 for x in sets)} users' training items, "
                  f"loss {np.mean(losses[:50]):.3f} -> {np.mean(losses[-50:]):.3f} ({time.time() - t0:.1f}s)",
                  file=sys.stderr)
    n_final = tc.final_eval_users            # 0: every user; else a fixed subset, the same for model and popularity
    if tc.transition_window and rank == 0:       # ranked with the prior, its weight chosen on valid
        prior, ranked = fit_transition_prior(model, cfg, tc, device, skip, progress)
    else:
        prior = None
        # the best epoch's validation already ranked these users (same count, same seed) with these weights
        valid = ({k: v for k, v in max(history, key=lambda r: r["valid_ndcg@20"]).items() if k.startswith("valid_")}
                 if tc.valid_users == n_final else
                 evaluate(model, cfg, "valid", tc.max_len, tc.eval_batch_size, device, n_final, tc.seed, skip))
        ranked = {**valid,
                  **evaluate(model, cfg, "test", tc.max_len, tc.eval_batch_size, device, n_final, tc.seed, skip)}
    metrics = {**ranked, "best_epoch": max(history, key=lambda r: r["valid_ndcg@20"])["epoch"], "epochs": len(history),
               "seq_per_s": float(np.mean([r["seq_per_s"] for r in history]))}
    if register:   # the registration gate's floor; bench refits and other unregistered runs skip the extra ranking
        pop = popularity_metrics(cfg, counts, "valid", tc.max_len, tc.eval_batch_size, skip, n_final, tc.seed)
        metrics.update({f"popularity_{k}": pop[k] for k in ("valid_recall@20", "valid_ndcg@20")})
    meta = {"train_config": dataclasses.asdict(tc), "table_versions": versions, "metrics": metrics}
    emb = Embedder(model.cpu(), meta, transitions=prior)
    version, accepted, reason = None, False, ""
    if rank == 0:
        final = emb.save(ckdir / CHECKPOINT)
        if logger:
            version, accepted, reason = logger.finish(emb, final, metrics, history, register, fingerprint)
            run_id = logger.run_id
        if version and not accepted:
            print(f"\n*** model version {version} was registered WITHOUT alias 'challenger': it is not better "
                  f"than ranking items by popularity on the valid split ({reason}; same users, their earlier "
                  f"items excluded).\n*** `guim embed`, `guim bench` and `guim promote` will not pick it up. "
                  f"Train longer or differently (train.epochs, train.lr) or check the data; to use it anyway: "
                  f"--model-uri models:/{tc.model_name}/{version}\n", file=sys.stderr)
        last.unlink(missing_ok=True)                                          # the run is finished
    if ddp:
        dist.barrier()
    emb.model_version = version
    return TrainResult(emb, metrics, version, run_id, history, accepted, reason)


class _Guarded:
    """``torch.compile``'d loss that falls back to the eager module if compiling fails (first call)."""

    def __init__(self, eager, compiled):
        self.eager, self.fn, self.ok = eager, compiled, False

    def __call__(self, batch):
        if self.ok:
            return self.fn(batch)
        try:
            out = self.fn(batch)
        except Exception as e:          # a compiler/toolchain failure must not cost the run
            print(f"warning: torch.compile failed ({type(e).__name__}: {str(e).splitlines()[0][:160]}); "
                  f"training uncompiled (train.compile=off hides this)", file=sys.stderr)
            self.fn = self.eager
            out = self.fn(batch)
        self.ok = True
        return out


def _compiled(net, tc, device):
    """The loss callable: ``net`` itself, or ``torch.compile(net)`` (dynamic shapes: batch widths vary)
    when train.compile is on, or auto on CUDA."""
    import torch

    if tc.compile not in ("auto", "on", "off"):
        raise GuimError(f"train.compile={tc.compile!r} is not one of auto, on, off")
    if tc.compile == "off" or (tc.compile == "auto" and device.type != "cuda"):
        return net
    return _Guarded(net, torch.compile(net, dynamic=True))


def _save_checkpoint(path: Path, state: dict) -> None:
    """Write atomically (a crash mid-write leaves the previous checkpoint intact), through a temporary
    file of its own, so that two runs sharing a workspace never replace each other's half-written file."""
    import torch

    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=path.name + ".", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as f:
            torch.save(state, f)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def run(cfg, args) -> int:
    """``guim train [--resume] [--num-processes N --launcher torchrun|spark]``."""
    n = getattr(args, "num_processes", 1) or 1
    if n > 1:
        return _launch(cfg, args, n)
    res = train_model(cfg, resume=getattr(args, "resume", False))
    _print_result(res)
    return 0


def _launch(cfg, args, n: int) -> int:
    """Start ``n`` DDP processes with torchrun (default) or Spark's TorchDistributor (local mode here)."""
    import subprocess

    overrides, resume = list(getattr(args, "overrides", []) or []), bool(getattr(args, "resume", False))
    if getattr(args, "launcher", "torchrun") == "spark":
        import torch
        from pyspark.ml.torch.distributor import TorchDistributor

        from .spark import get_spark

        get_spark(cfg.spark)
        TorchDistributor(num_processes=n, local_mode=True, use_gpu=torch.cuda.is_available()).run(
            _worker, cfg.workspace, overrides, resume)
        return 0
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc_per_node={n}",
           "-m", "guim_features.train", "--workspace", cfg.workspace]
    for o in overrides:
        cmd += ["--set", o]
    return subprocess.call(cmd + (["--resume"] if resume else []))


def _worker(workspace: str, overrides: list, resume: bool = False):
    """One DDP process (RANK/WORLD_SIZE/MASTER_ADDR come from the launcher)."""
    from .config import load_config

    world = int(os.environ.get("WORLD_SIZE", 1))
    cfg = load_config(workspace, overrides, write_default=False)
    threads = max(1, cfg.train.threads // world) if cfg.train.threads else 0
    cfg = dataclasses.replace(cfg, train=dataclasses.replace(cfg.train, threads=threads))
    rank0 = int(os.environ.get("RANK", 0)) == 0
    res = train_model(cfg, resume=resume, progress=rank0)
    if rank0:
        _print_result(res)
        return res.metrics
    return None


def _print_result(res: TrainResult) -> None:
    m = res.metrics
    print(f"test Recall@20 {m['test_recall@20']:.4f}  NDCG@20 {m['test_ndcg@20']:.4f}  "
          f"(valid Recall@20 {m['valid_recall@20']:.4f}, best epoch {m['best_epoch']}/{m['epochs']})")
    if "transition_weight" in m:
        print(f"  with the transition prior at weight {m['transition_weight']:g} (chosen on valid); the model alone: "
              f"test Recall@20 {m['model_only_test_recall@20']:.4f}  NDCG@20 {m['model_only_test_ndcg@20']:.4f}")
    if res.model_version:
        alias = "alias challenger" if res.challenger else "WITHOUT alias challenger: not better than popularity"
        print(f"registered model version {res.model_version} ({alias}: {res.gate}), run {res.run_id}")


if __name__ == "__main__":   # the torchrun entry point of `guim train --num-processes N`
    import argparse

    ap = argparse.ArgumentParser(prog="python -m guim_features.train")
    ap.add_argument("--workspace", default="guim_workspace")
    ap.add_argument("--set", action="append", default=[], dest="overrides")
    ap.add_argument("--resume", action="store_true")
    a = ap.parse_args()
    _worker(a.workspace, a.overrides, a.resume)
