"""Trainer: quality on planted interests, the popularity gate on alias challenger, K = 1, resume
after a crash, DDP."""
from __future__ import annotations

import os
import subprocess
import sys
from collections import Counter

import numpy as np
import pytest

from guim_features.config import load_config

# small and fast; the default TrainConfig is sized for real data
TINY = {"d": 32, "layers": 1, "heads": 2, "batch_size": 32, "epochs": 8, "patience": 8, "lr": 3e-3,
        "warmup_steps": 10, "threads": 2}


@pytest.fixture(scope="module")
def planted(tmp_path_factory):
    from silver import write_silver

    ws = tmp_path_factory.mktemp("planted") / "ws"
    info = write_silver(ws / "lakehouse", users=240, items=120, categories=6, events=30, seed=3)
    return ws, info


@pytest.fixture(scope="module")
def trained_k4(planted):
    """Registered in the planted workspace's MLflow (version 1)."""
    from guim_features.train import train_model

    ws, _ = planted
    return train_model(load_config(ws), overrides={**TINY, "K": 4}, progress=False)


def popularity_recall20(info, target: int = -1) -> float:
    """Hand-written popularity ranking: train counts, the user's items before the target excluded;
    target -1 = the test event, -2 = the valid event."""
    counts = Counter(v for seq, sp in zip(info["sequences"], info["splits"]) for v, s in zip(seq, sp) if s == 0)
    hits = 0
    for seq in info["sequences"]:
        seen = set(seq[:target])
        ranked = [i for i, _ in sorted(counts.items(), key=lambda kv: (-kv[1], kv[0])) if i not in seen][:20]
        hits += seq[target] in ranked
    return hits / len(info["sequences"])


def gate_tags(ws, version: str) -> tuple:
    import mlflow

    cfg = load_config(ws)
    mv = mlflow.MlflowClient(cfg.mlflow_uri, cfg.mlflow_uri).get_model_version("guim", version)
    return (mv, float(mv.tags["gate.valid_recall_at_20.model"]), float(mv.tags["gate.valid_recall_at_20.popularity"]))


def test_a_model_that_learned_the_structure_becomes_the_challenger(trained_k4, planted):
    ws, info = planted
    mv, model, pop = gate_tags(ws, trained_k4.model_version)
    # the ranking it is compared with is popularity on the valid event (hand-written; ties broken
    # differently, hence the tolerance)
    assert pop == pytest.approx(popularity_recall20(info, -2), abs=0.02)
    assert model > pop and mv.tags["gate.decision"] == "accepted" and "challenger" in mv.aliases
    assert trained_k4.challenger and f"{model:.4f} > popularity {pop:.4f}" in trained_k4.gate


def test_a_model_no_better_than_popularity_is_registered_without_the_alias(tmp_path, capsys):
    """Events drawn independently from a skewed popularity: nothing in a history predicts the next
    item, so counting items is the best ranking there is. One epoch at a learning rate of 1e-6
    leaves the model where it started, far below it."""
    from silver import write_silver

    from guim_features.cli import main
    from guim_features.embedder import load_embedder
    from guim_features.errors import GuimError

    ws = tmp_path / "ws"
    info = write_silver(ws / "lakehouse", users=150, items=100, events=12, popularity=1.0)
    sets = sum((["--set", f"train.{k}={v}"] for k, v in {**TINY, "epochs": 1, "lr": "0.000001"}.items()), [])
    assert main(["train", "--workspace", str(ws), *sets]) == 0
    out = capsys.readouterr()
    mv, model, pop = gate_tags(ws, "1")
    assert pop == pytest.approx(popularity_recall20(info, -2), abs=0.02) and pop > 0.25
    assert model < pop and mv.tags["gate.decision"] == "refused" and mv.aliases == []
    assert f"valid Recall@20 {model:.4f} <= popularity {pop:.4f}" in out.err
    assert "registered WITHOUT alias 'challenger'" in out.err
    assert "registered model version 1 (WITHOUT alias challenger" in out.out
    cfg = load_config(ws)
    # what `guim embed` says when the default model is missing for this reason
    with pytest.raises(GuimError, match="version 1 was registered without alias 'challenger' because it is not "
                                        "better than popularity"):
        load_embedder("models:/guim@challenger", tracking_uri=cfg.mlflow_uri)


