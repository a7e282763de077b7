"""Versions read from the installed distributions, so that no version is typed twice.

``delta_package()``: the Maven coordinate of Delta Lake's Spark jars. The jars and the delta-spark
Python package must be the same release, built for the installed Spark, so the coordinate is
derived from what is installed: ``io.delta:delta-spark_<Spark major.minor>_2.13:<delta-spark
version>`` (the rule of delta-spark's own ``configure_spark_with_delta_pip``).
``python -m guim_features.versions`` prints it for shell scripts and ``spark-submit --packages``.

``pinned(names)``: ``name==version`` of installed distributions, for the MLflow model's pip
requirements (the serving environment gets the versions the model was trained and tested with).
"""
from __future__ import annotations

from importlib.metadata import version

SCALA = "2.13"  # Spark 4 is built for Scala 2.13 only
AUTO = "auto"


def delta_package(setting: str = AUTO) -> str:
    """``spark.jars.packages`` for Delta: the build matching the installed delta-spark and pyspark
    when ``setting`` is "auto", else ``setting`` itself (a coordinate, or "" for jars already on
    the classpath)."""
    if setting != AUTO:
        return setting
    spark = ".".join(version("pyspark").split(".")[:2])
    return f"io.delta:delta-spark_{spark}_{SCALA}:{version('delta-spark')}"


def pinned(names: list[str]) -> list[str]:
    """``name==version`` of each installed distribution; a local label (``2.5.1+cpu``) is dropped
    so that the pin installs from PyPI."""
    return [f"{n}=={version(n).split('+')[0]}" for n in names]


if __name__ == "__main__":
    print(delta_package())
