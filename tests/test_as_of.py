"""As-of snapshots: which snapshots a user needs, and how as-of times are read (pure functions)."""
from __future__ import annotations

from datetime import datetime, timedelta, timezone

import numpy as np
import pytest

from guim_features.export import as_of_times, parse_every, parse_time, plan_snapshots
from guim_features.errors import GuimError

DAY = 86400


def plan(t, existing, times):
    at, n = plan_snapshots(np.array(t, np.int64), np.array(existing, np.int64), np.array(times, np.int64))
    return list(zip(at.tolist(), n.tolist()))


def test_a_snapshot_uses_only_events_strictly_before_it():
    # events at 10, 20, 20, 30; as of 20 only the one at 10 is before it
    assert plan([10, 20, 20, 30], [], [20]) == [(20, 1)]
    assert plan([10, 20, 20, 30], [], [21]) == [(21, 3)]
    assert plan([10, 20, 20, 30], [], [31]) == [(31, 4)]


def test_no_row_before_the_first_event():
    assert plan([10, 20], [], [5, 10]) == []
    assert plan([10, 20], [], [5, 11]) == [(11, 1)]


def test_unchanged_history_keeps_the_previous_row():
    # days 1..5; events on day 1 and day 3 -> rows at day 2 (1 event) and day 4 (2 events) only
    t = [DAY + 5, 3 * DAY + 5]
    times = [k * DAY for k in range(1, 6)]
    assert plan(t, [], times) == [(2 * DAY, 1), (4 * DAY, 2)]


def test_existing_snapshots_count_as_previous_rows_and_are_not_rewritten():
    t = [DAY + 5, 3 * DAY + 5]
    times = [k * DAY for k in range(1, 6)]
    # day 2 and day 4 already exported: nothing to add
    assert plan(t, [2 * DAY, 4 * DAY], times) == []
    # only day 2 exported: day 4 still needs a row (a new event on day 3)
    assert plan(t, [2 * DAY], times) == [(4 * DAY, 2)]
    # an existing snapshot later than the asked time does not hide a change before it
    assert plan(t, [5 * DAY], [2 * DAY]) == [(2 * DAY, 1)]
    # incremental: last snapshot at day 4 (2 events); a new event at day 6 -> a row at day 7 only
    assert plan(t + [6 * DAY], [4 * DAY], [7 * DAY]) == [(7 * DAY, 3)]
    assert plan(t, [4 * DAY], [7 * DAY]) == []


def test_parse_time_and_intervals():
    now = datetime(2026, 3, 4, 5, 6, 7, 890, tzinfo=timezone.utc)
    assert parse_time("now", now) == now.replace(microsecond=0)
    assert parse_time("2017-12-01") == datetime(2017, 12, 1, tzinfo=timezone.utc)
    assert parse_time("2017-12-01T08:00:00+08:00") == datetime(2017, 12, 1, tzinfo=timezone.utc)
    assert parse_time("2017-12-01 10:30:15.9") == datetime(2017, 12, 1, 10, 30, 15, tzinfo=timezone.utc)
    assert parse_every("1d") == timedelta(days=1) and parse_every("6h") == timedelta(hours=6)
    assert parse_every("30m") == timedelta(minutes=30) and parse_every("2w") == timedelta(days=14)
    for bad in ("0d", "1y", "d", "-1d"):
        with pytest.raises(GuimError, match="--every"):
            parse_every(bad)
    with pytest.raises(GuimError, match="as-of time 'yesterday'"):
        parse_time("yesterday")


def test_as_of_times_backfill_includes_both_ends_and_merges():
    got = as_of_times(["2017-11-27"], ("2017-11-25", "2017-11-28"), "1d")
    assert got == [datetime(2017, 11, d, tzinfo=timezone.utc) for d in (25, 26, 27, 28)]
    got = as_of_times(None, ("2017-11-25", "2017-11-26"), "12h")
    assert [t.hour for t in got] == [0, 12, 0] and len(got) == 3
    now = datetime(2026, 1, 1, tzinfo=timezone.utc)
    assert as_of_times(now=now) == [now]
    with pytest.raises(GuimError, match="END is before START"):
        as_of_times(None, ("2017-11-26", "2017-11-25"))


def test_as_of_windows_cut_the_newest_events_before_each_time(spark):
    """Hand-written histories -> one row per needed snapshot with the newest max_len events before it."""
    from guim_features.export import as_of_windows

    hist = spark.createDataFrame(
        [("a", [5, 6, 7, 8], [1, 1, 2, 1], [0, 3, 4, 5], [10, 20, 30, 40], []),
         ("b", [9], [3], [0], [15], [16]),                          # already exported as of 16: unchanged
         ("c", [4], [1], [0], [50], [])],                            # no event before any asked time
        "user_id string, item_idx array<int>, behavior array<int>, gaps array<int>, t array<long>, "
        "existing array<long>")
    got = as_of_windows(hist, [25, 45], max_len=2).orderBy("user_id", "as_of").collect()
    assert [(r.user_id, r.as_of, r.item_idx, r.behavior, r.gaps) for r in got] == [
        ("a", 25, [5, 6], [1, 1], [0, 3]),
        ("a", 45, [7, 8], [2, 1], [4, 5])]                         # 4 events before 45, the newest 2
    assert [r.history for r in got] == [[5, 6], [5, 6, 7, 8]]      # every item before T, not only the window
    again = spark.createDataFrame([("d", [9, 4, 9, 4, 3], [1] * 5, [0] * 5, [1, 2, 3, 4, 5], [])],
                                  hist.schema)
    assert as_of_windows(again, [10], max_len=2).first().history == [3, 4, 9]   # distinct, sorted


def test_shape_users_nests_flat_interests_and_normalises(spark):
    from guim_features.export import shape_users

    flat = spark.createDataFrame([("a", [3.0, 4.0, 0.0, 2.0, 0.0, 0.0], [0.25, 0.75], [3.0, 0.0, 4.0], 7)],
                                 "user_id string, interests array<float>, weights array<float>, "
                                 "profile array<float>, as_of long")
    raw = shape_users(flat, K=2, d=3).first()
    assert raw.interests == [[3.0, 4.0, 0.0], [2.0, 0.0, 0.0]] and raw.weights == [0.25, 0.75] and raw.as_of == 7
    unit = shape_users(flat, K=2, d=3, normalize=True).first()
    assert unit.interests == [[pytest.approx(0.6), pytest.approx(0.8), 0.0], [1.0, 0.0, 0.0]]
    assert raw.profile == unit.profile == [3.0, 0.0, 4.0]          # the profile is never normalised
