"""`guim ingest` end to end on real Spark + Delta: quarantine, idempotency, clear errors."""
from __future__ import annotations

from types import SimpleNamespace

import deltalake
import pandas as pd
import pytest

from guim_features import cli
from guim_features.config import load_config
from guim_features.errors import GuimError
from guim_features.ingest import ingest, read_source

GOOD = ["1,100,7,pv,1511544070", "1,101,7,cart,1511544080", "2,100,7,buy,1511600000", "3,102,8,fav,1511700000"]
BAD = {  # line -> the reason it must be quarantined with
    "1,100,7,pv": "malformed line: expected 5 comma-separated fields",
    "1,100,7,pv,1511544070,extra": "malformed line: expected 5 comma-separated fields",
    "x1,100,7,pv,1511544070": "missing or unparseable user_id",
    "1,,7,pv,1511544070": "missing or unparseable item_id",
    "1,100,7,pv,yesterday": "unparseable timestamp",
    "1,100,7,pv,99999999999": "timestamp out of range",
    "1,100,7,click,1511544070": "unknown behavior",
}


def table(ws, name) -> pd.DataFrame:
    return deltalake.DeltaTable(str(ws / "lakehouse" / name)).to_pandas()


def args(**kw):
    base = dict(source=None, path=None, events=None, items=None, users=None, num_users=None, num_items=None)
    return SimpleNamespace(**{**base, **kw})


def test_dirty_taobao_file_quarantines_each_bad_line_and_rerun_adds_nothing(spark, workspace, capsys):
    f = workspace / "UserBehavior.csv"
    f.write_text("\n".join(GOOD[:2] + list(BAD) + GOOD[2:]) + "\n")
    cfg = load_config(workspace)
    report = ingest(spark, cfg, *read_source(spark, cfg, args(source="taobao", path=str(f))))
    printed = capsys.readouterr().out
    assert "quarantined 7 row(s)" in printed and "unknown behavior" in printed

    ev = table(workspace, "events")
    assert sorted(zip(ev.user_id, ev.item_id, ev.behavior)) == [
        ("1", "100", "pv"), ("1", "101", "cart"), ("2", "100", "buy"), ("3", "102", "fav")]
    assert ev.ts.min() == pd.Timestamp(1511544070, unit="s", tz="UTC")
    q = table(workspace, "quarantine")
    assert dict(zip(q.raw, q.reason)) == BAD
    assert set(q.source) == {"taobao:UserBehavior.csv"} and set(q.target) == {"events"}
    assert report["tables"]["events"]["accepted"] == 4
    assert sorted(table(workspace, "items").item_id) == ["100", "101", "102"]

    again = ingest(spark, cfg, *read_source(spark, cfg, args(source="taobao", path=str(f))))   # the same input
    assert len(table(workspace, "events")) == 4 and len(table(workspace, "quarantine")) == len(BAD)
    # the counts printed for the rerun are its own (0 new), not the previous commit's
    assert again["tables"]["events"]["accepted"] == 4
    assert again["tables"]["events"]["inserted"] == 0 and again["tables"]["events"]["updated"] == 0


