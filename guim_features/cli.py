"""The ``guim`` command line: one sub-command per stage of the flow.

Every command takes ``--workspace DIR``, ``--set section.key=value`` and ``--verbose``; its
``--help`` shows the defaults and an example. Stage modules are imported only when their command
runs, so ``guim --help`` is instant.
"""
from __future__ import annotations

import argparse
import importlib
import logging
import sys
import warnings
from contextlib import contextmanager
from pathlib import Path

# command -> (module with run(cfg, args), one-line help, an example)
COMMANDS = {
    "demo": ("guim_features.demo", "Run the whole flow on built-in synthetic data",
             "guim demo --workspace demo_ws"),
    "ingest": ("guim_features.ingest", "Load raw logs into bronze Delta tables (with quarantine)",
               "guim ingest --source movielens --path ml-100k --workspace ml100k"),
    "sequences": ("guim_features.sequences", "Build silver tables: item index, features, sequences, labels",
                  "guim sequences --workspace ml100k --set sequences.max_len=1000"),
    "train": ("guim_features.train", "Train GUIM, register it in MLflow; alias 'challenger' if it beats popularity on valid",
              "guim train --workspace ml100k --set train.epochs=20"),
    "embed": ("guim_features.export", "Batch-export user mixtures and item vectors to gold Delta tables",
              "guim embed --workspace ml100k --backfill 1998-03-01 1998-04-01 --every 1w"),
    "publish": ("guim_features.publish", "Feast apply + materialize, and build the item ANN index",
                "guim publish --workspace ml100k --set publish.online_store=redis --set publish.redis=localhost:6379"),
    "recommend": ("guim_features.recommend", "Recommend items for a user from the online store",
                  "guim recommend 42 -k 10 --workspace ml100k"),
    "bench": ("guim_features.downstream", "Run the GUIM-Bench downstream suite with baselines",
              "guim bench --workspace ml100k --quick"),
    "promote": ("guim_features.promote", "Move alias 'champion' to 'challenger' if the bench allows",
                "guim promote --workspace ml100k --dry-run"),
    "config": ("guim_features.config", "Print the effective configuration, each key with its help",
               "guim config --workspace ml100k --set train.K=1"),
}

# guim bench --quick: the registered model against the floors and one cheap learned baseline, on the
# tasks that need no per-user probes; a check, not a record: nothing is logged to MLflow or tagged on
# the model version, so `guim promote` never gates on a partial suite
QUICK_BENCH = ("bench.methods=[random,popularity,item2vec,model]",
               "bench.tasks=[next_item,item_category,similar_items]", "bench.log_mlflow=false")

# Commands that make a workspace when it does not exist yet; every other one only reads an existing one.
CREATE_WORKSPACE = ("demo", "ingest")


def _arguments(name: str, p: argparse.ArgumentParser) -> None:
    if name == "ingest":
        p.add_argument("--source", choices=["synthetic", "taobao", "movielens", "table"],
                       help="input kind (default: ingest.source)")
        p.add_argument("--path", help="taobao: the UserBehavior CSV; movielens: the ml-100k/ml-1m folder")
        p.add_argument("--events", help="table: events CSV/Parquet/Delta path")
        p.add_argument("--items", help="table: items CSV/Parquet/Delta path")
        p.add_argument("--users", help="table: users CSV/Parquet/Delta path")
        p.add_argument("--num-users", type=int, dest="num_users",
                       help="synthetic: number of users (default: ingest.users)")
        p.add_argument("--num-items", type=int, dest="num_items",
                       help="synthetic: number of items (default: ingest.items)")
    elif name == "sequences":
        p.add_argument("--full", action="store_true", help="rebuild every user instead of only changed ones")
    elif name == "train":
        p.add_argument("--resume", action="store_true", help="continue the last unfinished run from its checkpoint")
        p.add_argument("--num-processes", type=int, default=1, dest="num_processes",
                       help="DDP processes (gloo on CPU)")
        p.add_argument("--launcher", choices=["torchrun", "spark"], default="torchrun",
                       help="how to start DDP processes when --num-processes > 1")
    elif name == "embed":
        from .export import add_arguments

        add_arguments(p)
    elif name == "publish":
        p.add_argument("--model-version", dest="model_version", help="publish this version (default: latest exported)")
    elif name == "recommend":
        p.add_argument("user_id")
        p.add_argument("-k", type=int, default=20, help="number of items")
        p.add_argument("--exclude", nargs="+", metavar="ITEM_ID", default=[],
                       help="never recommend these items (e.g. what the user already bought)")
        p.add_argument("--exclude-seen", action="store_true", dest="exclude_seen",
                       help="never recommend the user's seen_items (their events before the published "
                            "snapshot; the bronze events where the published view predates seen_items)")
        p.add_argument("--last-item", dest="last_item", metavar="ITEM_ID",
                       help="the user's newest event, for the transition prior (followed by their seen items; "
                            "default: the seen items alone)")
        p.add_argument("--no-prior", action="store_true", dest="no_prior",
                       help="rank by the model alone, even when the published model has a transition prior")
    elif name == "bench":
        p.add_argument("--model-uri", dest="model_uri",
                       help="registered model benchmarked as method 'model' (default: bench.model_uri)")
        p.add_argument("--seeds", type=int, default=1, help="repeat with this many seeds, report mean and spread")
        p.add_argument("--first-seed", type=int, default=0, dest="first_seed",
                       help="the first seed (seeds FIRST .. FIRST + SEEDS - 1): add seeds to an earlier run")
        p.add_argument("--combine", nargs="+", metavar="REPORT",
                       help="train nothing: pool the seeds of earlier reports (bench-* folders or their bench.json) "
                       "of the same settings and disjoint seeds (--first-seed) into one report")
        p.add_argument("--quick", action="store_true",
                       help="a quick check, not logged to MLflow: " + ", ".join(QUICK_BENCH[:2])
                       + ", one seed (--set still wins)")
        p.add_argument("--keep-going", action="store_true", dest="keep_going",
                       help="exit 0 even if a method fails (the report still names it and the reason)")
        p.add_argument("--resume", action="store_true",
                       help="go on with the unfinished (stopped or failed) run of the same settings: its "
                       "finished method runs are kept, the rest run (<reports>/bench-partial[-seedF].json)")
    elif name == "promote":
        p.add_argument("--dry-run", action="store_true", dest="dry_run", help="decide and print, move nothing")


