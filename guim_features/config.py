"""Configuration: one frozen dataclass per stage, loaded from ``guim.yaml`` in the workspace.

Every field carries its help text in ``metadata["help"]``; ``guim config`` prints it beside each
key's effective value. ``guim.yaml`` holds only what the user set (a new workspace gets a header
and no keys), so a workspace follows the package's defaults as they change. ``--set
section.key=value`` overrides any field on any command; the value is read as the field's type (a
string field takes the text as typed, anything else is parsed as YAML) and type-checked, and an
unknown section, key or a wrong type raises :class:`ConfigError` naming it.
"""
from __future__ import annotations

import copy
import dataclasses
import datetime
import os
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from .versions import AUTO

CONFIG_FILE = "guim.yaml"
# The user's MLFLOW_TRACKING_URI, read once at import: mlflow.set_tracking_uri() later writes the same
# variable, and that must not redirect another workspace of the same process to this one's store.
_USER_MLFLOW_URI = os.environ.get("MLFLOW_TRACKING_URI", "")


class ConfigError(ValueError):
    """A configuration value or key the user gave is not valid."""


def opt(default: Any, help: str):
    """A dataclass field with a default and a help comment (mutable defaults are copied)."""
    if isinstance(default, (dict, list)):
        return field(default_factory=lambda: copy.deepcopy(default), metadata={"help": help})
    return field(default=default, metadata={"help": help})


@dataclass(frozen=True)
class PathsConfig:
    lakehouse: str = opt("lakehouse", "Delta tables root; relative to the workspace, or a URI (s3a://…)")
    mlflow_tracking_uri: str = opt("", "MLflow tracking/registry URI; empty = sqlite:///<workspace>/mlflow.db "
                                       "(the MLFLOW_TRACKING_URI environment variable wins)")
    feature_repo: str = opt("feature_repo", "Feast repository folder written by `guim publish`, relative to the workspace")
    reports: str = opt("reports", "Benchmark reports folder, relative to the workspace")


@dataclass(frozen=True)
class SparkConfig:
    master: str = opt("local[2]", "Spark master URL: local[N] here, spark://… or yarn on a cluster")
    app_name: str = opt("guim", "Spark application name")
    driver_memory: str = opt("4g", "spark.driver.memory (local mode: the whole JVM)")
    shuffle_partitions: int = opt(4, "spark.sql.shuffle.partitions; raise it on a cluster")
    delta_package: str = opt(AUTO, "Maven coordinate of Delta for spark.jars.packages; auto = the build matching "
                                   "the installed delta-spark and pyspark; empty = jars already on the classpath")
    ui: bool = opt(False, "Start the Spark web UI")
    log_level: str = opt("ERROR", "Spark log level (quiet by default)")
    conf: dict = opt({}, "Extra Spark settings, e.g. {spark.executor.memory: 8g}")


@dataclass(frozen=True)
class IngestConfig:
    source: str = opt("synthetic", "Default source: synthetic | taobao | movielens | table")
    users: int = opt(2000, "Synthetic: number of users")
    items: int = opt(1000, "Synthetic: number of items")
    events_per_user: int = opt(60, "Synthetic: mean number of behaviours per user")
    categories: int = opt(20, "Synthetic: number of item categories")
    days: int = opt(30, "Synthetic: span of the behaviour log in days")
    seed: int = opt(42, "Synthetic: random seed (same seed, same data)")
    start_date: str = opt("2026-01-01", "Synthetic: first day of the behaviour log")
    min_ts: str = opt("1990-01-01", "Events before this instant are quarantined as out of range "
                                    "(YYYY-MM-DD[ HH:MM:SS][+HH:MM]; without an offset, in ingest.timezone)")
    max_ts: str = opt("2100-01-01", "Events after this instant are quarantined as out of range")
    timezone: str = opt("UTC", "Time zone of timestamps written without one: ingest.min_ts/max_ts and, with "
                               "--source table, date-time strings and zone-less timestamp columns (e.g. "
                               "Asia/Shanghai). Epoch numbers are instants and need none")
    behaviors: list = opt(["pv", "fav", "cart", "buy", "rate_1", "rate_2", "rate_3", "rate_4", "rate_5"],
                          "Known behaviours; anything else is quarantined. Order fixes their codes (1, 2, …)")
    mapping: dict = opt({"events": {}, "items": {}, "users": {}},
                        "--source table: our column -> your column, per table, e.g. events: {user_id: uid}")
    timestamp_unit: str = opt("s", "--source table: unit of numeric timestamps (s | ms | us)")
    tag_separator: str = opt("|", "--source table: separator inside a string tag column")


