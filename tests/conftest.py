"""Suite-wide settings: no model hub, quiet tokenizers, deterministic CPU math."""

import os

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
os.environ.setdefault("MPLBACKEND", "Agg")


import pytest  # noqa: E402


@pytest.fixture
def cli_runner():
    """typer's CliRunner with stderr kept apart from stdout, on every supported click: before 8.2
    it mixes them unless told not to (the floor typer 0.15 installs click 8.1), from 8.2 it never does."""
    from typer.testing import CliRunner

    try:
        return CliRunner(mix_stderr=False)
    except TypeError:
        return CliRunner()
