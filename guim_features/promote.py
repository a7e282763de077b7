"""``guim promote``: move alias ``champion`` to the ``challenger`` version when GUIM-Bench allows.

The gate: the challenger must be at least as good as the champion on
``promote.primary_metric`` (``task.metric``, default ``next_item.recall@20``) and no task's
headline metric may drop by more than ``promote.tolerance``; otherwise the refusal names the
task that held it back. Both versions are scored on the workspace's current silver tables by
the bench tasks (their ``bench.*`` tags are reused when ``guim bench`` already scored that
version on the same table versions). The decision and the numbers are recorded as tags
``promote.*`` on the challenger's model version. With no champion yet, the challenger becomes
the first one. Exit code 0 = promoted (or would be, with ``--dry-run``), 1 = refused.
"""
from __future__ import annotations

import sys
import time
from dataclasses import dataclass, field

from .errors import GuimError


@dataclass
class Decision:
    accepted: bool
    reason: str
    rows: list = field(default_factory=list)  # (metric, champion, challenger, allowed drop, ok)


def gate(champion: dict, challenger: dict, primary: str, tolerance: float, headlines: list) -> Decision:
    """Compare flat ``{"task.metric": value}`` scores; ``headlines`` lists the metrics held to
    the tolerance (one per task), ``primary`` must not drop at all."""
    for who, s in (("champion", champion), ("challenger", challenger)):
        if primary not in s:
            raise GuimError(f"promote.primary_metric {primary!r} was not measured for the {who} "
                            f"(measured: {', '.join(sorted(s)) or 'nothing'}); check bench.tasks")
    rows, blocked = [], []
    for m in dict.fromkeys([primary, *headlines]):
        if m not in champion or m not in challenger:
            continue
        allowed = 0.0 if m == primary else tolerance
        ok = challenger[m] >= champion[m] - allowed - 1e-12
        rows.append((m, champion[m], challenger[m], allowed, ok))
        if not ok:
            blocked.append(m)
    if not blocked:
        return Decision(True, f"at least as good on {primary} and no task dropped more than {tolerance}", rows)
    first = blocked[0]
    what = "primary metric" if first == primary else f"task {first.split('.')[0]} regressed:"
    why = (f"{what} {first} {champion[first]:.4f} -> {challenger[first]:.4f}"
           + ("" if first == primary else f" (tolerance {tolerance})"))
    if len(blocked) > 1:
        why += "; also " + ", ".join(blocked[1:])
    return Decision(False, why, rows)


def _from_tags(tags: dict) -> dict:
    """Flat scores from ``bench.<task>.<metric>`` model-version tags (see bench.report)."""
    out = {}
    for k, v in tags.items():
        parts = k.split(".")
        if parts[0] == "bench" and len(parts) == 3:
            out[f"{parts[1]}.{parts[2].replace('_at_', '@')}"] = float(v)
    return out


def version_scores(cfg, client, mv, data) -> dict:
    """Flat bench scores of a model version on ``data``: from its tags when they were measured on
    the same table versions, else measured now (and recorded as tags)."""
    from .downstream import evaluate_tasks
    from .downstream.baselines.guim import GuimModel
    from .downstream.report import tag_version

    if mv.tags.get("bench.data") == data.fingerprint:
        scores = _from_tags(mv.tags)
        if scores:
            return scores
    print(f"promote: scoring {mv.name} version {mv.version} on the bench tasks", file=sys.stderr)
    emb = GuimModel(cfg, f"models:/{mv.name}/{mv.version}").embed(data, 0)
    results, _ = evaluate_tasks(data, emb, cfg.bench, content_aware=True)   # as `guim bench` names them
    tag_version(client, mv, {t: {k: {"mean": v} for k, v in ms.items()} for t, ms in results.items()},
                data.fingerprint)
    return {f"{t}.{k}": v for t, ms in results.items() for k, v in ms.items()}


def headline_metrics(scores: dict) -> list:
    """``task.metric`` of each task's headline among flat scores."""
    from .downstream.tasks import NAMES, headline, load

    out = []
    for t in NAMES:
        ms = {k.split(".", 1)[1]: v for k, v in scores.items() if k.split(".", 1)[0] == t}
        if ms:
            out.append(f"{t}.{headline(load(t), ms)}")
    return out


def _alias(client, name: str, alias: str):
    from mlflow.exceptions import MlflowException

    try:
        return client.get_model_version_by_alias(name, alias)
    except MlflowException:
        return None


def run(cfg, args) -> int:
    """Entry point of ``guim promote``."""
    from mlflow import MlflowClient

    from .downstream import mlflow_key
    from .downstream.data import BenchData

    p = cfg.promote
    name = p.model_name or cfg.train.model_name
    client = MlflowClient(cfg.mlflow_uri, cfg.mlflow_uri)
    challenger = _alias(client, name, p.challenger)
    if challenger is None:
        raise GuimError(f"no version of model {name!r} has alias {p.challenger!r} in {cfg.mlflow_uri}; "
                        f"run `guim train` first")
    champion = _alias(client, name, p.champion)
    dry = getattr(args, "dry_run", False)
    if champion is not None and champion.version == challenger.version:
        print(f"promote: version {challenger.version} is already {p.champion!r}; nothing to do")
        return 0
    if champion is None:
        decision, scores = Decision(True, f"no {p.champion!r} yet: the first challenger becomes it"), {}
    else:
        data = BenchData.load(cfg)
        old = version_scores(cfg, client, champion, data)
        new = version_scores(cfg, client, challenger, data)
        decision = gate(old, new, p.primary_metric, p.tolerance, headline_metrics(old))
        print(f"{'metric':<38} {f'champion v{champion.version}':>14} {f'challenger v{challenger.version}':>15}")
        for m, a, b, allowed, ok in decision.rows:
            print(f"{m:<38} {a:>14.4f} {b:>15.4f}  {'ok' if ok else 'REGRESSED'}"
                  + (" (primary)" if m == p.primary_metric else ""))
        scores = {f"promote.{mlflow_key(m)}.champion": f"{a:.6f}" for m, a, _, _, _ in decision.rows}
        scores.update({f"promote.{mlflow_key(m)}.challenger": f"{b:.6f}" for m, _, b, _, _ in decision.rows})
    verdict = "accepted" if decision.accepted else "refused"
    print(f"promote: {verdict}{' (dry run)' if dry else ''}: version {challenger.version} -> "
          f"{p.champion!r}: {decision.reason}")
    if dry:
        return 0 if decision.accepted else 1
    tags = {"promote.decision": verdict, "promote.reason": decision.reason[:5000],
            "promote.champion_version": str(champion.version) if champion else "",
            "promote.primary_metric": p.primary_metric, "promote.tolerance": str(p.tolerance),
            "promote.time": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()), **scores}
    for k, v in tags.items():
        client.set_model_version_tag(name, str(challenger.version), k, v)
    if decision.accepted:
        client.set_registered_model_alias(name, p.champion, str(challenger.version))
    return 0 if decision.accepted else 1
