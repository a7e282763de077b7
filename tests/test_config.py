"""Configuration: typed overrides, dates that YAML reads as dates, retired keys."""
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
