"""The ``guim`` command line itself: workspaces, messages, help, quiet output and progress. No Spark
is started here."""
from __future__ import annotations

import pytest

from guim_features.cli import main

READ_ONLY = [["sequences"], ["train"], ["embed"], ["publish"], ["recommend", "u1"], ["bench"], ["promote"]]


@pytest.mark.parametrize("command", READ_ONLY, ids=lambda c: c[0])
def test_a_mistyped_workspace_is_not_created(tmp_path, capsys, command):
    typo = tmp_path / "guim_wokspace"
    assert main([*command, "--workspace", str(typo)]) == 2
    assert f"guim {command[0]}: error: workspace not found: {typo}" in capsys.readouterr().err
    assert not typo.exists()


@pytest.fixture
def no_spark(monkeypatch):
    """Fails the test if a command asks for a Spark session."""
    from guim_features import spark

    def refuse(*a, **k):
        raise AssertionError("a SparkSession was requested")

    monkeypatch.setattr(spark, "get_spark", refuse)


@pytest.mark.parametrize("given, message", [
    (["--source", "taobao", "--path", "{ws}/UserBehavior.csv"],
     "taobao: file or folder not found: {ws}/UserBehavior.csv"),
    (["--source", "movielens", "--path", "{ws}"], "movielens: {ws} has neither u.data (ml-100k) nor ratings.dat"),
    (["--source", "table", "--events", "{ws}", "--items", "{ws}/items.parquet"],
     "--items: file or folder not found: {ws}/items.parquet"),
    (["--source", "table", "--events", "{ws}/guim.yaml"], "--events {ws}/guim.yaml: cannot tell the format"),
    (["--set", "ingest.timezone=Mars/Olympus"], "ingest.timezone='Mars/Olympus': not a known time zone"),
], ids=["taobao", "movielens", "table-items", "table-format", "timezone"])
def test_ingest_input_mistakes_are_reported_before_spark_starts(tmp_path, capsys, no_spark, given, message):
    ws = tmp_path / "ws"
    assert main(["ingest", "--workspace", str(ws)] + [a.format(ws=ws) for a in given]) == 2
    assert f"guim ingest: error: {message.format(ws=ws)}" in capsys.readouterr().err


def test_sequences_without_bronze_says_run_ingest_before_spark_starts(tmp_path, capsys, no_spark):
    from guim_features.config import load_config

    load_config(tmp_path / "ws")
    assert main(["sequences", "--workspace", str(tmp_path / "ws")]) == 2
    err = capsys.readouterr().err
    assert "guim sequences: error: Delta table events not found" in err and "run `guim ingest` first" in err


def test_a_child_started_while_quiet_writes_to_the_log(tmp_path, capfd):
    """What the JVM prints (Ivy's report, log4j) lands in the log file, not on the terminal: a child
    process inherits the redirected output for its whole life."""
    import subprocess

    from guim_features.spark import _output_to

    log = tmp_path / "logs" / "spark.log"
    with _output_to(str(log)):
        subprocess.run(["sh", "-c", "echo ':: resolving dependencies ::'; echo 'WARN NativeCodeLoader' >&2"])
    print("after")
    out, err = capfd.readouterr()
    assert out == "after\n" and err == ""
    assert log.read_text().splitlines() == [":: resolving dependencies ::", "WARN NativeCodeLoader"]


def test_quiet_mode_drops_library_warnings_and_logs_but_not_ours(tmp_path, recwarn, caplog):
    import logging
    import warnings

    from guim_features.cli import _quiet

    with _quiet(str(tmp_path)):
        warnings.warn_explicit("Hint: Inferred schema ...", UserWarning, "/site-packages/mlflow/types/utils.py", 1,
                               module="mlflow.types.utils")
        with warnings.catch_warnings():                    # as MLflow's filter_user_warnings_once does
            warnings.simplefilter("once", category=UserWarning)
            warnings.warn_explicit("Add type hints to the `predict` method", UserWarning,
                                   "/site-packages/mlflow/pyfunc/utils/data_validation.py", 187,
                                   module="mlflow.pyfunc.utils.data_validation")
        warnings.warn_explicit("guim.yaml: embed.x is no longer used", UserWarning,
                               "/src/guim_features/config.py", 1, module="guim_features.config")
        logging.getLogger("alembic.runtime.migration").warning("Context impl SQLiteImpl.")
    assert [str(w.message) for w in recwarn] == ["guim.yaml: embed.x is no longer used"]   # what is displayed
    assert "SQLiteImpl" not in caplog.text
    logging.getLogger("alembic.runtime.migration").warning("after the command")
    assert "after the command" in caplog.text                   # logging is back to normal