def test_table_source_maps_columns_and_splits_tags(spark, workspace):
    pd.DataFrame({"uid": ["a", "a", "b", None], "sku": ["p1", "p2", "p1", "p2"],
                  "action": ["pv", "buy", "fav", "pv"],
                  "when": [1700000000, 1700000100, 1700000200, 1700000300]}).to_csv(workspace / "ev.csv", index=False)
    pd.DataFrame({"sku": ["p1", "p2", "p3"], "cat": ["shoes", "hats", "shoes"], "price": [10.0, -2.0, 5.0],
                  "labels": ["red|sale", "", "blue"]}).to_parquet(workspace / "items.parquet")
    cfg = load_config(workspace, ["ingest.mapping.events.user_id=uid", "ingest.mapping.events.item_id=sku",
                                  "ingest.mapping.events.behavior=action", "ingest.mapping.events.ts=when",
                                  "ingest.mapping.items.item_id=sku", "ingest.mapping.items.category=cat",
                                  "ingest.mapping.items.tags=labels"])
    a = args(source="table", events=str(workspace / "ev.csv"), items=str(workspace / "items.parquet"))
    ingest(spark, cfg, *read_source(spark, cfg, a), quiet=True)
    ev = table(workspace, "events")
    assert sorted(zip(ev.user_id, ev.item_id, ev.behavior)) == [("a", "p1", "pv"), ("a", "p2", "buy"), ("b", "p1", "fav")]
    it = table(workspace, "items").set_index("item_id")
    assert sorted(it.index) == ["p1", "p3"]
    assert list(it.loc["p1", "tags"]) == ["red", "sale"] and it.loc["p3", "category"] == "shoes"
    q = table(workspace, "quarantine")
    assert sorted(q.reason) == ["missing or unparseable user_id", "negative price"]


def test_source_time_zone_reads_naive_times_and_bounds_as_wall_clock_there(spark, workspace):
    """ingest.timezone=Asia/Shanghai (UTC+8): the window bounds and a date-time string without an
    offset are Beijing time; epoch numbers and a string with an offset are instants already."""
    (workspace / "ev.csv").write_text(
        "user_id,item_id,behavior,ts\n"
        "u1,i1,pv,1511542800\n"                    # 2017-11-24 17:00 UTC = 11-25 01:00 Beijing: inside
        "u1,i2,pv,1512331200\n"                    # 2017-12-03 20:00 UTC = 12-04 04:00 Beijing: after max
        "u2,i1,pv,2017-11-25 08:00:00\n"           # Beijing wall clock = 00:00 UTC
        "u2,i2,pv,2017-11-25T08:00:00+00:00\n")    # an instant
    cfg = load_config(workspace, ["ingest.timezone=Asia/Shanghai", "ingest.min_ts=2017-11-25",
                                  "ingest.max_ts=2017-12-03 23:59:59"])
    ingest(spark, cfg, *read_source(spark, cfg, args(source="table", events=str(workspace / "ev.csv"))), quiet=True)
    ev = table(workspace, "events")
    assert sorted(zip(ev.user_id, ev.item_id, ev.ts)) == [
        ("u1", "i1", pd.Timestamp("2017-11-24 17:00", tz="UTC")),
        ("u2", "i1", pd.Timestamp("2017-11-25 00:00", tz="UTC")),
        ("u2", "i2", pd.Timestamp("2017-11-25 08:00", tz="UTC"))]
    q = table(workspace, "quarantine")
    assert list(q.reason) == ["timestamp out of range"] and "1512331200" in q.raw[0]


def test_clear_errors_for_missing_file_missing_column_and_empty_input(spark, workspace, capsys):
    assert cli.main(["ingest", "--workspace", str(workspace), "--source", "taobao",
                     "--path", str(workspace / "nope.csv")]) == 2
    assert "file or folder not found" in capsys.readouterr().err
    (workspace / "empty.csv").write_text("")
    assert cli.main(["ingest", "--workspace", str(workspace), "--source", "taobao",
                     "--path", str(workspace / "empty.csv")]) == 2
    assert "input is empty" in capsys.readouterr().err
    pd.DataFrame({"user": ["a"], "item_id": ["x"], "behavior": ["pv"], "ts": [1]}).to_csv(workspace / "e.csv", index=False)
    cfg = load_config(workspace)
    with pytest.raises(GuimError, match=r"missing column\(s\) user_id \(column 'user_id'\).*ingest.mapping.events"):
        read_source(spark, cfg, args(source="table", events=str(workspace / "e.csv")))
    assert cli.main(["ingest", "--workspace", str(workspace), "--set", "ingest.users=many"]) == 2
    assert "ingest.users: expected int" in capsys.readouterr().err
