"""As-of export of GUIM embeddings to the gold Delta tables, as a ``spark-submit`` job.

    spark-submit --packages "$(python -m guim_features.versions)" --py-files guim_features.zip \
        spark_jobs/export_embeddings.py --workspace WS [--model-uri models:/guim@challenger] \
        [--as-of TIME ...] [--backfill START END --every 1d] [--set spark.master=yarn]

Same options and job as ``guim embed`` (``guim_features.export.export``): each user's mixture as of
every requested instant, from their events before it, appended to gold user_embeddings in one
Spark job; the model version's item vectors once. The session spark-submit started is reused.
"""
from __future__ import annotations

import argparse
import sys


def main(argv: list[str] | None = None) -> int:
    from guim_features.config import ConfigError, load_config
    from guim_features.export import add_arguments, run
    from guim_features.errors import GuimError

    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--workspace", default="guim_workspace")
    p.add_argument("--set", action="append", default=[], dest="overrides", metavar="SECTION.KEY=VALUE")
    add_arguments(p)
    args = p.parse_args(argv)
    try:
        return run(load_config(args.workspace, args.overrides), args)
    except (ConfigError, GuimError) as e:
        print(f"export_embeddings: error: {e}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
