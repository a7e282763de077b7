"""GUIM Features: general user/item embeddings (GUIM, arXiv 2207.00750) as a feature-store plugin."""
from setuptools import find_packages, setup

# Pins known to work together (pyspark/delta-spark must match; feast needs pandas < 3).
INSTALL_REQUIRES = [
    "pyspark==4.2.0",
    "delta-spark==4.4.0",
    "deltalake>=1.1,<2",          # reads Delta tables into PyTorch without Spark
    "feast==0.67.0",
    "mlflow==3.17.2",
    "pyarrow>=25,<26",
    "pandas>=2.3,<2.4",
    "numpy>=2,<3",
    "torch>=2.5,<3",
    "faiss-cpu>=1.9,<2",
    "gensim>=4.3,<5",
    "redis>=5,<9",
    "scikit-learn>=1.5,<2",
    "scipy>=1.13,<2",
    "matplotlib>=3.9,<4",
    "tqdm>=4.66,<5",
    "pyyaml>=6,<7",
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
    extras_require={
        "dev": [
            "pytest>=8,<10",
            "pytest-timeout>=2.3,<3",
            "nbclient>=0.10,<1",
            "nbformat>=5.10,<6",
            "ipykernel>=6.29,<8",
        ]
    },
    entry_points={"console_scripts": ["guim=guim_features.cli:main"]},
)