def test_k4_beats_popularity_twice(trained_k4, planted):
    _, info = planted
    pop = popularity_recall20(info)
    m = trained_k4.metrics
    assert 0 < pop < 0.4
    assert m["test_recall@20"] >= 2 * pop, (m, pop)
    assert m["epochs"] == TINY["epochs"] and 1 <= m["best_epoch"] <= TINY["epochs"]


def test_interests_point_at_different_planted_interests(trained_k4, planted):
    """Measure: each interest's top-category = majority category of its 10 highest-scoring items.
    For users with >= 2 planted categories, count how many distinct planted categories their K
    interests' top-categories cover; a single-vector model covers at most 1."""
    _, info = planted
    emb = trained_k4.embedder
    cat = emb.catalogue()                                                    # (V, d)
    ids = np.arange(3, len(cat))
    users = [u for u, p in enumerate(info["planted"]) if len(p) >= 2]
    seqs = [np.array(info["sequences"][u][:-1]) for u in users]
    interests, weights = emb.encode_users(seqs, [np.ones(len(s), int) for s in seqs],
                                          [np.full(len(s), 8) for s in seqs])
    covered = []
    for u, vecs in zip(users, interests):
        tops = set()
        for v in vecs:
            best = ids[np.argsort(-(cat[3:] @ v))[:10]]
            tops.add(Counter(info["item_category"][int(i)] for i in best).most_common(1)[0][0])
        covered.append(len(tops & set(info["planted"][u])))
    assert np.mean([c >= 2 for c in covered]) >= 0.5, Counter(covered)


def test_k1_trains_and_scores(planted):
    from guim_features.train import train_model

    ws, info = planted
    res = train_model(load_config(ws), overrides={**TINY, "K": 1, "epochs": 4}, seed=1, mlflow_log=False,
                      register=False, progress=False)
    emb = res.embedder
    assert emb.K == 1
    i, w = emb.encode_users([np.array(info["sequences"][0][:-1])], [np.ones(29, int)], [np.zeros(29, int)])
    assert i.shape == (1, 1, 32) and np.allclose(w, 1.0)
    assert emb.score(i, w, emb.catalogue()).shape == (1, 123)
    assert res.metrics["test_recall@20"] > popularity_recall20(info)


def test_resume_after_a_crash(tmp_path):
    from silver import write_silver

    from guim_features.cli import main
    from guim_features.embedder import load_embedder
    from guim_features.train import train_model

    ws = tmp_path / "ws"
    write_silver(ws / "lakehouse", users=60, items=40, events=12)
    over = {**TINY, "epochs": 3}
    cfg = load_config(ws, [f"train.{k}={v}" for k, v in over.items()])

    class Crash(RuntimeError):
        pass

    def crash(epoch, rec):
        if epoch == 1:
            raise Crash("simulated crash after epoch 2")

    with pytest.raises(Crash):
        train_model(cfg, progress=False, on_epoch_end=crash)
    last = ws / "checkpoints" / "last.pt"
    assert last.exists()
    import torch
    state = torch.load(last, weights_only=False)
    assert state["epoch"] == 2 and state["run_id"]
    # the CLI resumes the same MLflow run, finishes epoch 3, registers and removes the checkpoint
    assert main(["train", "--workspace", str(ws), "--resume"] + sum(
        (["--set", f"train.{k}={v}"] for k, v in over.items()), [])) == 0
    assert not last.exists()
    emb = load_embedder(str(ws / "checkpoints" / "model.pt"))
    assert emb.meta["metrics"]["epochs"] == 3
    import mlflow
    client = mlflow.MlflowClient(cfg.mlflow_uri)
    run = client.get_run(state["run_id"])
    assert run.info.status == "FINISHED"
    steps = [m.step for m in client.get_metric_history(run.info.run_id, "valid_recall_at_20")]
    assert sorted(steps) == [1, 2, 3]
    with pytest.raises(SystemExit):
        main(["train", "--workspace", str(ws), "--resume", "--bogus"])


