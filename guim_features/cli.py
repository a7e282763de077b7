"""The ``guim`` command line: one sub-command per stage of the flow.

Every command takes ``--workspace DIR`` and ``--set section.key=value``. Stage modules are
imported only when their command runs, so ``guim --help`` is instant.
"""
from __future__ import annotations

import argparse
import importlib
import sys

# command -> (module with run(cfg, args), one-line help)
COMMANDS = {
    "demo": ("guim_features.demo", "Run the whole flow on built-in synthetic data"),
    "ingest": ("guim_features.ingest", "Load raw logs into bronze Delta tables (with quarantine)"),
    "sequences": ("guim_features.sequences", "Build silver tables: item index, features, sequences, labels"),
    "train": ("guim_features.train", "Train GUIM and register it in MLflow as alias 'challenger'"),
    "embed": ("guim_features.embed", "Batch-export user mixtures and item vectors to gold Delta tables"),
    "publish": ("guim_features.publish", "Feast apply + materialize, and build the item ANN index"),
    "recommend": ("guim_features.recommend", "Recommend items for a user from the online store"),
    "bench": ("guim_features.bench", "Run the GUIM-Bench downstream suite with baselines"),
    "promote": ("guim_features.promote", "Move alias 'champion' to 'challenger' if the bench allows"),
}


def _arguments(name: str, p: argparse.ArgumentParser) -> None:
    if name == "ingest":
        p.add_argument("--source", choices=["synthetic", "taobao", "movielens", "table"],
                       help="input kind (default: ingest.source)")
        p.add_argument("--path", help="taobao: the UserBehavior CSV; movielens: the ml-100k/ml-1m folder")
        p.add_argument("--events", help="table: events CSV/Parquet/Delta path")
        p.add_argument("--items", help="table: items CSV/Parquet/Delta path")
        p.add_argument("--users", help="table: users CSV/Parquet/Delta path")
        p.add_argument("--num-users", type=int, dest="num_users", help="synthetic: users (ingest.users)")
        p.add_argument("--num-items", type=int, dest="num_items", help="synthetic: items (ingest.items)")
    elif name == "sequences":
        p.add_argument("--full", action="store_true", help="rebuild every user instead of only changed ones")
    elif name == "train":
        p.add_argument("--resume", action="store_true", help="continue the last unfinished run from its checkpoint")
        p.add_argument("--num-processes", type=int, default=1, dest="num_processes",
                       help="DDP processes (gloo on CPU)")
        p.add_argument("--launcher", choices=["torchrun", "spark"], default="torchrun",
                       help="how to start DDP processes when --num-processes > 1")
    elif name == "embed":
        from .embed import add_arguments

        add_arguments(p)
    elif name == "publish":
        p.add_argument("--model-version", dest="model_version", help="publish this version (default: latest exported)")
    elif name == "recommend":
        p.add_argument("user_id")
        p.add_argument("-k", type=int, default=20, help="number of items")
    elif name == "bench":
        p.add_argument("--model-uri", dest="model_uri", help="default models:/guim@challenger")
        p.add_argument("--seeds", type=int, default=1, help="repeat with this many seeds, report mean and spread")
        p.add_argument("--keep-going", action="store_true", dest="keep_going",
                       help="exit 0 even if a method fails (the report still names it and the reason)")
    elif name == "promote":
        p.add_argument("--dry-run", action="store_true", dest="dry_run", help="decide and print, move nothing")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="guim", description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for name, (_, help_) in COMMANDS.items():
        p = sub.add_parser(name, help=help_, description=help_)
        p.add_argument("--workspace", default="guim_workspace", help="workspace folder (default ./guim_workspace)")
        p.add_argument("--set", action="append", default=[], metavar="SECTION.KEY=VALUE", dest="overrides",
                       help="override a config value (repeatable), e.g. --set train.epochs=5")
        _arguments(name, p)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    from .config import ConfigError, load_config
    from .errors import GuimError

    try:
        cfg = load_config(args.workspace, args.overrides)
        module = importlib.import_module(COMMANDS[args.command][0])
        result = module.run(cfg, args)
    except (ConfigError, GuimError) as e:
        print(f"guim {args.command}: error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"guim {args.command}: interrupted", file=sys.stderr)
        return 130
    return int(result or 0)


if __name__ == "__main__":
    sys.exit(main())
