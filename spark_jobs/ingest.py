"""Spark job: raw logs -> bronze Delta tables (the same code as ``guim ingest``).

    spark-submit --packages "$(python -m guim_features.versions)" \
        spark_jobs/ingest.py --workspace guim_workspace --source taobao --path UserBehavior.csv
"""
import sys

from guim_features.cli import main

if __name__ == "__main__":
    sys.exit(main(["ingest", *sys.argv[1:]]))