@dataclass(frozen=True)
class SequencesConfig:
    max_len: int = opt(50, "Keep the most recent max_len training behaviours per user")
    split: str = opt("leave_last_out", "leave_last_out (last = test, second-last = valid) | time (global cutoffs)")
    valid_cutoff: str = opt("", "split=time: events at/after this instant are valid; empty = 90% quantile of time")
    test_cutoff: str = opt("", "split=time: events at/after this instant are test; empty = 95% quantile of time")
    min_events: int = opt(3, "Users with fewer behaviours are left out of user_sequences")
    categorical_fields: list = opt(["category", "brand", "shop"], "Item fields indexed per field (0 = pad, 1 = OOV)")
    numeric_fields: list = opt(["price", "year"], "Item fields standardised (log1p for price) with stats recorded")
    title_buckets: int = opt(4096, "Title tokens are hashed into this many ids (0 = pad)")
    title_max_tokens: int = opt(16, "Cap on title tokens per item")
    max_tags: int = opt(8, "Cap on tags per item")
    gap_buckets: int = opt(32, "Time gaps are bucketed on a log2 scale into this many codes")


@dataclass(frozen=True)
class EmbedConfig:
    model_uri: str = opt("models:/guim@challenger", "Registered model to export with (`--model-uri` wins)")
    batch_size: int = opt(512, "Users or items per inference batch inside each Spark task")
    partitions: int = opt(2, "Spark partitions for batch inference (one model copy per task)")
    seen_max: int = opt(500, "Items kept in a snapshot's seen_items (the newest distinct ones before its as-of "
                             "time, newest first); 0 = no seen_items")
    seen_behaviors: list = opt([], "Behaviours whose items count as seen ([] = every behaviour)")


@dataclass(frozen=True)
class PublishConfig:
    project: str = opt("guim", "Feast project name")
    online_store: str = opt("sqlite", "Feast online store: sqlite (file in the workspace) | redis")
    redis: str = opt("localhost:6379", "online_store=redis: Feast connection string host:port[,db=N][,password=…]")
    offline_store: str = opt("file", "Feast offline store: file (Parquet snapshots in the workspace) | spark "
                                     "(Spark reading the gold Delta tables directly)")
    materialize: str = opt("feast_write", "Online write: feast_write (Feast's public write_to_online_store, "
                                          "chunked) | fast (opt-in vectorised write into Feast's online tables, "
                                          "Feast 0.67.0 only, byte-identical to feast_write) | feast (Feast's "
                                          "materialize from the epoch; re-reads the offline store)")
    ann_m: int = opt(32, "HNSW graph degree M of the item index (faiss IndexHNSWFlat, inner product)")
    ann_ef_construction: int = opt(80, "HNSW efConstruction (build quality)")
    ann_ef_search: int = opt(64, "HNSW efSearch (query quality vs latency)")
    candidates: int = opt(0, "Candidates searched per interest; 0 = k (the number of items asked for)")
    score: str = opt("model", "How candidates of the K interests merge: model (the rule it was trained with) | "
                              "max (max_k u_k.v) | lse (tau log sum_k w_k exp(u_k.v / tau))")
    popular: int = opt(100, "Popular items kept with the index, shown (flagged) for users the online store lacks")
    transitions: str = opt("recount", "The transition prior served: recount (the model's pairs counted again "
                                      "over every bronze event before the newest user snapshot published: "
                                      "the counts as of the snapshot) | model (the counts the run was "
                                      "evaluated with: its training and valid parts)")
    normaliser_sample: int = opt(50_000, "Transition prior online: above this many items the softmax's "
                                         "normaliser is the candidates' terms exactly plus the other items' "
                                         "estimated from a fixed uniform sample of this many (cost flat in "
                                         "the catalogue); at or below it, every item is scored (0: always)")


@dataclass(frozen=True)
class DemoConfig:
    train_epochs: int = opt(3, "`guim demo` trains this many epochs (train.epochs is for `guim train`)")
    user: str = opt("", "User shown in the demo's recommendation; empty = the first user of user_sequences")
    k: int = opt(10, "Items in the demo's recommendation")


