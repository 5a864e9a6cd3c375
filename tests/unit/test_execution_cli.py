"""`marketpulse execute`: the configuration it would run with, overrides, and a bad limits file
named field by field."""

from __future__ import annotations

import json
from pathlib import Path

from click.testing import CliRunner

from marketpulse.cli import main
from marketpulse.execution.config import DEFAULTS_FILE, load_config
from marketpulse.settings import Settings


def test_the_shipped_defaults_load_and_settings_override_mode_and_levels() -> None:
    config = load_config(Settings())
    assert config.approval == "semi_auto" and config.levels == ["P1", "P2"]
    over = load_config(Settings(execution_approval="auto", execution_levels=["P1"]))
    assert over.approval == "auto" and over.levels == ["P1"]
    assert DEFAULTS_FILE.exists()


def test_check_prints_the_effective_configuration() -> None:
    result = CliRunner().invoke(
        main, ["execute", "--check", "--approval", "auto", "--levels", "P1"]
    )
    assert result.exit_code == 0, result.output
    config = json.loads(result.output)
    assert config["approval"] == "auto" and config["levels"] == ["P1"]
    assert config["limits"]["max_slippage_bps"] == 200.0


def test_a_bad_limits_file_fails_with_the_field(tmp_path: Path) -> None:
    bad = tmp_path / "limits.yaml"
    bad.write_text("limits:\n  max_open_intents: -3\n")
    result = CliRunner().invoke(main, ["execute", "--check", "--limits", str(bad)])
    assert result.exit_code != 0
    assert "limits.max_open_intents" in result.output


def test_help_teaches_the_modes_and_the_limits_file() -> None:
    result = CliRunner().invoke(main, ["execute", "--help"])
    assert "semi_auto" in result.output and "auto" in result.output
    assert "defaults.yaml" in result.output and "PAPER" in result.output
