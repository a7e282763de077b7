"""The ``guim`` command line itself: workspaces, messages, help. No Spark is started here."""
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