@dataclass(frozen=True)
class TrainConfig:
    # -- model (saved with the weights; see guim_features/model) ---------------------------
    d: int = opt(64, "Embedding size of an item vector and of each user interest")
    K: int = opt(4, "Number of user interests (1 = the single-vector baseline)")
    layers: int = opt(2, "Transformer layers of the user encoder")
    heads: int = opt(2, "Attention heads per layer (d must be divisible by it)")
    dropout: float = opt(0.2, "Dropout on embeddings, attention and feed-forward layers")
    interest_dropout: float = opt(-1.0, "Dropout on the K interest vectors' read-out, the last layer before "
                                        "the score (-1 = train.dropout)")
    max_len: int = opt(50, "Behaviours the encoder sees; longer training histories are cut into windows")
    id_buckets: int = opt(1024, "Hashed id buckets for items unseen in training (learned through id_dropout)")
    id_dropout: float = opt(0.05, "Training: probability that an item's id embedding is swapped for its hash bucket")
    item_graph: float = opt(0.0, "Weight of the item graph in the item tower: each item's vector adds this times "
                                 "the mean id embedding of its most frequent neighbours in the training "
                                 "sequences (0 = off; 1 learned faster and ended level on Amazon Sports)")
    graph_neighbours: int = opt(16, "item_graph > 0: neighbours kept per item (the most frequent)")
    item_fields: list = opt(["category", "brand", "shop", "price", "year", "title", "tags", "image"],
                            "Content fields the item tower reads ([] = content-blind: id embedding only)")
    interest_residual: bool = opt(False, "Add the last position's state to every interest (each interest = "
                                         "LayerNorm(state + its own read-out)); overrides train.state_interests. "
                                         "The K interests then share the state: K = 4 loses its lead over K = 1 "
                                         "on multi_interest_retrieval")
    state_interests: int = opt(1, "How many of the K interests carry the last position's state (the first ones, "
                                  "each = LayerNorm(state + its own read-out)); the others stay free to read the "
                                  "rest of the history. 1 (chosen on Amazon Sports: next_item valid Recall@20 .098 "
                                  "against .080 with 0, test .079 against .058; K = 4 still ahead of K = 1 on "
                                  "multi_interest_retrieval); "
                                  "0 = none, for data without order (the synthetic default's planted interests)")
    diversity_weight: float = opt(0.0, "Weight of ||A A^T - I||^2 over the K interests' attention maps "
                                       "(ComiRec-SA): pushes the interests onto different events")
    separation_weight: float = opt(0.0, "Weight of the mean squared cosine between the interests that do not "
                                        "carry the state (K - state_interests >= 2): keeps them apart (0 = off; 1 gained "
                                        ".007 Recall@50 on the synthetic multi_interest_retrieval and halved "
                                        "it on Amazon Sports, whose users have few events)")
    routing_weight: float = opt(100.0, "Weight of the routing regulariser (REMI): the squared variances of each "
                                       "interest's attention over the events it may read; against an interest "
                                       "collapsing onto a single event (K > 1; chosen on valid users, 0 = off)")
    hard_negative_beta: float = opt(0.0, "Interest-aware hard negatives (REMI): each negative's share of the "
                                         "InfoNCE partition is reweighted by softmax(beta * logit) over the "
                                         "negatives (0 = plain InfoNCE; the paper uses ~1)")
    cl_weight: float = opt(0.0, "Weight of the contrastive regulariser (DuoRec): each sequence state against a "
                                "second dropout view of itself and the states with the same next item as "
                                "positives, the batch's other states as negatives (0 = off; one more encoder pass)")
    attribute_weight: float = opt(0.0, "Weight of attribute prediction: each training state also predicts the "
                                       "next item's attribute set (its tags) by a softmax over the attribute "
                                       "vocabulary, a head used in training only (0 = off; Amazon Sports, 0.2: "
                                       "level)")
    cl_temperature: float = opt(0.2, "Temperature of the contrastive regulariser (cosine similarities)")
    cl_positive: str = opt("dropout", "Contrastive regulariser's second view: dropout (the same history, fresh "
                                      "dropout) | same_target (another training history followed by the same "
                                      "item, DuoRec's supervised view; a bank of n_items x 4 histories in memory)")
    positions: str = opt("right", "Position embeddings: right (counted back from the newest event, SASRec's "
                                  "left-padded convention) | left (counted from the window's first event: a training "
                                  "state has the position it has at inference, where the newest event's position "
                                  "depends on the history's length)")
    score: str = opt("lse", "User-item score over the K interests: lse (tau log sum_k w_k exp(s_k / tau): a "
                            "w-weighted mixture of the K interests' softmax kernels) | max (max_k s_k)")
    train_score: str = opt("exact", "Training logits: exact (`score`, every interest trained by every target) | "
                                    "route (each target trains the interest closest to it, cost of K = 1; "
                                    "ComiRec)")
    normalize: bool = opt(True, "Score by cosine (L2-normalised vectors) instead of the dot product")
    temperature: float = opt(0.1, "InfoNCE temperature (cosine: ~0.05-0.1; dot product: 1.0)")
    learn_temperature: bool = opt(False, "Learn the temperature (initialised at `temperature`)")
    # -- objective -------------------------------------------------------------------------
    next_weight: float = opt(1.0, "Weight of next-item prediction (causal attention, every position)")
    mlm_weight: float = opt(0.0, "Weight of masked-item prediction (bidirectional attention, BERT 80/10/10)")
    pretrain_epochs: int = opt(0, "Epochs of masked-item pretraining before next-item training (BERT4Rec's "
                                  "objective alone, its own warm-up and cosine cycle; the train.epochs that "
                                  "follow start a fresh cycle with the pretrained tower and encoder; 0 = none. "
                                  "Amazon Sports, 10 epochs at lr 1e-3, 3 seeds: valid Recall@20 .101 against "
                                  ".099, test level)")
    mask_prob: float = opt(0.2, "Masked-item prediction: fraction of positions selected for prediction")
    exclude_seen: bool = opt(False, "Next-item InfoNCE: a training state's earlier items in its window are "
                                    "not its negatives (its own target stays the positive), as evaluation "
                                    "ranks without the user's earlier items; Amazon Sports, 2 seeds: learns faster, "
                                    "ends level)")
    input_noise: float = opt(0.0, "Next-item training: probability that an input event's item is read as a "
                                  "uniformly random item, its target kept (stochastic shared embeddings, "
                                  "Wu et al. 2019; 0 = off; Amazon Sports, 0.1: level)")
    negatives: str = opt("auto", "InfoNCE candidates: auto (all items when the catalogue <= full_catalogue_max, "
                                 "else sampled) | all | sampled (in-batch targets + num_negatives, corrected by "
                                 "their inclusion probability; cost independent of the vocabulary)")
    full_catalogue_max: int = opt(4096, "negatives=auto: largest catalogue scored in full every step (above it a "
                                        "step's candidates, num_negatives + the batch's targets, are fewer than "
                                        "the catalogue: sampled costs less at equal quality, bench/train.py)")
    num_negatives: int = opt(1024, "negatives=sampled: negatives drawn per step, shared by the batch")
    sampler: str = opt("uniform", "negatives=sampled: uniform | popularity (both log-Q corrected)")
    profile_steps: int = opt(1000, "Steps of the profile head, trained after the sequence model on every user's "
                                   "distinct training items (Mult-DAE's objective, batches of 64): the whole-history "
                                   "user vector a downstream model joins (Embedder.user_vector, the `profile` feature). "
                                   "The vector is the head's d floats then the fold-in's d; 0 = no head: the "
                                   "ALS fold-in over GUIM's item vectors alone. ML-100K user_profile, 3 seeds: "
                                   ".371 (level with ALS's .386) against .353 for the fold-in alone")
    profile_keep: float = opt(0.5, "Profile head training: share of a user's items it reads (the rest it must "
                                   "predict too)")
    transition_window: int = opt(3, "Transition prior for next-item ranking (model/transitions.py): count item "
                                    "pairs up to this many events apart in the training parts and blend "
                                    "P(next | latest items) with the model's softmax, the weight chosen on the "
                                    "valid split after training, 0 among the candidates (0 = off: the model's "
                                    "ranking alone; Amazon Sports, 3 seeds: test NDCG@20 .0422 at 3 against "
                                    ".0365 off, Recall@20 .0870 against .0790)")
    transition_decay: float = opt(0.5, "Transition prior: weight of a pair g events apart, decay ** (g - 1), and "
                                       "of the g-th latest item it follows, decay ** (g - 1)")
    transition_follow: int = opt(2, "Transition prior: how many of the user's latest items it follows (their "
                                    "rows mixed, decayed from the newest; Amazon Sports, 3 seeds: valid NDCG@20 "
                                    ".0498 at 2 against .0492 at 1)")
    transition_weights: list = opt([0.0, 0.03, 0.05, 0.07, 0.1, 0.15, 0.2],
                                   "Transition prior: the blend weights tried on valid (NDCG@20; a tie goes to "
                                   "the smaller)")
    windows: str = opt("all", "Training windows per user: all (every max_len chunk of the history) | last")
    # -- optimisation ----------------------------------------------------------------------
    batch_size: int = opt(128, "Training windows per step")
    epochs: int = opt(40, "Maximum epochs")
    patience: int = opt(10, "Early stopping: epochs without a better valid NDCG@20")
    lr: float = opt(2e-3, "AdamW peak learning rate")
    weight_decay: float = opt(0.01, "AdamW weight decay (matrices only; not embeddings, norms, biases)")
    warmup_steps: int = opt(50, "Linear warm-up steps, then cosine decay to lr/10 at the last epoch")
    weight_average: float = opt(0.0, "Decay of an exponential moving average of the weights (e.g. 0.999: about "
                                     "the last 1,000 steps); validation, early stopping and the saved model use "
                                     "the average (0 = off: the weights of the last step; Amazon Sports, 0.999, 3 seeds: "
                                     "level with off)")
    grad_clip: float = opt(1.0, "Clip the gradient norm to this (0 = off)")
    eval_batch_size: int = opt(512, "Users per batch during valid/test full ranking")
    valid_users: int = opt(10000, "Per-epoch validation ranks a fixed random subset of this many users (0 = all); "
                                  "the final valid and test metrics use train.final_eval_users")
    final_eval_users: int = opt(0, "Final valid and test metrics and the popularity gate rank a fixed random subset "
                                   "of this many users (0 = every user); full ranking costs users x catalogue, "
                                   "hours at millions of users")
    max_steps: int = opt(0, "Training steps per epoch at most (0 = the whole epoch); a throughput measurement "
                            "on data too big for a whole epoch")
    shuffle_buffer: int = opt(20000, "Streaming loader: windows held in the shuffle buffer")
    seed: int = opt(0, "Random seed (weights, shuffling, masking, negatives)")
    device: str = opt("auto", "auto (cuda if present) | cpu | cuda")
    amp: bool = opt(True, "bf16 autocast when training on CUDA")
    compile: str = opt("auto", "torch.compile the training loss: auto (on CUDA only) | on | off; if compiling "
                               "fails, training continues uncompiled with a warning")
    threads: int = opt(2, "torch.set_num_threads on CPU (0 = torch's default; 1 on a crowded machine)")
    # -- outputs ---------------------------------------------------------------------------
    checkpoint_dir: str = opt("checkpoints", "Checkpoint folder, relative to the workspace (--resume reads it)")
    experiment: str = opt("guim", "MLflow experiment name")
    model_name: str = opt("guim", "MLflow registered model name (each run adds a version; alias 'challenger' when it beats popularity on valid)")
    log_every: int = opt(20, "Log step metrics to MLflow every N steps")


