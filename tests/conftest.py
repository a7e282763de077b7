"""Shared fixtures: one local Spark session with Delta for the whole suite; ML-100K location."""
from __future__ import annotations

import os
from pathlib import Path

import pytest

ML100K = Path(__file__).resolve().parents[1].parent / "shared" / "data" / "ml-100k"


@pytest.fixture(scope="session")
def spark():
    """One SparkSession (local[2], Delta, no UI) shared by every test that needs Spark."""
    from guim_features.config import SparkConfig
    from guim_features.spark import get_spark

    s = get_spark(SparkConfig(master="local[2]", shuffle_partitions=2, driver_memory="2g"))
    yield s


@pytest.fixture(scope="session")
def ml100k() -> Path:
    if not (ML100K / "u.data").exists():
        pytest.skip(f"MovieLens-100K not found at {ML100K}")
    return ML100K


@pytest.fixture
def workspace(tmp_path) -> Path:
    ws = tmp_path / "ws"
    ws.mkdir()
    return ws


@pytest.fixture(autouse=True, scope="session")
def _quiet_threads():
    os.environ.setdefault("OMP_NUM_THREADS", "2")
    yield
