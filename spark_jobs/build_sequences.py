"""Spark job: bronze -> silver (the same code as ``guim sequences``).

    spark-submit --packages "$(python -m guim_features.versions)" \
        spark_jobs/build_sequences.py --workspace guim_workspace [--full] [--set sequences.max_len=100]

On a cluster, point the lakehouse at object storage: ``--set paths.lakehouse=s3a://bucket/guim``.
The session comes from spark-submit (its master and confs win over guim.yaml's spark section).
"""
import argparse
import sys

from guim_features.config import load_config
from guim_features.sequences import main

if __name__ == "__main__":
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--workspace", default="guim_workspace")
    p.add_argument("--full", action="store_true", help="rebuild every user")
    p.add_argument("--set", action="append", default=[], dest="overrides")
    a = p.parse_args()
    main(load_config(a.workspace, a.overrides), full=a.full)
    sys.exit(0)
