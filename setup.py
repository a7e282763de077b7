"""GUIM Features: general user/item embeddings (GUIM, arXiv 2207.00750) as a feature-store plugin."""
from setuptools import find_packages, setup

# Compatible ranges, for installing beside other libraries; the exact tested versions are in
# constraints.txt (pip install . -c constraints.txt). pyspark and delta-spark move together: Spark
# loads the Delta jars of the installed delta-spark release built for the installed Spark minor
# (guim_features/versions.py); Maven Central has one Spark 4.2 build of Delta, 4.4.0
# (delta-spark 4.4.1 is on PyPI without jars). Feast: one minor release, since the fast online
# writer follows its storage format; Feast needs pandas < 3.
INSTALL_REQUIRES = [
    "pyspark>=4.2,<4.3",
    "delta-spark>=4.4,<4.5,!=4.4.1",
    "deltalake>=1.1,<2",          # reads Delta tables into PyTorch without Spark
    "feast>=0.67,<0.68",
    "mlflow>=3.17,<4",
    "pyarrow>=25,<26",
    "pandas>=2.3,<3",
    "numpy>=2,<3",
    "torch>=2.5,<3",
    "faiss-cpu>=1.9,<2",
    "redis>=5,<9",
    "protobuf>=4.24,<8",          # Feast's online row format (timestamps)
    "scikit-learn>=1.5,<2",       # bench tasks, which `guim promote` runs
    "scipy>=1.13,<2",
    "threadpoolctl>=3,<4",
    "matplotlib>=3.9,<4",         # training curves logged to MLflow
    "tqdm>=4.66,<5",
    "pyyaml>=6,<7",
]
# `guim bench`'s item2vec baseline
BENCH = ["gensim>=4.3,<5"]
# the test suite, which runs every baseline and the quickstart notebook
DEV = BENCH + [
    "pytest>=8,<10",
    "pytest-timeout>=2.3,<3",
    "nbclient>=0.10,<1",
    "nbformat>=5.10,<6",
    "ipykernel>=6.29,<8",
    "packaging>=23",
]

setup(
    name="guim-features",
    version="0.1.0",
    description="GUIM user-interest mixtures and item embeddings, built with Spark/Delta, "
    "trained with PyTorch/MLflow, published with Feast.",
    packages=find_packages(include=["guim_features", "guim_features.*"]),
    # the Feast repository template `guim publish` copies into the workspace
    package_data={"guim_features": ["feature_repo/*.py", "feature_repo/*.yaml"]},
    python_requires=">=3.10",
    install_requires=INSTALL_REQUIRES,
    extras_require={"bench": BENCH, "dev": DEV},
    entry_points={"console_scripts": ["guim=guim_features.cli:main"]},
)
