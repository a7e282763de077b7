"""Configuration: typed overrides, dates that YAML reads as dates, time zones, retired keys."""
from __future__ import annotations

import pytest

from guim_features.config import ConfigError, load_config


def test_dates_and_times_round_trip_into_string_keys(tmp_path):
    cfg = load_config(tmp_path / "ws", ["sequences.valid_cutoff=2017-11-25",
                                        "sequences.test_cutoff=2017-12-01 12:30:00"])
    assert cfg.sequences.valid_cutoff == "2017-11-25"
    assert cfg.sequences.test_cutoff == "2017-12-01 12:30:00"
    (tmp_path / "ws2").mkdir()
    (tmp_path / "ws2" / "guim.yaml").write_text("sequences:\n  valid_cutoff: 2017-11-26\n")
    assert load_config(tmp_path / "ws2").sequences.valid_cutoff == "2017-11-26"


def test_overrides_are_read_as_the_declared_type(tmp_path):
    """A string key keeps the text as typed (YAML would read a date, a number, a block marker or a
    boolean); a float key also takes exponent notation that YAML 1.1 leaves as text."""
    cfg = load_config(tmp_path / "ws", ["ingest.min_ts=2017-11-25", "demo.user=0123", "ingest.tag_separator=|",
                                        "paths.reports=yes", "train.lr=1e-3", "train.epochs=7",
                                        "embed.model_uri='models:/guim/3'", "ingest.mapping.events.user_id=42",
                                        "bench.methods=[als, sasrec]"])
    assert cfg.ingest.min_ts == "2017-11-25"
    assert cfg.demo.user == "0123" and cfg.ingest.tag_separator == "|" and cfg.paths.reports == "yes"
    assert cfg.train.lr == 0.001 and cfg.train.epochs == 7
    assert cfg.embed.model_uri == "models:/guim/3"
    assert cfg.ingest.mapping["events"] == {"user_id": "42"}
    assert cfg.bench.methods == ["als", "sasrec"]
    with pytest.raises(ConfigError, match="train.lr: expected float, got str 'fast'"):
        load_config(tmp_path / "ws", ["train.lr=fast"])
    with pytest.raises(ConfigError, match=r"--set bench.methods: value '\[als' is not valid YAML"):
        load_config(tmp_path / "ws", ["bench.methods=[als"])


def test_a_number_in_the_file_for_a_string_key_says_to_quote_it(tmp_path):
    (tmp_path / "ws").mkdir()
    (tmp_path / "ws" / "guim.yaml").write_text("demo:\n  user: 123\n")
    with pytest.raises(ConfigError, match="demo.user: expected str, got int 123 \\(write it in quotes: '123'\\)"):
        load_config(tmp_path / "ws")


def test_time_bounds_are_read_in_the_source_time_zone(tmp_path):
    """Beijing is UTC+8 all year: midnight there is 16:00 UTC the day before."""
    from guim_features.ingest import time_bounds

    cfg = load_config(tmp_path / "ws", ["ingest.timezone=Asia/Shanghai", "ingest.min_ts=2017-11-25",
                                        "ingest.max_ts=2017-12-03T23:59:59+00:00"])
    assert time_bounds(cfg.ingest) == ("2017-11-24 16:00:00+00:00", "2017-12-03 23:59:59+00:00")
    assert time_bounds(load_config(tmp_path / "ws").ingest)[0] == "1990-01-01 00:00:00+00:00"   # UTC default
    with pytest.raises(ConfigError, match="ingest.timezone='Beijing': not a known time zone"):
        time_bounds(load_config(tmp_path / "ws", ["ingest.timezone=Beijing"]).ingest)
    with pytest.raises(ConfigError, match="ingest.max_ts='next week': expected YYYY-MM-DD"):
        time_bounds(load_config(tmp_path / "ws", ["ingest.max_ts=next week"]).ingest)


def test_wrong_types_and_unknown_keys_are_named(tmp_path):
    with pytest.raises(ConfigError, match="sequences.max_len: expected int, got str 'abc'"):
        load_config(tmp_path / "ws", ["sequences.max_len=abc"])
    with pytest.raises(ConfigError, match="unknown config key train.nope"):
        load_config(tmp_path / "ws", ["train.nope=1"])


def test_retired_key_is_ignored_with_a_warning(tmp_path):
    (tmp_path / "ws").mkdir()
    (tmp_path / "ws" / "guim.yaml").write_text("embed:\n  sequence_part: all\n  batch_size: 64\n")
    with pytest.warns(UserWarning, match="embed.sequence_part is no longer used"):
        cfg = load_config(tmp_path / "ws")
    assert cfg.embed.batch_size == 64


def test_a_new_workspace_file_sets_no_key_so_package_defaults_apply(tmp_path):
    import yaml

    load_config(tmp_path / "ws")
    path = tmp_path / "ws" / "guim.yaml"
    text = path.read_text()
    assert yaml.safe_load(text) is None and all(line.startswith("#") for line in text.splitlines())
    path.write_text(text + "train:\n  epochs: 20\n")                 # what the user adds is used
    cfg = load_config(tmp_path / "ws")
    assert cfg.train.epochs == 20 and cfg.train.K == 4 and cfg.ingest.timezone == "UTC"
    assert path.read_text() == text + "train:\n  epochs: 20\n"       # loading never rewrites it


def test_a_file_written_with_every_key_still_loads(tmp_path):
    (tmp_path / "ws").mkdir()
    (tmp_path / "ws" / "guim.yaml").write_text(
        "# GUIM Features configuration. Every key is optional; delete one to get its default.\n\n"
        "spark:\n  # Spark master URL\n  master: local[2]\n  conf: {}\n"
        "ingest:\n  # Known behaviours\n  behaviors: [pv, fav, cart, buy]\n  mapping: {events: {}, items: {}, users: {}}\n"
        "train:\n  # Maximum epochs\n  epochs: 40\n")
    cfg = load_config(tmp_path / "ws")
    assert cfg.train.epochs == 40 and cfg.ingest.behaviors == ["pv", "fav", "cart", "buy"]
    assert cfg.spark.master == "local[2]"
