"""``guim publish``: gold embeddings -> Feast (offline + online) and the item ANN index.

Steps: pick the model version (``--model-version``, default: the newest exported snapshot);
write ``<workspace>/feature_repo`` (``feature_definitions.py`` copied from the package's
``feature_repo/``, ``feature_store.yaml`` rendered from ``cfg.publish``, ``guim_model.json`` with
K and d read from the exported vectors); refresh the offline sources (file store: Parquet
snapshots of the gold tables with the K interests as K columns; Spark store: SQL over the gold
Delta tables); Feast apply; write the newest snapshot of that version into the online store
(``publish.materialize``, see materialize.py: Feast's public ``write_to_online_store`` by default); build
the HNSW item index stamped with the version, save it under ``<workspace>/ann`` and log it to the
model's MLflow run.

A failed publish leaves the previous one serving: the online store is checked before anything is
written, and the new ``feature_store.yaml`` and ``guim_model.json`` are staged beside the old ones
and swapped in only after materialization succeeded.
"""
from __future__ import annotations

import importlib.resources
import json
import time
from pathlib import Path

import numpy as np

from .errors import GuimError
from .versions import delta_package
from .views import ITEM_VIEW, SERVICE, USER_VIEW, item_columns, matrix, user_columns  # noqa: F401

TEMPLATE = importlib.resources.files(__package__) / "feature_repo"   # package data, see setup.py
MODEL_NAME = "guim"


def repo_dir(cfg) -> Path:
    return Path(cfg.resolve(cfg.paths.feature_repo))


def ann_dir(cfg) -> Path:
    return Path(cfg.resolve("ann"))


# -- reading the gold tables (delta-rs, no Spark; one model version at a time) -----------------
def is_remote(path: str) -> bool:
    """A table URI that delta-rs on this machine cannot read as a local path (Spark reads it)."""
    return "://" in path and not path.startswith("file://")


def gold_dataset(cfg, name: str):
    """The gold table ``name`` as a pyarrow dataset (lazy; filters on model_version and snapshot_date
    prune partitions), or a clear error when it was never written. Object-store URIs (s3a://,
    abfss://…) are read through Spark, which already holds the credentials for them."""
    import pyarrow.dataset as ds
    from deltalake import DeltaTable
    from deltalake.exceptions import TableNotFoundError

    path = cfg.table(name)
    if is_remote(path):
        from . import delta
        from .spark import get_spark

        return ds.dataset(delta.read(get_spark(cfg.spark), path, name).toArrow())
    try:
        return DeltaTable(path).to_pyarrow_dataset()
    except TableNotFoundError:
        raise GuimError(f"gold table {name} not found at {cfg.table(name)}: run `guim embed` first") from None


def _version_filter(dataset, model_version: str):
    import pyarrow.compute as pc

    return pc.field("model_version") == model_version


def newest_rows(dataset, key: str, model_version: str, columns: list[str] | None = None):
    """The newest row per ``key`` of one model version, read in two passes: (key, event_timestamp)
    of the version's partitions first, then only the batches holding a newest row, keeping those
    rows. Memory: one row per key plus one batch, not the table's history."""
    import pyarrow as pa
    import pyarrow.compute as pc

    flt = _version_filter(dataset, model_version)
    kt = dataset.to_table(columns=[key, "event_timestamp"], filter=flt)
    if kt.num_rows == 0:
        versions = sorted(set(dataset.to_table(columns=["model_version"])["model_version"].to_pylist()))
        raise GuimError(f"model version {model_version!r} was not exported (exported: {versions})")
    ts = kt["event_timestamp"].cast(pa.timestamp("us", tz="UTC")).cast(pa.int64()).to_numpy()
    newest = _newest(kt[key], ts)
    newest_keys, newest_ts = kt[key].take(pa.array(newest)).combine_chunks(), ts[newest]
    if "snapshot_date" in dataset.schema.names:          # skip the dates older than every newest row
        first = np.datetime64(int(newest_ts.min()), "us").astype("datetime64[D]")
        flt = flt & (pc.field("snapshot_date") >= pa.scalar(first.astype(object), pa.date32()))
    parts = []
    for b in dataset.to_batches(columns=columns, filter=flt):
        pos = pc.index_in(b[key], value_set=newest_keys)
        if pos.null_count == len(pos):
            continue
        bts = b["event_timestamp"].cast(pa.timestamp("us", tz="UTC")).cast(pa.int64()).to_numpy()
        p = pos.to_numpy(zero_copy_only=False)
        hit = ~np.isnan(p.astype(float))
        keep = np.zeros(len(p), bool)
        keep[hit] = newest_ts[p[hit].astype(np.int64)] == bts[hit]
        if keep.any():
            parts.append(pa.Table.from_batches([b]).filter(pa.array(keep)))
    out = pa.concat_tables(parts) if parts else dataset.to_table(columns=columns, filter=flt).slice(0, 0)
    # a key exported twice at the same instant (not done by embed) would appear twice: keep one
    if out.num_rows != len(newest_keys):
        out = out.take(pa.array(_newest(out[key], out["event_timestamp"].cast(pa.int64()).to_numpy())))
    return out


