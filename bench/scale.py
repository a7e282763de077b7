"""The whole flow at scale: synthetic raw logs -> ingest -> sequences -> train -> embed -> publish (Redis),
each stage in its own process, with wall time and peak memory per stage.

    python bench/scale.py                                   # 1,000,000 users x 200,000 items x ~50M events
    python bench/scale.py --users 200000 --workspace /tmp/scale200k
    python bench/scale.py --workspace WS --stages train,embed,publish     # rerun from a failed stage

Stages: ``data`` writes the raw input as Parquet in chunks of ``--chunk-users`` users (the project's
synthetic generator, :mod:`guim_features.ingest.synthetic`: one catalogue, then one seeded population per
chunk, so generation never holds more than one chunk; microsecond timestamps) and is skipped when the raw
files for the same parameters exist; ``ingest`` loads them with ``guim ingest --source table``; then
``guim sequences --full``, ``guim train`` (one epoch, sampled negatives; ``--train-steps N`` stops after N
steps and the full epoch's time is extrapolated from the measured rate, labelled as such), ``guim embed``
(as of the day after the log ends, with the version just trained) and ``guim publish`` into Redis
(``--redis host:port``, else a throw-away ``redis-server``). Each stage first removes its own earlier
outputs in the workspace, so a rerun measures a first run, not an incremental one.

Memory, per stage: ``driver`` is the peak RSS of the stage's Python process itself (its own
``ru_maxrss``, exact); ``jvm`` the peak RSS of the Spark driver JVM it starts (local mode: the whole
Spark engine; ``VmHWM`` sampled every 0.5 s); ``py workers`` the largest sampled sum of Spark's Python
workers (the model copies of ``guim embed``); ``tree`` the largest sampled sum over all processes of the
stage. Load averages (1 min) before and after each stage say how busy the machine was. The table is
printed and written to ``<workspace>/scale_report.json``; ``<workspace>/logs/scale_<stage>.log`` holds
each stage's output.
"""
from __future__ import annotations

import argparse
import json
import math
import os
import re
import shutil
import subprocess
import sys
import threading
import time
from contextlib import nullcontext
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
STAGES = ["data", "ingest", "sequences", "train", "embed", "publish"]
BRONZE = ["events", "items", "users", "quarantine"]
SILVER = ["item_index", "vocab", "feature_stats", "item_features", "user_sequences", "labels_users",
          "labels_items", "labels_future"]
GOLD = ["user_embeddings", "item_embeddings"]
STATE = "scale_report.json"


# -- raw data ----------------------------------------------------------------------------------------

def generate_raw(out: str | Path, users: int, items: int, events_per_user: int, chunk_users: int = 50_000,
                 categories: int = 100, days: int = 30, seed: int = 7, start_date: str = "2026-01-01") -> dict:
    """Write ``items.parquet``, ``users/part-*.parquet`` and ``events/part-*.parquet`` under ``out``
    and return the manifest (also written as ``manifest.json``, last: its presence marks a complete set).

    The catalogue is drawn once from ``seed``; chunk ``j`` of users (ids ``u{j * chunk_users}`` …) from
    its own generator seeded ``[seed, j]``, so memory holds one chunk and any chunk can be redrawn alone.
    Timestamps are written as microseconds (UTC): Spark reads no nanosecond Parquet timestamps."""
    import numpy as np
    import pyarrow as pa
    import pyarrow.parquet as pq

    from guim_features.ingest.synthetic import catalogue, population

    if users < 1 or chunk_users < 1 or items < categories or categories < 2 or events_per_user < 1:
        raise ValueError("need users >= 1, chunk_users >= 1, items >= categories >= 2, events_per_user >= 1")
    out = Path(out)
    if out.exists():
        shutil.rmtree(out)
    (out / "events").mkdir(parents=True)
    (out / "users").mkdir()
    cat = catalogue(np.random.default_rng(seed), items, categories)
    t = pa.Table.from_pandas(cat.items, preserve_index=False)
    t = t.set_column(t.schema.get_field_index("image"), "image", t["image"].cast(pa.list_(pa.float32())))
    pq.write_table(t, out / "items.parquet")
    n_events, chunks = 0, math.ceil(users / chunk_users)
    for j in range(chunks):
        first = j * chunk_users
        n = min(chunk_users, users - first)
        ev, us = population(np.random.default_rng([seed, j]), cat, n, events_per_user, days, start_date, first)
        ev = pa.Table.from_pandas(ev, preserve_index=False)
        ev = ev.set_column(ev.schema.get_field_index("ts"), "ts", ev["ts"].cast(pa.timestamp("us", tz="UTC")))
        pq.write_table(ev, out / "events" / f"part-{j:05d}.parquet")
        us = pa.Table.from_pandas(us, preserve_index=False)
        us = us.set_column(us.schema.get_field_index("occupation"), "occupation", us["occupation"].cast(pa.string()))
        pq.write_table(us, out / "users" / f"part-{j:05d}.parquet")
        n_events += ev.num_rows
        print(f"data: chunk {j + 1}/{chunks}: {first + n:,} users, {n_events:,} events", flush=True)
    manifest = {"users": users, "items": items, "events_per_user": events_per_user, "chunk_users": chunk_users,
                "categories": categories, "days": days, "seed": seed, "start_date": start_date,
                "events": n_events, "chunks": chunks}
    (out / "manifest.json").write_text(json.dumps(manifest, indent=1))
    return manifest