@dataclass(frozen=True)
class BenchConfig:
    methods: list = opt(["random", "popularity", "item2vec", "als", "sasrec", "guim_k1", "guim_k4", "model"],
                        "Methods compared by `guim bench` (model = the registered --model-uri)")
    tasks: list = opt(["next_item", "interest_coverage", "user_profile", "item_category", "similar_items",
                       "purchase_propensity", "category_propensity", "item_demand", "multi_interest_retrieval"],
                      "Downstream tasks to run")
    content_blind: bool = opt(True, "Score GUIM with a content-blind item tower (train.item_fields=[]) on tasks "
                                    "whose labels are item content; its content-aware scores are reported apart")
    holdout_users: float = opt(0.1, "multi_interest_retrieval: share of users held out of every method's fit")
    holdout_scored: str = opt("test", "multi_interest_retrieval: which held-out users are scored: test | valid (a "
                                      "disjoint draw of as many users, for choosing settings; the test users are "
                                      "then held out of the fit too and not scored)")
    mi_merge: str = opt("model", "multi_interest_retrieval: how the K interests' own top-N lists merge: model (the "
                                 "union ranked by the method's own user-item score, as `guim recommend` merges; "
                                 "chosen on the valid draw: +.011 Recall@50 for GUIM K = 4 on the synthetic default, "
                                 "level on Amazon Sports) | max (each item keeps its best single-interest score, "
                                 "ComiRec's merge, reported beside it)")
    model_uri: str = opt("models:/guim@challenger", "Registered model benchmarked as method 'model'")
    dim: int = opt(64, "Vector size of the baselines (random, item2vec, SASRec)")
    item_scope: str = opt("warm", "Items in item tasks: warm (seen in the train part) | all")
    positive_behaviors: list = opt(["buy", "rate_4", "rate_5"], "purchase_propensity: behaviours that count as a purchase")
    probe_folds: int = opt(5, "Cross-validation folds of the linear probes")
    min_class_size: int = opt(5, "Probe labels with fewer examples are dropped (or the probe skipped)")
    neighbours: int = opt(10, "similar_items: neighbours per item (precision@N)")
    coverage_k: int = opt(50, "interest_coverage: size of the recommended list")
    item2vec_window: int = opt(20, "item2vec: skip-gram window (chosen on valid, bench/tune_baselines.py)")
    item2vec_epochs: int = opt(30, "item2vec: passes over the sequences")
    item2vec_sample: float = opt(0.0001, "item2vec: down-sampling threshold of frequent items")
    item2vec_ns_exponent: float = opt(0.75, "item2vec: exponent of the negative-sampling distribution")
    item2vec_recent: int = opt(5, "item2vec: a user is the mean of this many most recent items")
    als_rank: int = opt(64, "ALS: number of factors")
    als_reg: float = opt(0.05, "ALS: regParam (scaled by the user's item count, as Spark does)")
    als_alpha: float = opt(1.0, "ALS: implicit confidence alpha (chosen on valid, bench/tune_baselines.py)")
    als_iters: int = opt(10, "ALS: iterations")
    sasrec_max_len: int = opt(0, "SASRec: sequence length (0 = train.max_len: GUIM's training windows)")
    sasrec_layers: int = opt(2, "SASRec: Transformer layers")
    sasrec_heads: int = opt(2, "SASRec: attention heads")
    sasrec_dropout: float = opt(0.3, "SASRec: dropout")
    sasrec_lr: float = opt(0.002, "SASRec: AdamW learning rate (as train.lr)")
    sasrec_batch: int = opt(128, "SASRec: sequences per batch")
    sasrec_epochs: int = opt(0, "SASRec: maximum epochs, early stopping on valid Recall@20 (0 = train.epochs)")
    sasrec_patience: int = opt(10, "SASRec: epochs without valid improvement before stopping (as train.patience)")
    threads: int = opt(2, "torch CPU threads in the bench run")
    log_mlflow: bool = opt(True, "Log the report to MLflow (experiment guim-bench) and tag the model version")