@pytest.mark.slow
def test_ddp_two_processes_train_register_and_predict(tmp_path):
    from silver import write_silver

    ws = tmp_path / "ws"
    write_silver(ws / "lakehouse", users=60, items=40, events=12)
    sets = sum((["--set", f"train.{k}={v}"] for k, v in {**TINY, "epochs": 2, "threads": 2}.items()), [])
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    out = subprocess.run([sys.executable, "-m", "guim_features.cli", "train", "--workspace", str(ws),
                          "--num-processes", "2", *sets], capture_output=True, text=True, env=env, timeout=600)
    assert out.returncode == 0, out.stderr[-3000:]
    assert "registered model version 1" in out.stdout
    code = ("import mlflow, numpy as np, pandas as pd; mlflow.set_tracking_uri(%r); "
            "m = mlflow.pyfunc.load_model('models:/guim/1'); "
            "o = m.predict(pd.DataFrame({'item_idx': [np.array([3, 4, 5])], 'behavior': [np.array([1, 1, 1])],"
            " 'gaps': [np.array([0, 1, 2])]})); print(len(o['interests'][0]), len(o['weights'][0]))"
            % load_config(ws).mlflow_uri)
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr[-3000:]
    assert out.stdout.split()[-2:] == [str(4 * 32), "4"]


def test_non_finite_loss_stops_with_the_step_named(tmp_path):
    """lr = 1e30: the first step (initial weights) has a finite loss; its update makes the weights
    overflow, so the loss of step 2 is not finite and training must stop there, saying so."""
    from silver import write_silver

    from guim_features.embedder import CHECKPOINT
    from guim_features.errors import GuimError
    from guim_features.train import train_model

    write_silver(tmp_path / "ws" / "lakehouse", users=40, items=30, events=12)
    with pytest.raises(GuimError, match=r"loss is (nan|inf|-inf) at epoch 1, step 2"):
        train_model(load_config(tmp_path / "ws"), overrides={"d": 16, "layers": 1, "batch_size": 8, "epochs": 2,
                                                             "lr": 1e30, "warmup_steps": 1, "grad_clip": 0.0},
                    mlflow_log=False, register=False, progress=False)
    assert not (tmp_path / "ws" / "checkpoints" / CHECKPOINT).exists()   # nothing half-trained is saved


def test_max_steps_caps_each_epoch_and_final_metrics_rank_a_fixed_subset(tmp_path):
    """40 users with 10 training events, windows of max_len + 1 = 5: ceil(9 / 4) = 3 windows each,
    120 windows = 15 steps of 8. Capped at 3 steps per epoch; the final metrics over 7 users are
    multiples of 1/7 (Recall@k: hits / users)."""
    from silver import write_silver

    from guim_features.errors import GuimError
    from guim_features.train import train_model

    write_silver(tmp_path / "ws" / "lakehouse", users=40, items=30, events=12)
    cfg = load_config(tmp_path / "ws")
    small = {"d": 16, "layers": 1, "heads": 1, "K": 2, "max_len": 4, "batch_size": 8, "warmup_steps": 1}
    run = lambda **kw: train_model(cfg, overrides={**small, **kw}, mlflow_log=False, progress=False)  # noqa: E731
    whole = run(epochs=1)
    assert [r["steps"] for r in whole.history] == [15]
    capped = run(epochs=2, max_steps=3, final_eval_users=7, valid_users=7)
    assert [r["steps"] for r in capped.history] == [3, 3]
    for key in ("valid_recall@20", "test_recall@20", "popularity_valid_recall@20"):
        assert abs(capped.metrics[key] * 7 - round(capped.metrics[key] * 7)) < 1e-9, key
    assert abs(whole.metrics["test_recall@20"] * 40 - round(whole.metrics["test_recall@20"] * 40)) < 1e-9
    with pytest.raises(GuimError, match="train.max_steps=-1"):
        run(max_steps=-1)