class _Help(argparse.RawDescriptionHelpFormatter):
    """Shows an option's default after its help (unless it has none, is a flag's False, or the help
    already says it) and keeps the example's line breaks."""

    def _get_help_string(self, action):
        text = action.help or ""
        if (action.default is None or action.default is False or action.default in ([], argparse.SUPPRESS)
                or "default" in text):
            return text
        return text + " (default: %(default)s)"


def _version() -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("guim-features")
    except PackageNotFoundError:           # run from a source tree that was never installed
        return "unknown (not installed)"


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="guim", formatter_class=_Help,
                                     description="GUIM Features: user interest mixtures and item embeddings from\n"
                                                 "behaviour logs, one command per stage of the flow.",
                                     epilog="Run `guim COMMAND --help` for a command's options. First time: guim demo")
    parser.add_argument("--version", action="version", version=f"%(prog)s {_version()}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name, (_, help_, example) in COMMANDS.items():
        p = sub.add_parser(name, help=help_, description=help_, formatter_class=_Help,
                           epilog=f"example:\n  {example}")
        p.add_argument("--workspace", default="guim_workspace", help="workspace folder")
        p.add_argument("--set", action="append", default=[], metavar="SECTION.KEY=VALUE", dest="overrides",
                       help="override a config value (repeatable), e.g. --set train.epochs=5")
        p.add_argument("-v", "--verbose", action="store_true",
                       help="also show Spark's, Ivy's, MLflow's and other libraries' logs and warnings")
        _arguments(name, p)
    return parser


JVM_LOG = "logs/spark.log"      # in the workspace: the JVM's output unless --verbose


@contextmanager
def _quiet(workspace: str):
    """Normal output is the command's own lines, progress and errors. The JVM's output (Ivy's
    dependency report, log4j) goes to ``<workspace>/logs/spark.log``; warnings from libraries, log
    records below ERROR (MLflow's database migrations, py4j, Feast) and MLflow's artifact download
    bars are dropped. ``--verbose`` skips this."""
    import os

    from . import spark

    previous_log, previous_disable = spark.JVM_LOG, logging.root.manager.disable
    previous_bar = os.environ.get("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR")
    spark.JVM_LOG = str(Path(workspace) / JVM_LOG)
    logging.disable(logging.WARNING)
    os.environ["MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR"] = "false"
    try:
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore")
            warnings.filterwarnings("default", category=UserWarning, module="guim_features")
            # libraries re-enable their own warnings inside their calls (MLflow: simplefilter("once")),
            # so the display is filtered too: only this package's UserWarnings are shown
            show = warnings.showwarning

            def ours_only(message, category, filename, lineno, file=None, line=None):
                if issubclass(category, UserWarning) and "guim_features" in Path(filename).parts:
                    show(message, category, filename, lineno, file, line)

            warnings.showwarning = ours_only
            yield
    finally:
        logging.disable(previous_disable)
        spark.JVM_LOG = previous_log
        if previous_bar is None:
            os.environ.pop("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", None)
        else:
            os.environ["MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR"] = previous_bar


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.command is None:
        parser.print_help()
        return 2
    if getattr(args, "quick", False):
        args.overrides, args.seeds = [*QUICK_BENCH, *args.overrides], 1
    from .config import CONFIG_FILE, ConfigError, load_config, replace
    from .errors import GuimError
    from .spark import stage_progress

    try:
        creates = args.command in CREATE_WORKSPACE
        if args.command != "config" and not creates and not (Path(args.workspace) / CONFIG_FILE).is_file():
            raise GuimError(f"workspace not found: {args.workspace} (no {CONFIG_FILE} there; `guim ingest "
                            f"--workspace {args.workspace}` or `guim demo --workspace {args.workspace}` makes one)")
        cfg = load_config(args.workspace, args.overrides, write_default=creates)
        if args.verbose:
            if cfg.spark.log_level.upper() in ("ERROR", "FATAL", "OFF"):
                cfg = replace(cfg, spark=replace(cfg.spark, log_level="WARN"))
            result = importlib.import_module(COMMANDS[args.command][0]).run(cfg, args)
        else:
            with _quiet(args.workspace), stage_progress():
                result = importlib.import_module(COMMANDS[args.command][0]).run(cfg, args)
    except (ConfigError, GuimError) as e:
        print(f"guim {args.command}: error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"guim {args.command}: interrupted", file=sys.stderr)
        return 130
    return int(result or 0)


if __name__ == "__main__":
    sys.exit(main())