def _newest(keys, ts: np.ndarray) -> np.ndarray:
    """Row indices of the newest ``ts`` per key (ties: the later row)."""
    keys = keys.to_numpy(zero_copy_only=False).astype(str)
    order = np.lexsort((ts, keys))                      # by key, then time: the last of each key wins
    last = np.ones(len(order), dtype=bool)
    last[:-1] = keys[order][1:] != keys[order][:-1]
    return order[last]


def choose_version(users, requested: str | None) -> str:
    """``requested``, or the model version of the newest user snapshot (reads two columns)."""
    if requested:
        return str(requested)
    import pyarrow.compute as pc

    t = users.to_table(columns=["model_version", "event_timestamp"]) if hasattr(users, "to_table") else users
    if t.num_rows == 0:
        raise GuimError("gold table user_embeddings is empty: run `guim embed` first")
    newest = pc.max(t["event_timestamp"])
    return t.filter(pc.equal(t["event_timestamp"], newest))["model_version"][0].as_py()


# -- the Feast repository -----------------------------------------------------------------------
def store_yaml(cfg) -> dict:
    """feature_store.yaml of the workspace from cfg.publish (paths relative to the repo folder)."""
    p = cfg.publish
    doc = {"project": p.project, "registry": "data/registry.db", "provider": "local",
           "entity_key_serialization_version": 3, "auth": {"type": "no_auth"}}
    if p.online_store == "sqlite":
        doc["online_store"] = {"type": "sqlite", "path": "data/online_store.db"}
    elif p.online_store == "redis":
        doc["online_store"] = {"type": "redis", "connection_string": p.redis}
    else:
        raise GuimError(f"publish.online_store={p.online_store!r}: expected sqlite or redis")
    if p.offline_store == "file":
        doc["offline_store"] = {"type": "file"}
    elif p.offline_store == "spark":
        conf = {"spark.master": cfg.spark.master, "spark.sql.session.timeZone": "UTC",
                "spark.sql.extensions": "io.delta.sql.DeltaSparkSessionExtension",
                "spark.sql.catalog.spark_catalog": "org.apache.spark.sql.delta.catalog.DeltaCatalog"}
        if jars := delta_package(cfg.spark.delta_package):
            conf["spark.jars.packages"] = jars
        conf.update({k: str(v) for k, v in cfg.spark.conf.items()})
        doc["offline_store"] = {"type": "spark", "spark_conf": conf}
    else:
        raise GuimError(f"publish.offline_store={p.offline_store!r}: expected file or spark")
    return doc


def spark_query(cfg, name: str, k: int, model_version: str, has: frozenset = frozenset({"profile", "seen_items"})) -> str:
    """Spark SQL over the gold Delta table, one model version (partition-pruned), with the K interests
    as K columns (Feast lists are flat). ``has``: the optional user columns the table holds; one
    missing (a table exported before it existed) is read as null, as the file store does."""
    where = "WHERE model_version = '" + str(model_version).replace("'", "") + "'"
    if name == "user_embeddings":
        cols = ", ".join(f"interests[{i}] AS interest_{i}" for i in range(k))
        profile = "profile" if "profile" in has else "CAST(NULL AS ARRAY<FLOAT>) AS profile"
        seen = "seen_items" if "seen_items" in has else "CAST(NULL AS ARRAY<STRING>) AS seen_items"
        return (f"SELECT user_id, {cols}, weights, {profile}, {seen}, model_version, event_timestamp "
                f"FROM delta.`{cfg.table(name)}` {where}")
    return f"SELECT item_id, vector, model_version, event_timestamp FROM delta.`{cfg.table(name)}` {where}"


