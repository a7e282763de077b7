"""The online transition prior's softmax normaliser: every item scored against a sample's estimate.

    python bench/prior_normaliser.py [--items 18357,100000,1000000] [--sample 50000] [--requests 200]
                                     [--K 4] [--d 64] [--tau 0.1] [--weight 0.15] [--k 20] [--depth 64]

``guim recommend`` ranks with the prior by log((1 - w) softmax(s / tau) + w P(item | history)), whose
softmax needs log sum_j exp(s(u, j) / tau) over the whole catalogue (recommend.Normaliser). Scored
exactly that is an (N, d) x (d, K) product per request; above ``publish.normaliser_sample`` items the
request's candidates count exactly and the rest is estimated from a fixed sample. For each catalogue
size this prints, over ``--requests`` random users: the median and p95 milliseconds of both, the
estimate's error in log Z (median and max |error|), and the share of requests whose blended top
``--k`` is the same list in the same order with the estimate as with the exact normaliser.

Vectors as bench/serving.py draws them (unit-norm, around 200 centres; interests near items; scores
are cosines, so tau 0.1 is the trained default). A request's candidates are each interest's
``--depth`` nearest items (exact here; HNSW's efSearch 64 in ``guim recommend``) and 30 successors of
its history with Dirichlet probabilities, as a prior row has.
"""
from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))


def main(argv=None) -> int:
    from guim_features.recommend import Normaliser

    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--items", default="18357,100000,1000000")
    p.add_argument("--sample", type=int, default=50_000)
    p.add_argument("--requests", type=int, default=200)
    p.add_argument("--K", type=int, default=4)
    p.add_argument("--d", type=int, default=64)
    p.add_argument("--tau", type=float, default=0.1)
    p.add_argument("--weight", type=float, default=0.15)
    p.add_argument("--k", type=int, default=20)
    p.add_argument("--depth", type=int, default=64)
    a = p.parse_args(argv)
    print(f"machine: {os.cpu_count()} CPUs, load average {os.getloadavg()[0]:.1f} at the start; "
          f"K {a.K}, d {a.d}, tau {a.tau}, weight {a.weight}, sample {a.sample:,}")
    print("| items | exact ms p50 / p95 | estimate ms p50 / p95 | abs error log Z p50 / max | same top-k |")
    print("| ---: | ---: | ---: | ---: | ---: |")
    for n in (int(x) for x in a.items.split(",")):
        rng = np.random.default_rng(n)
        centres = rng.normal(size=(200, a.d))
        vectors = _unit(centres[rng.integers(0, 200, n)] + 0.35 * rng.normal(size=(n, a.d)))
        exact, est = Normaliser(vectors, a.tau, 0), Normaliser(vectors, a.tau, a.sample)
        t_exact, t_est, err, same = [], [], [], 0
        for _ in range(a.requests):
            q = _unit(vectors[rng.integers(0, n, a.K)] + 0.3 * rng.normal(size=(a.K, a.d)))   # (K, d)
            w = rng.dirichlet(np.ones(a.K)).astype(np.float32)
            s = vectors @ q.T                                                                  # (N, K)
            near = np.argpartition(-s, a.depth, axis=0)[:a.depth].ravel()
            succ = rng.choice(n, 30, replace=False)
            head = np.unique(np.concatenate([near, succ]))
            p_succ = np.zeros(len(head), np.float32)
            p_succ[np.searchsorted(head, succ)] = rng.dirichlet(np.ones(30))
            logits = np.log((w * np.exp(s[head] / a.tau)).sum(1))                              # (C,)
            t0 = time.perf_counter()
            z_exact = exact(q, w, head)
            t1 = time.perf_counter()
            z_est = est(q, w, head)
            t2 = time.perf_counter()
            t_exact.append(t1 - t0)
            t_est.append(t2 - t1)
            err.append(abs(z_est - z_exact))
            top = [np.argsort(-np.logaddexp(np.log1p(-a.weight) + logits - z, np.log(a.weight * p_succ + 1e-30)),
                              kind="stable")[:a.k] for z in (z_exact, z_est)]
            same += bool(np.array_equal(*top))
        ms = lambda t: f"{1e3 * np.median(t):.2f} / {1e3 * np.percentile(t, 95):.2f}"   # noqa: E731
        print(f"| {n:,} | {ms(t_exact)} | {ms(t_est) if not est.exact else '(exact)'} | "
              f"{np.median(err):.4f} / {np.max(err):.4f} | {same}/{a.requests} |")
    print(f"load average {os.getloadavg()[0]:.1f} at the end")
    return 0


def _unit(x: np.ndarray) -> np.ndarray:
    return (x / np.linalg.norm(x, axis=-1, keepdims=True)).astype(np.float32)


if __name__ == "__main__":
    sys.exit(main())