def _raw_params(a) -> dict:
    return {"users": a.users, "items": a.items, "events_per_user": a.events_per_user, "chunk_users": a.chunk_users,
            "categories": a.categories, "days": a.days, "seed": a.seed, "start_date": a.start_date}


def _manifest(raw: Path) -> dict | None:
    try:
        return json.loads((raw / "manifest.json").read_text())
    except (OSError, ValueError):
        return None


# -- measuring one stage -------------------------------------------------------------------------------

def _proc_tree(root: int) -> dict[int, int]:
    """pid -> parent pid of ``root`` and all its descendants (from /proc)."""
    parent = {}
    for d in os.listdir("/proc"):
        if d.isdigit():
            try:
                stat = Path(f"/proc/{d}/stat").read_text()
                parent[int(d)] = int(stat[stat.rindex(")") + 2:].split()[1])
            except (OSError, ValueError, IndexError):
                pass
    tree, frontier = {root: parent.get(root, 0)}, [root]
    while frontier:
        p = frontier.pop()
        for c, pp in parent.items():
            if pp == p and c not in tree:
                tree[c] = p
                frontier.append(c)
    return tree


def _proc_info(pid: int) -> tuple[str, int, int, float] | None:
    """(kind, VmRSS kB, VmHWM kB, cpu seconds) of a process, or None when it is gone."""
    try:
        status = Path(f"/proc/{pid}/status").read_text()
        cmd = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    kb = {k: int(v.split()[0]) for k, v in (line.split(":", 1) for line in status.splitlines())
          if k in ("VmRSS", "VmHWM")}
    fields = stat[stat.rindex(")") + 2:].split()
    cpu = (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
    exe = os.path.basename(cmd[0].decode(errors="replace")) if cmd and cmd[0] else ""
    joined = b" ".join(cmd)
    kind = ("jvm" if exe == "java" else "py_worker" if b"pyspark" in joined and b"daemon" in joined or
            b"pyspark.worker" in joined else "other")
    return kind, kb.get("VmRSS", 0), kb.get("VmHWM", 0), cpu


class Monitor(threading.Thread):
    """Samples a stage's process tree every ``every`` seconds: peaks per kind, CPU seconds per pid, and
    a heartbeat line every ``beat`` seconds."""

    def __init__(self, root: int, stage: str, every: float = 0.5, beat: float = 60.0):
        super().__init__(daemon=True)
        self.root, self.stage, self.every, self.beat = root, stage, every, beat
        self.stop = threading.Event()
        self.peak = {"driver_hwm": 0, "jvm_hwm": 0, "py_workers": 0, "tree": 0}
        self.cpu: dict[int, float] = {}
        self.t0 = time.time()

    def run(self) -> None:
        last_beat = time.time()
        while not self.stop.wait(self.every):
            rss_now, workers, tree = 0, 0, 0
            for pid in _proc_tree(self.root):
                info = _proc_info(pid)
                if info is None:
                    continue
                kind, rss, hwm, cpu = info
                self.cpu[pid] = max(self.cpu.get(pid, 0.0), cpu)
                tree += rss
                if pid == self.root:
                    self.peak["driver_hwm"] = max(self.peak["driver_hwm"], hwm)
                    rss_now = rss
                elif kind == "jvm":
                    self.peak["jvm_hwm"] = max(self.peak["jvm_hwm"], hwm)
                elif kind == "py_worker":
                    workers += rss
            self.peak["py_workers"] = max(self.peak["py_workers"], workers)
            self.peak["tree"] = max(self.peak["tree"], tree)
            if time.time() - last_beat >= self.beat:
                last_beat = time.time()
                print(f"  [{self.stage}] {time.time() - self.t0:,.0f}s: driver RSS {rss_now / 2**20:.2f} GiB, "
                      f"whole stage {tree / 2**20:.2f} GiB, load {os.getloadavg()[0]:.1f}", flush=True)


def run_stage(stage: str, argv: list[str], log: Path, env: dict) -> dict:
    """Run ``argv`` (``guim ...`` or ``generate JSON``) in a child Python process; returns wall time,
    exit code, memory peaks (GiB) and load averages."""
    log.parent.mkdir(parents=True, exist_ok=True)
    usage = log.with_suffix(".rusage.json")
    usage.unlink(missing_ok=True)
    cmd = [sys.executable, str(Path(__file__).resolve()), "_child", str(usage), *argv]
    load0, t0 = os.getloadavg()[0], time.time()
    with open(log, "w") as f:
        f.write("$ " + " ".join(argv) + "\n")
        f.flush()
        proc = subprocess.Popen(cmd, stdout=f, stderr=subprocess.STDOUT, env=env, cwd=ROOT)
        mon = Monitor(proc.pid, stage)
        mon.start()
        _, status, ru = os.wait4(proc.pid, 0)
        proc.returncode = os.waitstatus_to_exitcode(status)
        mon.stop.set()
        mon.join()
    wall = time.time() - t0
    own = json.loads(usage.read_text()) if usage.exists() else {}
    gib = 1 / 2**20                                        # kB -> GiB
    return {"stage": stage, "rc": proc.returncode, "wall_s": round(wall, 1),
            "driver_gib": round((own.get("maxrss_kb") or mon.peak["driver_hwm"]) * gib, 3),
            "jvm_gib": round(mon.peak["jvm_hwm"] * gib, 3), "py_workers_gib": round(mon.peak["py_workers"] * gib, 3),
            "tree_gib": round(mon.peak["tree"] * gib, 3), "cpu_s": round(sum(mon.cpu.values()), 1),
            "load_before": round(load0, 2), "load_after": round(os.getloadavg()[0], 2),
            "wait4_maxrss_gib": round(ru.ru_maxrss * gib, 3)}


def _child(usage: str, argv: list[str]) -> int:
    """Inside the stage's process: run it, then record this process's own peak RSS."""
    import resource

    rc = 1
    try:
        if argv[0] == "guim":
            from guim_features.cli import main
            rc = main(argv[1:])
        elif argv[0] == "generate":
            generate_raw(**json.loads(argv[1]))
            rc = 0
        else:
            raise SystemExit(f"unknown child command {argv[0]!r}")
    finally:
        Path(usage).write_text(json.dumps({"maxrss_kb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss,
                                           "rc": rc}))
    return rc


# -- the run ------------------------------------------------------------------------------------------

def _rows(path: Path) -> int | None:
    """Rows of a Delta table (from its Parquet footers), None when absent."""
    from deltalake import DeltaTable

    try:
        return DeltaTable(str(path)).to_pyarrow_dataset().count_rows()
    except Exception:
        return None


def _full_epoch_windows(lakehouse: Path, L: int) -> int | None:
    """Training windows of one whole epoch (train.windows=all): per user ceil((n_train - 1) / L)."""
    import numpy as np
    from deltalake import DeltaTable

    try:
        n = DeltaTable(str(lakehouse / "user_sequences")).to_pyarrow_table(columns=["n_train"])["n_train"].to_numpy()
    except Exception:
        return None
    return int(np.where(n >= 2, np.ceil((n - 1) / L), 0).sum())


def _redis_memory(address: str) -> dict:
    """used_memory, keys and MEMORY USAGE / payload per user and item key (a sample of keys)."""
    import redis

    host, port = address.split(",")[0].rsplit(":", 1)
    r = redis.Redis(host=host, port=int(port))
    info = r.info("memory")
    out = {"used_memory": info["used_memory"], "used_memory_rss": info.get("used_memory_rss"),
           "keys": r.dbsize()}
    sample: dict[str, list] = {"user": [], "item": []}
    for key in r.scan_iter(count=1000):
        kind = "user" if b"user_id" in key else "item" if b"item_id" in key else None
        if kind is None or len(sample[kind]) >= 200:
            if all(len(v) >= 200 for v in sample.values()):
                break
            continue
        payload = len(key) + sum(len(f) + len(v) for f, v in r.hgetall(key).items())
        sample[kind].append((r.memory_usage(key, samples=0) or 0, payload))
    for kind, rows in sample.items():
        if rows:
            out[f"{kind}_key_bytes"] = round(sum(m for m, _ in rows) / len(rows))
            out[f"{kind}_payload_bytes"] = round(sum(p for _, p in rows) / len(rows))
    return out


def _clear(lakehouse: Path, tables: list[str]) -> None:
    gone = [t for t in tables if (lakehouse / t).exists()]
    for t in gone:
        shutil.rmtree(lakehouse / t)
    if gone:
        print(f"  removed earlier {', '.join(gone)} (a rerun measures a first run)", flush=True)


def _fmt(n) -> str:
    return "" if n is None else f"{n:,}" if isinstance(n, int) else str(n)


def table(results: dict) -> str:
    lines = ["| stage | wall s | driver peak RSS GiB | JVM peak GiB | Spark Python workers GiB | rows in | rows out "
             "| CPU s | load before → after |",
             "| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | --- |"]
    for s in STAGES:
        r = results.get(s)
        if r:
            gib = lambda x: f"{x:.2f}" if x else "–"  # noqa: E731
            lines.append(f"| {s} | {r['wall_s']:,.1f} | {r['driver_gib']:.2f} | {gib(r['jvm_gib'])} | "
                         f"{gib(r['py_workers_gib'])} | {_fmt(r.get('rows_in'))} | {_fmt(r.get('rows_out'))} | "
                         f"{r['cpu_s']:,.0f} | {r['load_before']:.1f} → {r['load_after']:.1f} |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0], epilog="\n".join(__doc__.splitlines()[2:6]),
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--users", type=int, default=1_000_000)
    p.add_argument("--items", type=int, default=200_000)
    p.add_argument("--events-per-user", type=int, default=50, dest="events_per_user")
    p.add_argument("--categories", type=int, default=100)
    p.add_argument("--days", type=int, default=30)
    p.add_argument("--seed", type=int, default=7)
    p.add_argument("--start-date", default="2026-01-01", dest="start_date")
    p.add_argument("--chunk-users", type=int, default=50_000, dest="chunk_users",
                   help="users generated and written per Parquet file")
    p.add_argument("--workspace", default="/tmp/guim_scale")
    p.add_argument("--raw", help="raw Parquet folder (default: WORKSPACE/raw)")
    p.add_argument("--stages", default=",".join(STAGES), help=f"comma-separated, of {','.join(STAGES)}")
    p.add_argument("--train-steps", type=int, default=0, dest="train_steps",
                   help="stop training after this many steps and extrapolate the epoch (0 = the whole epoch)")
    p.add_argument("--eval-users", type=int, default=10_000, dest="eval_users",
                   help="users ranked by the per-epoch and final valid/test metrics and the popularity gate")
    p.add_argument("--redis", help="host:port of a Redis to publish into (default: a throw-away redis-server)")
    p.add_argument("--driver-memory", default="6g", dest="driver_memory", help="spark.driver_memory (the JVM)")
    p.add_argument("--shuffle-partitions", type=int, default=0, dest="shuffle_partitions",
                   help="spark.shuffle_partitions (0 = one per ~2.5M events, at least 4)")
    p.add_argument("--set", action="append", default=[], dest="overrides", metavar="SECTION.KEY=VALUE",
                   help="extra guim --set override for every stage (repeatable)")
    a = p.parse_args(argv)
    stages = [s.strip() for s in a.stages.split(",") if s.strip()]
    unknown = [s for s in stages if s not in STAGES]
    if unknown:
        p.error(f"unknown stage(s) {unknown}; choose from {','.join(STAGES)}")
    stages = [s for s in STAGES if s in stages]
    ws = Path(a.workspace).resolve()
    raw = Path(a.raw).resolve() if a.raw else ws / "raw"
    lake = ws / "lakehouse"
    ws.mkdir(parents=True, exist_ok=True)
    state_path = ws / STATE
    state = json.loads(state_path.read_text()) if state_path.exists() else {}
    results = state.setdefault("stages", {})
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT)] + [x for x in [os.environ.get("PYTHONPATH")] if x])}
    env.setdefault("PYTHONUNBUFFERED", "1")

    man = _manifest(raw)
    wanted = _raw_params(a)
    if "data" not in stages and stages and man is None:
        p.error(f"no raw data at {raw} (manifest.json missing); add 'data' to --stages")
    if "data" not in stages and man and {k: man.get(k) for k in wanted} != wanted:
        print(f"scale: note: using the raw data at {raw} as it is: "
              + ", ".join(f"{k}={man.get(k)}" for k in wanted if man.get(k) != wanted[k]), flush=True)
    events_hint = (man or {}).get("events") or a.users * a.events_per_user
    parts = a.shuffle_partitions or max(4, round(events_hint / 2.5e6))
    common = ["--workspace", str(ws), "--set", f"spark.driver_memory={a.driver_memory}",
              "--set", f"spark.shuffle_partitions={parts}", "--set", f"embed.partitions={max(2, parts // 2)}"]
    for o in a.overrides:
        common += ["--set", o]
    print(f"scale: workspace {ws}, raw {raw}, stages {','.join(stages)}; "
          f"spark.shuffle_partitions={parts}, driver memory {a.driver_memory}", flush=True)

    for stage in stages:
        t_start = time.strftime("%H:%M:%S")
        extra: dict = {}
        if stage == "data":
            if man and {k: man.get(k) for k in wanted} == wanted:
                print(f"[data] raw files for these parameters exist ({man['events']:,} events): skipped", flush=True)
                continue
            argv_ = ["generate", json.dumps({"out": str(raw), **wanted})]
            results.clear()                                 # new raw data: earlier figures no longer apply
        else:
            if man is None:
                print(f"scale: no raw data at {raw}; run with --stages data first", file=sys.stderr)
                return 2
            argv_ = ["guim", stage, *common]
            if stage == "ingest":
                _clear(lake, BRONZE + SILVER + GOLD)
                argv_ += ["--source", "table", "--events", str(raw / "events"), "--items", str(raw / "items.parquet"),
                          "--users", str(raw / "users")]
                extra["rows_in"] = man["events"]
            elif stage == "sequences":
                _clear(lake, SILVER)
                argv_ += ["--full"]
                extra["rows_in"] = _rows(lake / "events")
            elif stage == "train":
                argv_ += ["--set", "train.epochs=1", "--set", f"train.valid_users={a.eval_users}",
                          "--set", f"train.final_eval_users={a.eval_users}"]
                if a.train_steps:
                    argv_ += ["--set", f"train.max_steps={a.train_steps}"]
                extra["rows_in"] = _rows(lake / "user_sequences")
            elif stage == "embed":
                version = state.get("model_version")
                if not version:
                    print("scale: no trained model version recorded; run the train stage first", file=sys.stderr)
                    return 2
                _clear(lake, GOLD)
                import datetime as dt
                as_of = (dt.date.fromisoformat(man["start_date"]) + dt.timedelta(days=man["days"] + 1)).isoformat()
                argv_ += ["--model-uri", f"models:/guim/{version}", "--as-of", as_of]
                extra["rows_in"] = _rows(lake / "events")
                extra["model_version"] = version
            elif stage == "publish":
                extra["rows_in"] = _rows(lake / "user_embeddings")
        print(f"[{stage}] started {t_start}: {' '.join(argv_[:2])} … (log: {ws / 'logs' / f'scale_{stage}.log'})",
              flush=True)
        log = ws / "logs" / f"scale_{stage}.log"
        redis_ctx = nullcontext(a.redis) if (stage != "publish" or a.redis) else _redis_server()
        with redis_ctx as address:
            if stage == "publish":
                argv_ += ["--set", "publish.online_store=redis", "--set", f"publish.redis={address}"]
                before = _redis_memory(address)
            r = run_stage(stage, argv_, log, env)
            if stage == "publish" and r["rc"] == 0:
                after = _redis_memory(address)
                extra["redis"] = {**after, "used_memory_before": before["used_memory"], "keys_before": before["keys"]}
                extra["rows_out"] = after["keys"] - before["keys"]
        r.update(extra)
        text = log.read_text(errors="replace")
        if r["rc"] != 0:
            tail = "\n".join(text.splitlines()[-30:])
            print(f"[{stage}] FAILED (exit {r['rc']}) after {r['wall_s']:.0f}s; last lines of {log}:\n{tail}\n"
                  f"fix it and resume with: python bench/scale.py --workspace {ws} "
                  f"--stages {','.join(stages[stages.index(stage):])} (same size options)", file=sys.stderr)
            state_path.write_text(json.dumps(state, indent=1))
            return 1
        if stage == "data":
            man = _manifest(raw)
            r["rows_out"] = man["events"]
        elif stage == "ingest":
            r["rows_out"] = _rows(lake / "events")
        elif stage == "sequences":
            r["rows_out"] = _rows(lake / "user_sequences")
        elif stage == "train":
            version = re.search(r"registered model version (\d+)", text)
            rate = re.search(r"(\d+) seq/s\s+(\d+) target positions/s\s+\((\d+) steps in ([\d.]+)s\)", text)
            if version:
                state["model_version"] = version.group(1)
                r["model_version"] = version.group(1)
            if rate:
                seq_s, pos_s, secs = float(rate.group(1)), float(rate.group(2)), float(rate.group(4))
                steps = int(rate.group(3))
                from guim_features.config import load_config
                tc = load_config(ws, a.overrides, write_default=False).train
                windows = _full_epoch_windows(lake, tc.max_len)
                r.update({"seq_per_s": seq_s, "positions_per_s": pos_s, "steps": steps, "loop_s": secs,
                          "rows_out": steps * tc.batch_size, "epoch_windows": windows,
                          "epoch_steps": math.ceil(windows / tc.batch_size) if windows else None})
                if windows and seq_s:
                    r["epoch_loop_s_extrapolated"] = round(windows / seq_s)
        elif stage == "embed":
            r["rows_out"] = _rows(lake / "user_embeddings")
            r["item_rows_out"] = _rows(lake / "item_embeddings")
        results[stage] = {**r, "finished": time.strftime("%Y-%m-%dT%H:%M:%S")}
        state.update({"raw": str(raw), "manifest": man})
        state_path.write_text(json.dumps(state, indent=1))
        print(f"[{stage}] done in {r['wall_s']:,.1f}s: driver peak {r['driver_gib']:.2f} GiB, "
              f"JVM {r['jvm_gib']:.2f} GiB, rows {_fmt(r.get('rows_in'))} -> {_fmt(r.get('rows_out'))}, "
              f"load {r['load_before']:.1f} -> {r['load_after']:.1f}", flush=True)
        if stage == "train" and r.get("epoch_loop_s_extrapolated"):
            print(f"[train] measured {r['steps']} steps: {r['seq_per_s']:,.0f} windows/s, {r['positions_per_s']:,.0f} "
                  f"target positions/s; one whole epoch = {r['epoch_windows']:,} windows, {r['epoch_steps']:,} steps: "
                  f"EXTRAPOLATED {r['epoch_loop_s_extrapolated'] / 3600:.2f} h of training steps", flush=True)
        if stage == "publish" and "redis" in r:
            m = r["redis"]
            print(f"[publish] Redis: {m['keys']:,} keys, used_memory {m['used_memory'] / 2**30:.2f} GiB; per user key "
                  f"{m.get('user_key_bytes')} B (payload {m.get('user_payload_bytes')} B), per item key "
                  f"{m.get('item_key_bytes')} B (payload {m.get('item_payload_bytes')} B)", flush=True)

    man = man or {}
    print(f"\n{man.get('users', a.users):,} users x {man.get('items', a.items):,} items x "
          f"{man.get('events', 0):,} events ({os.cpu_count()} CPUs); memory = peak RSS\n")
    print(table(results))
    print(f"\nreport: {state_path}")
    return 0


def _redis_server():
    from guim_features.redis_store import redis_server

    return redis_server()


if __name__ == "__main__":
    sys.path.insert(0, str(ROOT))          # this checkout's package, also when another copy is installed
    if len(sys.argv) > 2 and sys.argv[1] == "_child":
        sys.exit(_child(sys.argv[2], sys.argv[3:]))
    sys.exit(main())