def write_source(dataset, model_version: str, path: Path, columns) -> int:
    """Stream one model version's history from a gold dataset into a Parquet file (the file offline
    store's source), batch by batch; returns the rows written."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    tmp, n, writer = path.with_suffix(".parquet.tmp"), 0, None
    try:
        for b in dataset.to_batches(filter=_version_filter(dataset, model_version)):
            if b.num_rows == 0:
                continue
            t = columns(pa.Table.from_batches([b]))
            writer = writer or pq.ParquetWriter(tmp, t.schema)
            writer.write_table(t)
            n += t.num_rows
    finally:
        if writer is not None:
            writer.close()
    if writer is None:
        raise GuimError(f"model version {model_version!r} has no rows to publish")
    tmp.replace(path)
    return n


# The repository's configuration files; write_repo stages them as "<name>.new", commit_repo swaps them in.
CONFIG_FILES = ("feature_store.yaml", "guim_model.json")


def staged(repo: Path, name: str) -> Path:
    return repo / f"{name}.new"


def write_repo(cfg, k: int, d: int, model_version: str, users, items) -> tuple[Path, dict]:
    """Write the Feast repo into the workspace and refresh its offline sources, which hold the history
    of ``model_version`` only: a point-in-time join can never mix vectors of two models. The
    configuration files are staged (see :func:`commit_repo`); ``feast_apply(repo, staged_config=True)`` reads them."""
    import yaml

    repo = repo_dir(cfg)
    (repo / "data").mkdir(parents=True, exist_ok=True)
    (repo / "feature_definitions.py").write_bytes((TEMPLATE / "feature_definitions.py").read_bytes())
    staged(repo, "feature_store.yaml").write_text("# Written by `guim publish` from guim.yaml (section publish).\n"
                                                  + yaml.safe_dump(store_yaml(cfg), sort_keys=False))
    rows = {}
    if cfg.publish.offline_store == "spark":
        has = frozenset(users.schema.names) & {"profile", "seen_items"}
        sources = {n: spark_query(cfg, n, k, model_version, has)
                   for n in ("user_embeddings", "item_embeddings")}
    else:
        sources = {"user_embeddings": str(repo / "data" / "user_embeddings.parquet"),
                   "item_embeddings": str(repo / "data" / "item_embeddings.parquet")}
        rows["user_embeddings"] = write_source(users, model_version, Path(sources["user_embeddings"]),
                                               lambda t: user_columns(t, k))
        rows["item_embeddings"] = write_source(items, model_version, Path(sources["item_embeddings"]),
                                               item_columns)
    meta = {"K": k, "d": d, "model_version": model_version, "offline_store": cfg.publish.offline_store,
            "sources": sources}
    staged(repo, "guim_model.json").write_text(json.dumps(meta, indent=1))
    return repo, rows


def commit_repo(repo: Path) -> None:
    """Swap the staged configuration files in (each an atomic rename)."""
    for name in CONFIG_FILES:
        staged(repo, name).replace(repo / name)


def discard_staged(repo: Path) -> None:
    for name in CONFIG_FILES:
        staged(repo, name).unlink(missing_ok=True)


def feast_apply(repo: Path, staged_config: bool = False):
    """Import the definitions file (fresh) and ``FeatureStore.apply`` its objects; returns the store.
    With ``staged_config`` the staged configuration files are used instead of the committed ones."""
    import importlib.util
    import os

    from feast import Entity, FeatureService, FeatureStore, FeatureView

    model_json = staged(repo, "guim_model.json") if staged_config else repo / "guim_model.json"
    spec = importlib.util.spec_from_file_location("guim_feature_definitions", repo / "feature_definitions.py")
    module = importlib.util.module_from_spec(spec)
    previous = os.environ.get("GUIM_MODEL_JSON")
    os.environ["GUIM_MODEL_JSON"] = str(model_json)      # the definitions read K, d and sources from it
    try:
        spec.loader.exec_module(module)
    finally:
        if previous is None:
            os.environ.pop("GUIM_MODEL_JSON")
        else:
            os.environ["GUIM_MODEL_JSON"] = previous
    objects = [v for v in vars(module).values() if isinstance(v, (Entity, FeatureView, FeatureService))]
    store = FeatureStore(repo_path=str(repo), fs_yaml_file=staged(repo, "feature_store.yaml") if staged_config
                         else repo / "feature_store.yaml")
    store.apply(objects)
    return store


# -- popularity fallback, MLflow -------------------------------------------------------------------
def popular_items(cfg, n: int) -> list[str]:
    """The ``n`` most frequent items of bronze ``events`` (empty when there is no events table)."""
    from deltalake import DeltaTable
    from deltalake.exceptions import TableNotFoundError

    path = cfg.table("events")
    if is_remote(path):
        from . import delta
        from .spark import get_spark

        spark = get_spark(cfg.spark)
        if not delta.exists(spark, path):
            return []
        top = spark.read.format("delta").load(path).groupBy("item_id").count().orderBy("count", ascending=False)
        return [r["item_id"] for r in top.limit(n).collect()]
    import pyarrow as pa

    try:
        batches = DeltaTable(path).to_pyarrow_dataset().to_batches(columns=["item_id"], batch_size=1 << 20)
    except TableNotFoundError:
        return []

    def merged(parts):   # counts per item, summed over partial tables of (item_id, n)
        t = pa.concat_tables(parts).group_by("item_id").aggregate([("n", "sum")])
        return t.select(["item_id", "n_sum"]).rename_columns(["item_id", "n"])

    # streamed a million events at a time: the driver holds counts per item, never the event column
    parts = []
    for batch in batches:
        part = pa.table({"item_id": batch.column(0)}).group_by("item_id").aggregate([("item_id", "count")])
        parts.append(part.select(["item_id", "item_id_count"]).rename_columns(["item_id", "n"]))
        if len(parts) >= 16:
            parts = [merged(parts)]
    if not parts:
        return []
    counts = merged(parts).sort_by([("n", "descending"), ("item_id", "ascending")])
    return counts["item_id"].slice(0, n).to_pylist()


def _client(cfg):
    """An MLflow client, or None when the workspace has no tracking store yet (nothing to look up)."""
    uri = cfg.mlflow_uri
    if uri.startswith("sqlite:///") and not Path(uri[len("sqlite:///"):]).exists():
        return None
    import mlflow

    return mlflow.MlflowClient(tracking_uri=uri, registry_uri=uri)


def model_name(cfg) -> str:
    train = getattr(cfg, "train", None)
    return getattr(train, "model_name", "guim")


def score_rule(cfg, model_version: str) -> tuple[str, float]:
    """(rule, temperature): publish.score, or with ``model`` the rule the model was trained with, and
    the model's temperature (tags ``score`` and ``temperature`` set by embed; lse uses it)."""
    rule = cfg.publish.score
    if rule not in ("model", "max", "lse"):
        raise GuimError(f"publish.score={rule!r}: expected model, max or lse")
    from mlflow.exceptions import MlflowException

    client = _client(cfg)
    try:
        tags = client.get_model_version(model_name(cfg), str(model_version)).tags if client else {}
    except MlflowException:
        tags = {}
    return (tags.get("score", "max") if rule == "model" else rule), float(tags.get("temperature", 1.0))


