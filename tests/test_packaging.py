"""The package as installed: the Feast template shipped inside the package."""
from __future__ import annotations

from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def test_feast_template_is_package_data_and_the_top_level_folder_is_the_same_one():
    import guim_features
    from guim_features.publish import TEMPLATE

    assert Path(str(TEMPLATE)) == Path(guim_features.__file__).parent / "feature_repo"
    assert sorted(p.name for p in TEMPLATE.iterdir() if p.name != "__pycache__") == [
        "feature_definitions.py", "feature_store.production.yaml", "feature_store.yaml"]
    # the documented top-level folder is a link to it, not a second copy that could drift
    assert (ROOT / "feature_repo").is_symlink()
    assert (ROOT / "feature_repo").resolve() == (ROOT / "guim_features" / "feature_repo").resolve()
