"""bench/scale.py's raw-data generator on a tiny size: the counts asked for, microsecond UTC
timestamps, every user active, chunks that pyarrow reads and that split the users between them.
The Spark stages it drives are covered by the end-to-end tests of each stage."""
from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

SCALE = Path(__file__).resolve().parents[1] / "bench" / "scale.py"


@pytest.fixture(scope="module")
def scale():
    spec = importlib.util.spec_from_file_location("bench_scale", SCALE)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="module")
def raw(scale, tmp_path_factory):
    out = tmp_path_factory.mktemp("scale") / "raw"
    # 200 users in chunks of 64: files of 64, 64, 64 and 8 users
    manifest = scale.generate_raw(out, users=200, items=500, events_per_user=20, chunk_users=64, categories=10,
                                  days=5, seed=3)
    return out, manifest


def test_counts_are_as_requested(raw):
    out, manifest = raw
    items = pq.read_table(out / "items.parquet")
    users = pq.read_table(out / "users")
    events = pq.read_table(out / "events")
    assert items.num_rows == 500 and len(set(items["item_id"].to_pylist())) == 500
    assert users["user_id"].to_pylist() == [f"u{i}" for i in range(200)]
    # ~20 events per user on average (Poisson page views, at least 3, plus the funnel): 4,000 +- 10 %
    assert 3600 <= events.num_rows <= 4400
    assert manifest["events"] == events.num_rows and manifest["users"] == 200 and manifest["chunks"] == 4
    assert json.loads((out / "manifest.json").read_text()) == manifest


def test_timestamps_are_microseconds_in_utc_within_the_span(raw):
    out, _ = raw
    ts = pq.read_table(out / "events")["ts"]
    assert ts.type == pa.timestamp("us", tz="UTC")
    days = ts.cast(pa.int64()).to_numpy() / 86_400e6 - 20_454        # 2026-01-01 is day 20,454 of the epoch
    assert days.min() >= 0 and days.max() < 5 + 1                    # 5 days, a buy at most 2 h after its cart


def test_every_user_has_events_and_every_event_a_known_user_and_item(raw):
    out, _ = raw
    events = pq.read_table(out / "events")
    per_user = events.group_by("user_id").aggregate([("user_id", "count")])
    assert per_user.num_rows == 200 and min(per_user["user_id_count"].to_pylist()) >= 3
    item_ids = set(pq.read_table(out / "items.parquet")["item_id"].to_pylist())
    assert set(events["item_id"].to_pylist()) <= item_ids
    assert set(events["behavior"].to_pylist()) <= {"pv", "fav", "cart", "buy"}


def test_chunks_are_separate_readable_files_with_disjoint_users(raw):
    out, _ = raw
    files = sorted((out / "events").glob("part-*.parquet"))
    assert [f.name for f in files] == [f"part-{j:05d}.parquet" for j in range(4)]
    seen: set = set()
    for j, f in enumerate(files):
        users = set(pq.read_table(f, columns=["user_id"])["user_id"].to_pylist())
        expected = {f"u{i}" for i in range(64 * j, min(64 * (j + 1), 200))}
        assert users == expected and not users & seen
        seen |= users


def test_a_chunk_is_redrawn_identically_and_the_catalogue_does_not_depend_on_the_users(scale, tmp_path, raw):
    out, _ = raw
    again = scale.generate_raw(tmp_path / "again", users=64, items=500, events_per_user=20, chunk_users=64,
                               categories=10, days=5, seed=3)
    assert again["events"] == pq.read_table(out / "events" / "part-00000.parquet").num_rows
    assert pq.read_table(tmp_path / "again" / "events").equals(pq.read_table(out / "events" / "part-00000.parquet"))
    assert pq.read_table(tmp_path / "again" / "items.parquet").equals(pq.read_table(out / "items.parquet"))