def model_transitions(cfg, model_version: str, item_ids) -> tuple[dict, dict] | None:
    """The transition prior the registered ``model_version`` carries (``train.transition_window``),
    over the rows of an index of ``item_ids``: ({"indptr", "indices", "values"}, {"weight", "window",
    "decay", "follow", "pairs"}), or None when the model has none, its chosen weight is 0, or the registry does
    not hold the version. The prior counts item_idx pairs; the model's logged item map (item_id ->
    item_idx as trained) turns them into index rows, and pairs with an item outside the index drop."""
    import tempfile

    import mlflow
    import pandas as pd
    import pyarrow.parquet as pq
    import torch
    from mlflow.exceptions import MlflowException

    from .embedder import _find_checkpoint
    from .tracking import use_uri

    if _client(cfg) is None:
        return None
    use_uri(cfg.mlflow_uri)
    with tempfile.TemporaryDirectory() as tmp:
        try:
            local = Path(mlflow.artifacts.download_artifacts(
                artifact_uri=f"models:/{model_name(cfg)}/{model_version}", dst_path=tmp))
            checkpoint = _find_checkpoint(local)
        except (MlflowException, GuimError):
            return None
        prior = torch.load(checkpoint, map_location="cpu", weights_only=True).get("transitions")
        maps = sorted(local.rglob("*.parquet"))
        if prior is None or float(prior["weight"]) <= 0 or not maps:
            return None
        m = pq.read_table(maps[0], columns=["item_id", "item_idx"]).to_pandas()
    indptr, idx, val = (prior[k].numpy() for k in ("indptr", "indices", "values"))
    n = len(indptr) - 1                                                        # the model's item_idx range
    row = pd.Series(np.arange(len(item_ids)), index=np.asarray(item_ids).astype(str))
    m = m[(m["item_idx"] >= 0) & (m["item_idx"] < n)]
    pos = row.reindex(m["item_id"].astype(str)).to_numpy()
    row_of_idx = np.full(n, -1, np.int64)                                      # item_idx -> index row (-1: none)
    row_of_idx[m["item_idx"].to_numpy()[~np.isnan(pos)]] = pos[~np.isnan(pos)].astype(np.int64)
    a = row_of_idx[np.repeat(np.arange(n), np.diff(indptr))]                   # each pair's last item, as a row
    b = row_of_idx[idx]                                                        # its next item
    keep = (a >= 0) & (b >= 0)
    order = np.argsort(a[keep], kind="stable")
    a, b, v = a[keep][order], b[keep][order], val[keep][order]
    ptr = np.concatenate([[0], np.cumsum(np.bincount(a, minlength=len(item_ids)))])
    return ({"indptr": ptr.astype(np.int64), "indices": b.astype(np.int64), "values": v.astype(np.float32)},
            {"weight": float(prior["weight"]), "window": int(prior["window"]), "decay": float(prior["decay"]),
             "follow": int(prior.get("follow", 1)), "pairs": int(len(b))})


