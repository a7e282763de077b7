"""The package as installed: Delta's coordinate from the installed delta-spark, pinned model
requirements, the Feast template shipped inside the package, optional bench dependencies."""
from __future__ import annotations

import re
import sys
from importlib.metadata import requires, version
from pathlib import Path

import pytest
from packaging.requirements import Requirement

from guim_features.config import load_config
from guim_features.versions import delta_package, pinned

ROOT = Path(__file__).resolve().parents[1]


def test_delta_coordinate_is_the_delta_spark_build_for_the_installed_spark():
    import pyspark

    group, artifact, release = delta_package().split(":")
    spark_minor = ".".join(pyspark.__version__.split(".")[:2])              # e.g. 4.2
    assert group == "io.delta"
    assert artifact == f"delta-spark_{spark_minor}_2.13"
    assert release == version("delta-spark")
    # and the installed pair is one delta-spark declares itself compatible with
    spark_req = next(Requirement(r) for r in requires("delta-spark") if r.startswith("pyspark"))
    assert spark_req.specifier.contains(pyspark.__version__)


def test_delta_setting_auto_explicit_or_none(tmp_path):
    assert load_config(tmp_path / "ws", write_default=False).spark.delta_package == "auto"
    assert delta_package("io.delta:delta-spark_4.2_2.13:9.9.9") == "io.delta:delta-spark_4.2_2.13:9.9.9"
    assert delta_package("") == ""


def test_spark_offline_store_gets_the_derived_coordinate(tmp_path):
    from guim_features.publish import store_yaml

    conf = store_yaml(load_config(tmp_path / "ws", ["publish.offline_store=spark"], write_default=False))
    assert conf["offline_store"]["spark_conf"]["spark.jars.packages"] == delta_package()
    none = load_config(tmp_path / "ws", ["publish.offline_store=spark", "spark.delta_package=''"],
                       write_default=False)
    assert "spark.jars.packages" not in store_yaml(none)["offline_store"]["spark_conf"]


def test_no_delta_coordinate_is_typed_in_the_repository():
    literal = re.compile(r"io\.delta:delta-spark_\d")
    files = [ROOT / "README.md", ROOT / "setup.py", *ROOT.glob(".ci/*"), *ROOT.glob("docs/*"),
             *ROOT.glob("spark_jobs/*.py"), *ROOT.glob("bench/*.py"), *ROOT.glob("guim_features/**/*.py"),
             *ROOT.glob("guim_features/feature_repo/*")]
    typed = [str(f.relative_to(ROOT)) for f in files if f.is_file() and literal.search(f.read_text())]
    assert typed == []


def test_pins_drop_local_version_labels(monkeypatch):
    import guim_features.versions as versions

    monkeypatch.setattr(versions, "version", {"torch": "2.5.1+cpu", "numpy": "2.4.6"}.__getitem__)
    assert pinned(["torch", "numpy"]) == ["torch==2.5.1", "numpy==2.4.6"]


def test_feast_template_is_package_data_and_the_top_level_folder_is_the_same_one():
    import guim_features
    from guim_features.publish import TEMPLATE

    assert Path(str(TEMPLATE)) == Path(guim_features.__file__).parent / "feature_repo"
    assert sorted(p.name for p in TEMPLATE.iterdir() if p.name != "__pycache__") == [
        "feature_definitions.py", "feature_store.production.yaml", "feature_store.yaml"]
    # the documented top-level folder is a link to it, not a second copy that could drift
    assert (ROOT / "feature_repo").is_symlink()
    assert (ROOT / "feature_repo").resolve() == (ROOT / "guim_features" / "feature_repo").resolve()


def test_item2vec_without_gensim_names_the_extra(monkeypatch, tmp_path):
    from guim_features.downstream.baselines.item2vec import Item2Vec
    from guim_features.config import load_config
    from guim_features.errors import GuimError

    for name in ("gensim", "gensim.models"):                 # import gensim(.models) -> ImportError,
        monkeypatch.setitem(sys.modules, name, None)         # even after another test imported it
    with pytest.raises(GuimError, match=r"pip install 'guim-features\[bench\]'"):
        Item2Vec(load_config(tmp_path)).embed(None, seed=0)