def test_bench_reports_each_run_with_the_time_left(tmp_path):
    """--seeds 2 over a seeded, a deterministic and a failing method: 3 runs (the failing method's
    seeds leave the count), numbered in order, the last with nothing left."""
    from test_bench_metrics import tiny

    from guim_features.downstream import make_methods, run_suite
    from guim_features.downstream.baselines import Method
    from guim_features.config import load_config

    class Broken(Method):
        name = "broken"

        def embed(self, data, seed):
            raise RuntimeError("cannot fit")

    cfg = load_config(tmp_path / "ws", ["bench.methods=[random, popularity]", "bench.tasks=[next_item]"])
    lines = []
    run_suite(cfg, tiny(), [Broken(cfg)] + make_methods(cfg), seeds=2, log=lines.append)
    assert lines[0] == "bench: method broken failed: RuntimeError: cannot fit"
    assert [line.split(":")[1].strip() for line in lines[1:]] == [
        "[1/3] random seed 0", "[2/3] random seed 1", "[3/3] popularity seed 0"]
    assert all(" elapsed, about " in line for line in lines[1:])
    assert lines[-1].endswith("about 0s left")


def test_version_comes_from_the_installed_package(capsys):
    from importlib.metadata import version

    with pytest.raises(SystemExit) as e:
        main(["--version"])
    assert e.value.code == 0 and capsys.readouterr().out == f"guim {version('guim-features')}\n"


def test_bare_guim_lists_every_command(capsys):
    from guim_features.cli import COMMANDS

    assert main([]) == 2
    listed = [line.split()[0] for line in capsys.readouterr().out.splitlines() if line.startswith("    ")
              and not line.startswith("     ")]
    assert listed == ["demo", "ingest", "sequences", "train", "embed", "publish", "recommend", "bench", "promote",
                      "config"]
    assert set(COMMANDS) == {"demo", "ingest", "sequences", "train", "embed", "publish", "recommend", "bench",
                             "promote", "config"}


@pytest.mark.parametrize("command", ["demo", "ingest", "sequences", "train", "embed", "publish", "recommend",
                                     "bench", "promote", "config"])
def test_each_command_help_shows_defaults_and_an_example(capsys, command):
    with pytest.raises(SystemExit) as e:
        main([command, "--help"])
    out = " ".join(capsys.readouterr().out.split())          # argparse wraps lines at the terminal width
    assert e.value.code == 0
    assert "--workspace WORKSPACE workspace folder (default: guim_workspace)" in out
    assert f"example: guim {command}" in out
    assert "--verbose" in out and "(default: False)" not in out and "(default: None)" not in out


def test_help_shows_each_option_default():
    from guim_features.cli import build_parser

    def help_of(command):
        return " ".join(build_parser()._subparsers._group_actions[0].choices[command].format_help().split())

    assert "-k K number of items (default: 20)" in help_of("recommend")
    assert "--seeds SEEDS repeat with this many seeds, report mean and spread (default: 1)" in help_of("bench")
    assert "--launcher {torchrun,spark} how to start DDP processes when --num-processes > 1 (default: torchrun)" \
        in help_of("train")


def test_config_prints_each_key_with_its_help_and_what_changed(tmp_path, capsys):
    from guim_features.config import load_config

    ws = tmp_path / "ws"
    load_config(ws)
    (ws / "guim.yaml").write_text("train:\n  epochs: 7\n")
    assert main(["config", "--workspace", str(ws), "--set", "train.K=1"]) == 0
    lines = capsys.readouterr().out.splitlines()
    k = lines.index("  K: 1")
    assert lines[k - 1] == "  # Number of user interests (1 = the single-vector baseline) [changed; default: 4]"
    assert "  epochs: 7" in lines and "  heads: 2" in lines
    assert lines[lines.index("  heads: 2") - 1] == "  # Attention heads per layer (d must be divisible by it)"


def test_config_of_a_missing_workspace_shows_the_defaults_and_creates_nothing(tmp_path, capsys):
    assert main(["config", "--workspace", str(tmp_path / "nowhere")]) == 0
    captured = capsys.readouterr()
    assert "workspace " + str(tmp_path / "nowhere") + " not found" in captured.err
    assert "  K: 4" in captured.out.splitlines()
    assert not (tmp_path / "nowhere").exists()


def test_bench_quick_runs_fewer_tasks_with_one_seed_and_set_still_wins(tmp_path, capsys):
    import pandas as pd
    from deltalake import write_deltalake
    from test_bench_metrics import tiny

    from guim_features.config import load_config

    cfg = load_config(tmp_path / "ws")
    d = tiny()
    frames = {"item_index": d.labels_items[["item_id", "item_idx"]], "labels_users": d.labels_users,
              "labels_items": d.labels_items, "labels_future": d.labels_future,
              "user_sequences": pd.DataFrame({"user_id": d.user_ids, **{k: [s[k] for s in d.seqs] for k in
                                                                          ("item_idx", "behavior", "gaps", "split")}})}
    for name, df in frames.items():
        write_deltalake(cfg.table(name), df)
    assert main(["bench", "--workspace", cfg.workspace, "--seeds", "3", "--quick", "--set",
                 "bench.methods=[random, popularity]"]) == 0
    out = capsys.readouterr().out
    table = [line.split(" | ") for line in out.splitlines() if line.startswith("| ")]
    assert table[0] == ["| task", "metric", "random", "popularity |"]
    assert {row[0][2:] for row in table[2:]} == {"next_item", "item_category", "similar_items", "(cost)"}
    assert "One seed" in out
    assert not (tmp_path / "ws" / "mlflow.db").exists()        # a check, not a record promote could read
