"""Batch export of GUIM embeddings to the gold Delta tables, as a ``spark-submit`` job (issue 4, item 1).

    spark-submit --packages io.delta:delta-spark_4.2_2.13:4.4.1 --py-files guim_features.zip \
        spark_jobs/export_embeddings.py --workspace WS [--model-uri models:/guim@challenger] \
        [--set spark.master=yarn]

Same as ``guim embed``: extract silver user_sequences / item_features, encode them in Spark tasks
(``guim_features.embed.encode_users`` / ``encode_items``, pure DataFrame -> DataFrame), append one
snapshot to gold user_embeddings / item_embeddings. The session spark-submit started is reused.
"""
from __future__ import annotations

import argparse
import sys


def main(argv: list[str] | None = None) -> int:
    from guim_features.config import ConfigError, load_config
    from guim_features.embed import run
    from guim_features.errors import GuimError

    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--workspace", default="guim_workspace")
    p.add_argument("--model-uri", dest="model_uri", help="default: embed.model_uri (models:/guim@challenger)")
    p.add_argument("--set", action="append", default=[], dest="overrides", metavar="SECTION.KEY=VALUE")
    args = p.parse_args(argv)
    try:
        return run(load_config(args.workspace, args.overrides), args)
    except (ConfigError, GuimError) as e:
        print(f"export_embeddings: error: {e}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