@dataclass(frozen=True)
class PromoteConfig:
    model_name: str = opt("", "Registered model whose aliases are moved; empty = train.model_name")
    challenger: str = opt("challenger", "Alias of the candidate version")
    champion: str = opt("champion", "Alias moved to the candidate when the gate passes")
    primary_metric: str = opt("next_item.recall@20", "Metric the challenger must match or beat (task.metric)")
    tolerance: float = opt(0.01, "Largest allowed drop of any task's headline metric (absolute)")


@dataclass(frozen=True)
class Config:
    workspace: str = opt("guim_workspace", "Workspace folder (set by --workspace)")
    paths: PathsConfig = field(default_factory=PathsConfig)
    spark: SparkConfig = field(default_factory=SparkConfig)
    ingest: IngestConfig = field(default_factory=IngestConfig)
    sequences: SequencesConfig = field(default_factory=SequencesConfig)
    bench: BenchConfig = field(default_factory=BenchConfig)
    promote: PromoteConfig = field(default_factory=PromoteConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    embed: EmbedConfig = field(default_factory=EmbedConfig)
    publish: PublishConfig = field(default_factory=PublishConfig)
    demo: DemoConfig = field(default_factory=DemoConfig)

    # -- resolved locations ---------------------------------------------------------------
    def resolve(self, p: str) -> str:
        """A path relative to the workspace, or the URI/absolute path unchanged."""
        if "://" in p or os.path.isabs(p):
            return p
        return str(Path(self.workspace).resolve() / p)

    def table(self, name: str) -> str:
        """Location of the Delta table ``name`` (see guim_features.schemas)."""
        return self.resolve(self.paths.lakehouse).rstrip("/") + "/" + name

    @property
    def mlflow_uri(self) -> str:
        if _USER_MLFLOW_URI:
            return _USER_MLFLOW_URI
        if self.paths.mlflow_tracking_uri:
            return self.paths.mlflow_tracking_uri
        return "sqlite:///" + str(Path(self.workspace).resolve() / "mlflow.db")


def _sections() -> dict[str, type]:
    """Section name -> its dataclass, for every stage section of :class:`Config`."""
    hints = typing.get_type_hints(Config)
    return {f.name: hints[f.name] for f in dataclasses.fields(Config) if f.name != "workspace"}


def _coerce(where: str, typ: Any, value: Any) -> Any:
    """Check ``value`` against the annotation ``typ``; ints widen to floats, nothing else converts."""
    origin = typing.get_origin(typ) or typ
    if origin is float and isinstance(value, int) and not isinstance(value, bool):
        return float(value)
    if origin is str and isinstance(value, (datetime.date, datetime.datetime)):
        return value.isoformat(sep=" ") if isinstance(value, datetime.datetime) else value.isoformat()
    if origin is bool:
        if isinstance(value, bool):
            return value
    elif origin in (int, float, str, list, dict) and isinstance(value, origin) and not (
            origin is int and isinstance(value, bool)):
        return value
    hint = f" (write it in quotes: '{value}')" if origin is str and isinstance(value, (int, float, bool)) else ""
    raise ConfigError(f"{where}: expected {getattr(origin, '__name__', origin)}, got "
                      f"{type(value).__name__} {value!r}{hint}")


def _typed(typ: Any, raw: str) -> Any:
    """The text of a ``--set`` value read as the declared type ``typ``: a string field takes the text
    as typed (``demo.user=0123`` stays '0123', ``ingest.tag_separator=|`` stays '|'; quotes are
    removed), anything else is read as YAML, and a float also takes what Python's float() reads
    (YAML 1.1 reads ``1e-3`` as a string)."""
    text = raw.strip()
    origin = typing.get_origin(typ) or typ
    if origin is str and not (len(text) >= 2 and text[0] == text[-1] and text[0] in "'\""):
        return text
    try:
        value = yaml.safe_load(text) if text else ""
    except yaml.YAMLError as e:
        raise ConfigError(f"value {raw!r} is not valid YAML ({getattr(e, 'problem', None) or e})") from None
    if origin is float and isinstance(value, str):
        try:
            return float(value)
        except ValueError:
            pass
    return "" if value is None else value


# Keys older workspaces may still have in guim.yaml: ignored with a note instead of an error.
RETIRED = {"embed.sequence_part": "user snapshots now use every event before their as-of time (guim embed --as-of)"}


def _build(cls: type, where: str, values: dict) -> Any:
    if not isinstance(values, dict):
        raise ConfigError(f"{where}: expected a mapping of keys, got {values!r}")
    for key in [k for k in values if f"{where}.{k}" in RETIRED]:
        import warnings

        warnings.warn(f"guim.yaml: {where}.{key} is no longer used ({RETIRED[f'{where}.{key}']}); delete it",
                      stacklevel=2)
        values = {k: v for k, v in values.items() if k != key}
    hints = typing.get_type_hints(cls)
    known = {f.name for f in dataclasses.fields(cls)}
    unknown = sorted(set(values) - known)
    if unknown:
        raise ConfigError(f"unknown config key {where}.{unknown[0]} (known: {', '.join(sorted(known))})")
    kwargs = {}
    for name, v in values.items():
        t = hints[name]
        if dataclasses.is_dataclass(t):
            kwargs[name] = _build(t, name, v or {})
        else:
            kwargs[name] = _coerce(f"{where}.{name}" if where else name, t, v)
    return cls(**kwargs)


def _parse_override(item: str) -> tuple[list[str], str]:
    if "=" not in item:
        raise ConfigError(f"--set {item!r}: expected section.key=value")
    key, raw = item.split("=", 1)
    parts = key.strip().split(".")
    if len(parts) < 2:
        raise ConfigError(f"--set {item!r}: expected section.key=value (e.g. train.epochs=5)")
    return parts, raw


def _apply_override(data: dict, parts: list[str], raw: str) -> None:
    section, key, rest = parts[0], parts[1], parts[2:]
    sections = _sections()
    if section not in sections:
        raise ConfigError(f"unknown config section {section!r} (known: {', '.join(sections)})")
    fields = {f.name: f for f in dataclasses.fields(sections[section])}
    if key not in fields:
        raise ConfigError(f"unknown config key {section}.{key} (known: {', '.join(sorted(fields))})")
    hint = typing.get_type_hints(sections[section])[key]
    sec = data.setdefault(section, {})
    try:
        # inside a mapping (ingest.mapping.events.user_id, spark.conf.*) a scalar is a column name or a
        # Spark setting: a string, as typed
        value = _typed(hint if not rest else (Any if _is_nested(raw) else str), raw)
    except ConfigError as e:
        raise ConfigError(f"--set {'.'.join(parts)}: {e}") from None
    if rest:  # dict-valued field, e.g. spark.conf.spark.executor.memory=8g
        if (typing.get_origin(hint) or hint) is not dict:
            raise ConfigError(f"{section}.{key} is not a mapping; cannot set {'.'.join(parts)}")
        current = sec.get(key)
        if current is None:
            current = dict(fields[key].default_factory())
        target = current
        if key == "conf":  # Spark keys contain dots themselves
            target[".".join(rest)] = value
        else:
            for p in rest[:-1]:
                target = target.setdefault(p, {})
            target[rest[-1]] = value
        sec[key] = current
    else:
        sec[key] = value


def _is_nested(raw: str) -> bool:
    """Whether a --set value is written as a YAML mapping or list ({...} or [...])."""
    return raw.strip()[:1] in ("{", "[")


def render(cfg: Config, defaults: Config | None = None) -> str:
    """``cfg`` as YAML, every key under its help as a comment; with ``defaults``, a key whose value
    differs from it also shows the default."""
    lines = []
    for f in dataclasses.fields(cfg):
        if f.name == "workspace":
            continue
        sec, base = getattr(cfg, f.name), getattr(defaults, f.name, None)
        lines.append(f"\n{f.name}:")
        for sf in dataclasses.fields(sec):
            value, help_ = getattr(sec, sf.name), sf.metadata.get("help", "")
            if base is not None and value != getattr(base, sf.name):
                help_ += f" [changed; default: {_flow(getattr(base, sf.name))}]"
            lines.append(f"  # {help_}")
            lines.append(f"  {sf.name}: {_flow(value)}")
    return "\n".join(lines) + "\n"


def _flow(value: Any) -> str:
    """One value in YAML flow style, on one line."""
    return yaml.safe_dump(value, default_flow_style=True, width=10_000).strip().removesuffix("\n...").strip()


HEADER = """\
# GUIM Features configuration of this workspace. Only the keys set here are used; every other key
# takes the package's current default. `guim config` prints every key with its value and help;
# `--set section.key=value` overrides any key for one command. For example:
#
# ingest:
#   timezone: Asia/Shanghai
# train:
#   epochs: 20
"""


def load_config(workspace: str | os.PathLike = "guim_workspace", overrides: list[str] | tuple = (),
                write_default: bool = True) -> Config:
    """Read ``<workspace>/guim.yaml`` (writing a header-only one on first use, with ``write_default``)
    and apply overrides; keys set nowhere take the package defaults."""
    ws = Path(workspace)
    path = ws / CONFIG_FILE
    if path.exists():
        try:
            data = yaml.safe_load(path.read_text()) or {}
        except yaml.YAMLError as e:
            raise ConfigError(f"{path}: not valid YAML ({e})") from None
        if not isinstance(data, dict):
            raise ConfigError(f"{path}: expected a mapping of sections")
    else:
        data = {}
        if write_default:
            ws.mkdir(parents=True, exist_ok=True)
            path.write_text(HEADER)
    data.pop("workspace", None)
    for item in overrides:
        parts, raw = _parse_override(item)
        _apply_override(data, parts, raw)
    cfg = _build(Config, "", {**data, "workspace": str(ws)})
    return cfg


def replace(cfg: Any, **changes: Any) -> Any:
    """``dataclasses.replace`` re-exported: configs are frozen, derive new ones."""
    return dataclasses.replace(cfg, **changes)


def run(cfg: Config, args) -> int:
    """CLI entry: ``guim config`` prints the effective configuration (defaults, guim.yaml, --set)."""
    import sys

    ws = Path(cfg.workspace)
    if not (ws / CONFIG_FILE).is_file():
        print(f"guim config: workspace {cfg.workspace} not found: package defaults and --set only", file=sys.stderr)
    print(f"# Effective configuration of workspace {cfg.workspace}: package defaults, then {ws / CONFIG_FILE}, "
          "then --set.", end="")
    print(render(cfg, defaults=Config(workspace=cfg.workspace)), end="")
    return 0