def recount_transitions(cfg, meta: dict, item_ids, before) -> tuple[dict, dict] | None:
    """The prior's pairs counted again, with the model's window and decay, over every bronze event
    before ``before`` (the newest user snapshot published) -> (CSR over the index rows, meta with
    ``pairs``, ``events`` and ``counted_before``), or None when there is no bronze events table.

    The model was evaluated with counts as of each ranked event; served, the same rule means the
    counts as of the snapshot, so the pairs of the events since training (the test parts, and any
    ingested later) are served too, not only the training and valid parts' the run counted.
    Events are ordered per user as the sequences order them (time in seconds, then input position;
    then index row, where the sequences take the item index), and events of items the index lacks
    are skipped, the gap closing over them, as the trainer skips items outside its catalogue."""
    import pyarrow as pa
    import pyarrow.compute as pc

    from .model.transitions import TransitionPrior
    from .schemas import FIRST_ITEM_INDEX

    path = cfg.table("events")
    if is_remote(path):
        from . import delta
        from .spark import get_spark

        spark = get_spark(cfg.spark)
        if not delta.exists(spark, path):
            return None
        df = delta.read(spark, path, "events")
        cols = [c for c in ("user_id", "item_id", "ts", "ord") if c in df.columns]
        table = df.where(df["ts"] < before).select(*cols).toArrow()
    else:
        from deltalake import DeltaTable
        from deltalake.exceptions import TableNotFoundError

        try:
            ds = DeltaTable(path).to_pyarrow_dataset()
        except TableNotFoundError:
            return None
        cols = [c for c in ("user_id", "item_id", "ts", "ord") if c in ds.schema.names]
        table = ds.to_table(columns=cols, filter=pc.field("ts") < pa.scalar(before, pa.timestamp("us", tz="UTC")))

    def ints(col, missing: int) -> np.ndarray:          # a column as int64, nulls as ``missing``
        return pc.fill_null(col, missing).to_numpy(zero_copy_only=False).astype(np.int64)

    users = ints(pc.dictionary_encode(table["user_id"]).combine_chunks().indices, 0)
    t = ints(pc.floor_temporal(table["ts"], unit="second").cast(pa.timestamp("s", tz="UTC")).cast(pa.int64()), 0)
    order = ints(table["ord"], 0) if "ord" in table.column_names else np.zeros(len(table), np.int64)
    row = ints(pc.index_in(table["item_id"], value_set=pa.array(np.asarray(item_ids).astype(str))), -1)
    by = np.lexsort((row, order, t, users))            # per user: time in seconds, input position, item
    items, users = row[by] + FIRST_ITEM_INDEX, users[by]
    n = len(item_ids) + FIRST_ITEM_INDEX                  # index rows as item_idx past the reserved ones
    prior = TransitionPrior.fit_flat(items, users, n, int(meta["window"]), float(meta["decay"]))
    lo, hi = prior.indptr[FIRST_ITEM_INDEX:], prior.indices - FIRST_ITEM_INDEX
    arrays = {"indptr": (lo - lo[0]).astype(np.int64), "indices": hi.astype(np.int64),
              "values": prior.values.astype(np.float32)}
    return arrays, {**meta, "pairs": int(len(hi)), "events": int(len(table)), "counted_before": before.isoformat()}


