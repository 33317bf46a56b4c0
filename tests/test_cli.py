"""The CLI: every verb has help, and bad input ends in one line with exit code 2, no traceback."""

import subprocess
import sys
from pathlib import Path

import pytest
from typer.testing import CliRunner

from monosemantic.cli import app, verbs


def test_the_verb_list_comes_from_the_app():
    found = verbs()
    assert len(found) == len(set(found))
    # a sample that a walk missing sub-commands or late additions would lose
    assert {"lm train", "plan", "compare", "blind", "unblind", "demo"} <= set(found)


@pytest.mark.parametrize("verb", verbs())
def test_every_verb_has_help(verb):
    result = CliRunner().invoke(app, [*verb.split(), "--help"])
    assert result.exit_code == 0, result.output
    assert "--set" in result.output


@pytest.mark.parametrize("flag", [["--blind", "a", "b"], ["--unblind"]])
def test_compare_points_its_old_flags_at_their_verbs(tmp_path: Path, flag):
    cfg = tmp_path / "c.toml"
    cfg.write_text("")
    result = CliRunner().invoke(app, ["compare", str(cfg), *flag])
    assert result.exit_code == 2
    lines = [line for line in result.output.splitlines() if line.strip()]
    assert len(lines) == 1 and "monosemantic " + flag[0].lstrip("-") + " CONFIG" in lines[0], result.output


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


@pytest.mark.parametrize("served, code", [("None", 0), ("(_ for _ in ()).throw(SystemExit(143))", 143)])
def test_serve_called_in_process_returns_to_its_caller(tmp_path, served, code):
    """Only the console entry (`main`) skips the interpreter's teardown after `serve` shuts down:
    `app` called in-process (tests, notebooks) returns, with serve's exit code. An os._exit in the
    verb once ended the whole test session early with exit 0, tests unrun. The server itself is
    replaced by a stub here: what is under test is the verb's shutdown path, in a child process so
    a regression cannot end this one."""
    cfg = tmp_path / "c.toml"
    cfg.write_text('device = "cpu"\n')
    script = (
        "import monosemantic.server.app as s\n"
        f"s.serve = lambda cfg: {served}\n"
        "from typer.testing import CliRunner\n"
        "from monosemantic.cli import app\n"
        f"r = CliRunner().invoke(app, ['serve', {str(cfg)!r}])\n"
        "print('returned', r.exit_code)\n"
    )
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=300)
    assert f"returned {code}" in done.stdout, done.stdout + done.stderr