def test_ranking_batches_capped_by_the_score_budget_give_the_same_metrics(trained_k4, planted, monkeypatch):
    """A large catalogue shrinks the ranking batches (train.EVAL_LOGITS scores each); the metrics are
    per-user sums, so one user per batch must give exactly what 512 per batch give."""
    import guim_features.train as T

    ws, _ = planted
    cfg, model = load_config(ws), trained_k4.embedder.model
    args = ("test", 50, 512, T._device(cfg.train))
    whole = T.evaluate(model, cfg, *args)
    monkeypatch.setattr(T, "EVAL_LOGITS", model.args["n_items"])        # room for one user's scores
    assert T.evaluate(model, cfg, *args) == pytest.approx(whole, abs=1e-9)
    assert whole["test_recall@20"] == pytest.approx(trained_k4.metrics["model_only_test_recall@20"], abs=1e-9)


def test_checkpoints_written_at_once_by_several_runs_never_fail_or_leave_temp_files(tmp_path):
    import threading

    import torch

    from guim_features.train import _save_checkpoint

    path, errors = tmp_path / "checkpoints" / "last.pt", []

    def run(i):   # with one shared temp file name a fifth of these writes failed (FileNotFoundError)
        for _ in range(30):
            try:
                _save_checkpoint(path, {"run": i, "w": torch.full((1000,), float(i))})
            except Exception as e:   # noqa: BLE001 - every failure is the finding
                errors.append(repr(e))

    threads = [threading.Thread(target=run, args=(i,)) for i in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == []
    state = torch.load(path, weights_only=False)                  # whole: one run's last write
    assert state["run"] in range(4) and torch.equal(state["w"], torch.full((1000,), float(state["run"])))
    assert [p.name for p in path.parent.iterdir()] == ["last.pt"]


def test_weight_average_is_the_running_mean_and_is_what_gets_validated_and_kept(tmp_path):
    """WeightAverage by hand: decay 0.5 over the iterates 1, 3, 6 -> 1, 2, 4. In training (the
    15-step epochs of the test above) the first epoch's best weights are the average after 15
    updates, not the last step's weights, and a decay outside [0, 1) is refused."""
    import torch
    from silver import write_silver

    from guim_features.errors import GuimError
    from guim_features.train import WeightAverage, train_model

    m = torch.nn.Linear(1, 1, bias=False)
    avg = WeightAverage(m, 0.5)
    for w, want in ((1.0, 1.0), (3.0, 2.0), (6.0, 4.0)):
        with torch.no_grad():
            m.weight.fill_(w)
        avg.update(m)
        assert avg.module.weight.item() == want and m.weight.item() == w

    write_silver(tmp_path / "ws" / "lakehouse", users=40, items=30, events=12)
    cfg = load_config(tmp_path / "ws")
    small = {"d": 16, "layers": 1, "heads": 1, "K": 2, "max_len": 4, "batch_size": 8, "warmup_steps": 1,
             "epochs": 2, "weight_average": 0.9}

    class Stop(RuntimeError):
        pass

    def stop(epoch, rec):
        raise Stop

    with pytest.raises(Stop):
        train_model(cfg, overrides=small, mlflow_log=False, register=False, progress=False, on_epoch_end=stop)
    state = torch.load(tmp_path / "ws" / "checkpoints" / "last.pt", weights_only=False)
    assert state["weight_average"]["n"] == 15
    kept, averaged, last = state["best_state"], state["weight_average"]["module"], state["model"]
    assert all(torch.equal(kept[k], averaged[k]) for k in kept)
    assert any(not torch.equal(kept[k], last[k]) for k in kept if kept[k].is_floating_point())
    with pytest.raises(GuimError, match="train.weight_average=1.0"):
        train_model(cfg, overrides={**small, "weight_average": 1.0}, mlflow_log=False, progress=False)


def test_the_item_graph_of_the_training_parts_is_built_trained_with_and_saved(tmp_path):
    import torch
    from silver import write_silver

    from guim_features.data import item_neighbours
    from guim_features.embedder import CHECKPOINT, from_checkpoint
    from guim_features.train import train_model

    write_silver(tmp_path / "ws" / "lakehouse", users=40, items=30, events=12)
    cfg = load_config(tmp_path / "ws")
    res = train_model(cfg, overrides={"d": 16, "layers": 1, "heads": 1, "K": 2, "batch_size": 8, "epochs": 1,
                                      "max_steps": 2, "item_graph": 1.0, "graph_neighbours": 4},
                      mlflow_log=False, register=False, progress=False)
    nbr, w = item_neighbours(cfg, res.embedder.model.args["n_items"], 4)
    assert (nbr > 0).sum() > 30                                         # the planted cycles give neighbours
    for m in (res.embedder.model, from_checkpoint(tmp_path / "ws" / "checkpoints" / CHECKPOINT).model):
        assert torch.equal(m.tower.nbr, torch.as_tensor(nbr)) and torch.allclose(m.tower.nbr_w, torch.as_tensor(w))


def test_lr_schedule_restarts_its_warm_up_and_cosine_after_pretraining():
    from guim_features.train import _lr_lambda

    f = _lr_lambda(2, 10, restart=6)     # warm-up 2 steps; a 6-step pretraining cycle, then 10 steps
    # by hand: warm-up (s + 1) / 2; cosine 0.1 + 0.45 (1 + cos(pi (s - 2) / (n - 2)))
    assert [f(0), f(1)] == [0.5, 1.0]
    assert f(5) == pytest.approx(0.1 + 0.45 * (1 - 2 ** -0.5))        # 3/4 through the first cosine
    assert [f(6), f(7)] == [0.5, 1.0]                                 # the restart warms up again
    assert f(11) == pytest.approx(0.1 + 0.45 * (1 + np.cos(np.pi * 3 / 8)))
    assert f(16) == pytest.approx(0.1) and f(40) == pytest.approx(0.1)
    assert _lr_lambda(2, 10)(5) == pytest.approx(0.1 + 0.45 * (1 + np.cos(np.pi * 3 / 8)))   # no restart


def test_pretraining_epochs_train_masked_items_alone_then_next_item_from_a_fresh_warm_up(tmp_path):
    """train.pretrain_epochs = 1: the first epoch's steps log only the masked-item loss, the next
    epoch's only the next-item loss; validation (epoch 1) and early stopping see the next-item epochs
    only; the learning rate falls back to the warm-up's first value when next-item training starts."""
    import mlflow
    from silver import write_silver

    from guim_features.errors import GuimError
    from guim_features.train import train_model

    write_silver(tmp_path / "ws" / "lakehouse", users=40, items=30, events=12)
    cfg = load_config(tmp_path / "ws")
    small = {"d": 16, "layers": 1, "heads": 1, "K": 2, "max_len": 4, "batch_size": 8, "warmup_steps": 4,
             "lr": 0.01, "epochs": 1, "pretrain_epochs": 1, "log_every": 1, "profile_steps": 0}
    res = train_model(cfg, overrides=small, register=False, progress=False)
    client = mlflow.MlflowClient(cfg.mlflow_uri)
    hist = {k: {m.step: m.value for m in client.get_metric_history(res.run_id, k)}
            for k in ("train_mlm", "train_next", "pretrain_loss", "lr", "valid_recall_at_20")}
    n = 15                                                   # 40 users' windows of 4 in batches of 8
    assert sorted(hist["train_mlm"]) == list(range(1, n + 1))
    assert sorted(hist["train_next"]) == list(range(n + 1, 2 * n + 1))
    assert list(hist["pretrain_loss"]) == [n]
    assert list(hist["valid_recall_at_20"]) == [1]
    assert [r["epoch"] for r in res.history] == [1] and res.metrics["epochs"] == 1
    # lr logged after step s is the one step s + 1 will take: the restart's first warm-up value at s = n
    assert max(hist["lr"][s] for s in range(1, n)) == pytest.approx(0.01)
    assert hist["lr"][n] == pytest.approx(0.01 / 4)
    assert res.embedder.model.args["next_weight"] == 1.0 and res.embedder.model.args["mlm_weight"] == 0.0
    with pytest.raises(GuimError, match="train.pretrain_epochs=-1"):
        train_model(cfg, overrides={**small, "pretrain_epochs": -1}, mlflow_log=False, progress=False)