def log_to_mlflow(cfg, model_version: str, folder: Path) -> str | None:
    """Log every file of the index folder (``ann.files``: ``ItemIndex.from_mlflow`` needs them all) to
    the MLflow run that produced ``model_version``; returns the run id or None."""
    import json

    from mlflow.exceptions import MlflowException

    from .ann import artifact_path, files

    client = _client(cfg)
    if client is None:
        return None
    try:
        run_id = client.get_model_version(model_name(cfg), str(model_version)).run_id
        for name in files(json.loads((folder / "meta.json").read_text())):
            client.log_artifact(run_id, str(folder / name), artifact_path=artifact_path(model_version))
        return run_id
    except MlflowException:
        return None


def run(cfg, args) -> int:
    """CLI entry: ``guim publish [--model-version V]``."""
    from tqdm import tqdm

    from . import materialize, redis_store
    from .ann import ItemIndex

    t0 = time.perf_counter()
    if cfg.publish.transitions not in ("recount", "model"):
        raise GuimError(f"publish.transitions={cfg.publish.transitions!r}: expected recount or model")
    materialize.check_path(cfg)                 # before anything is written: a failed publish changes nothing
    redis_store.check_reachable(cfg)
    if cfg.publish.offline_store == "spark":
        from .spark import get_spark

        get_spark(cfg.spark)  # Feast's Spark store reuses the active session (Delta configured)
    users_ds, items_ds = gold_dataset(cfg, "user_embeddings"), gold_dataset(cfg, "item_embeddings")
    version = choose_version(users_ds, getattr(args, "model_version", None))
    users = newest_rows(users_ds, "user_id", version)
    items = newest_rows(items_ds, "item_id", version)
    inter = matrix(users["interests"].slice(0, 1))                           # (1, K, d)
    k, d = int(inter.shape[1]), int(inter.shape[2])
    # build the index before touching the online store, so the two change within moments
    rule, temperature = score_rule(cfg, version)
    index = ItemIndex.build(items["item_id"].to_pylist(), matrix(items["vector"]), version,
                            cfg.publish.ann_m, cfg.publish.ann_ef_construction, cfg.publish.ann_ef_search,
                            K=k, score=rule, temperature=temperature,
                            popular=popular_items(cfg, cfg.publish.popular))
    prior = model_transitions(cfg, version, index.item_ids)
    if prior is not None and cfg.publish.transitions == "recount":
        import pyarrow.compute as pc

        before = pc.max(users["event_timestamp"]).as_py()           # the newest snapshot published
        prior = recount_transitions(cfg, prior[1], index.item_ids, before) or prior
    if prior is not None:
        index.transitions, index.meta["transitions"] = prior
    repo, history = write_repo(cfg, k, d, version, users_ds, items_ds)
    try:
        store = feast_apply(repo, staged_config=True)
        with tqdm(total=users.num_rows + items.num_rows, desc="materialize", unit="row") as bar:
            counts = materialize.materialize(cfg, store, users, items, k, bar.update)
    except BaseException as e:
        discard_staged(repo)
        if cfg.publish.online_store != "redis" or not isinstance(e, Exception):
            raise
        raise redis_store.redis_error(cfg.publish.redis, e) from None
    commit_repo(repo)
    folder = index.save(ann_dir(cfg))
    run_id = log_to_mlflow(cfg, version, folder)
    rate = counts.get("user_rows_per_s")
    print(f"published model version {version}: K={k}, d={d}\n"
          f"  feast repo      {repo} (online: {cfg.publish.online_store}, offline: {cfg.publish.offline_store})\n"
          f"  online rows     {counts[USER_VIEW]} users, {counts[ITEM_VIEW]} items"
          + (f" ({rate:,.0f} user rows/s)" if rate else "") + "\n"
          + (f"  offline history {history['user_embeddings']} user rows, {history['item_embeddings']} item rows "
             f"of version {version}\n" if history else f"  offline store   Spark over {cfg.table('user_embeddings')} "
             f"(version {version})\n")
          + f"  item index      {folder} (HNSW M={cfg.publish.ann_m}, {index.meta['n']} items)"
          + (f", logged to MLflow run {run_id}" if run_id else "") + "\n"
          + (f"  transition prior {prior[1]['pairs']:,} pairs"
             + (f" (recounted over {prior[1]['events']:,} events before {prior[1]['counted_before']})"
                if "events" in prior[1] else " (the model's counts)")
             + f", weight {prior[1]['weight']:g}, following the "
             f"{prior[1]['follow']} latest item(s) (guim recommend blends it with the model)\n" if prior else "")
          + f"  took {time.perf_counter() - t0:.1f}s")
    return 0
