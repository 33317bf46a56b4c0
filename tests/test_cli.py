"""The CLI: every verb has help, and bad input ends in one line with exit code 2, no traceback."""

import subprocess
import sys
from pathlib import Path

import pytest
from typer.testing import CliRunner

from monosemantic.cli import app

VERBS = ["harvest", "train", "evaluate", "analyze", "explain", "circuit", "steer", "serve", "export", "demo"]


@pytest.mark.parametrize("verb", VERBS)
def test_every_verb_has_help(verb):
    result = CliRunner().invoke(app, [verb, "--help"])
    assert result.exit_code == 0, result.output
    assert "--set" in result.output


def test_lm_train_has_help():
    result = CliRunner().invoke(app, ["lm", "train", "--help"])
    assert result.exit_code == 0 and "--set" in result.output


def test_bad_config_is_one_clear_line(tmp_path: Path):
    cfg = tmp_path / "c.toml"
    cfg.write_text("[train]\nlrr = 1\n")
    proc = subprocess.run(
        [sys.executable, "-m", "monosemantic.cli", "train", str(cfg)], capture_output=True, text=True
    )
    assert proc.returncode == 2
    assert "Traceback" not in proc.stderr
    assert "unknown key 'train.lrr'; did you mean 'lr'?" in proc.stderr


def test_missing_config_file(tmp_path: Path):
    proc = subprocess.run(
        [sys.executable, "-m", "monosemantic.cli", "harvest", str(tmp_path / "nope.toml")],
        capture_output=True,
        text=True,
    )
    assert proc.returncode == 2 and "not found" in proc.stderr and "Traceback" not in proc.stderr


def test_invalid_option_value_is_one_line(tmp_path: Path):
    cfg = tmp_path / "c.toml"
    cfg.write_text("")
    result = CliRunner().invoke(
        app, ["steer", str(cfg), "--feature", "0", "--prompt", "x", "--mode", "bogus"]
    )
    assert result.exit_code == 2
    assert "Traceback" not in result.output
