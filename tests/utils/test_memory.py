"""Memory before work (utils/memory.py): with less memory free than a setting needs, a verb refuses
in one line naming the setting before the work, or (circuit's backward batches) takes smaller
steps with the same result. The free memory is lowered by replacing the one reading a test cannot
set for real (`available_bytes`, the OS's MemAvailable); the estimates and the decisions taken
from them are the code under test."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from tiny_world import MLP_IN, MLP_OUT, base_toml

from monosemantic.circuits.attribution import attribute, row_bytes
from monosemantic.circuits.replacement import ReplacementModel
from monosemantic.cli import app
from monosemantic.config.dictionary import DictionaryConfig
from monosemantic.dictionaries import build_dictionary
from monosemantic.dictionaries.io import load_dictionary
from monosemantic.lm.model import load_model
from monosemantic.utils import memory
from monosemantic.utils.errors import ConfigError

PROMPT = "Lily the cat went to the beach"


def _free(monkeypatch: pytest.MonkeyPatch, n_bytes: int) -> None:
    monkeypatch.setattr(memory, "available_bytes", lambda device=None: n_bytes)


def _one_line(result) -> str:
    lines = [x for x in result.stderr.splitlines() if x.strip()]
    assert result.exit_code == 2 and "Traceback" not in result.output, result.stderr
    assert len(lines) >= 1 and lines[-1].startswith("error:"), result.stderr
    assert sum(x.startswith("error:") for x in lines) == 1, result.stderr
    return lines[-1]


def test_check_memory_names_the_work_and_the_fix(monkeypatch):
    _free(monkeypatch, 10 * 2**20)
    memory.check_memory(7 * 2**20, "the thing", "lower x")  # 8 MiB usable: fits
    with pytest.raises(ConfigError, match=r"^the thing need about 9\.0 MiB of memory, but about 8\.0 MiB"):
        memory.check_memory(9 * 2**20, "the thing", "lower x")
    assert memory.fitting(2**20) == 8 and memory.fitting(2**20, fixed=4 * 2**20) == 4
    _free(monkeypatch, None)
    memory.check_memory(2**62, "unknown free memory", "never refused")  # unknown: no refusal
    assert memory.fitting(1) is None


def test_evaluate_refuses_batches_that_cannot_fit_before_reading_them(
    tiny_world, tmp_path, monkeypatch, cli_runner
):
    case = tmp_path / "case"
    case.mkdir()
    cfg = case / "c.toml"
    cfg.write_text(base_toml(tiny_world, case))
    _free(monkeypatch, 2**17)  # the held-out sequences of the tiny cache need about 400 KiB per batch
    line = _one_line(cli_runner.invoke(app, ["evaluate", str(cfg), "--set", "evaluate.batch_size=64"]))
    assert "evaluate.batch_size=64" in line and "lower evaluate.batch_size" in line, line
    assert not (case / "eval").exists()


def test_analyze_refuses_kept_examples_that_cannot_fit(tiny_world, tmp_path, monkeypatch, cli_runner):
    case = tmp_path / "case"
    case.mkdir()
    cfg = case / "c.toml"
    cfg.write_text(base_toml(tiny_world, case))
    _free(monkeypatch, 2**16)
    line = _one_line(cli_runner.invoke(app, ["analyze", str(cfg), "--set", "analyze.top_k=64"]))
    assert "need about" in line and "analyze." in line, line
    assert not (case / "analysis" / "features.db").exists()


@pytest.fixture()
def model(tiny_world):
    m = load_model(str(tiny_world["model"]))
    m.hf.double()
    return m


@pytest.fixture()
def replacement(model, tiny_world) -> ReplacementModel:
    return ReplacementModel(model, [load_dictionary(tiny_world["tc"]).double()])


def test_circuit_takes_smaller_backward_batches_for_the_same_graph(replacement, monkeypatch, capsys):
    free = attribute(replacement, prompt=PROMPT, batch_size=64, show_progress=False)
    n_pos = free.n_pos
    per_row = row_bytes(replacement, n_pos)
    _free(monkeypatch, int(3.5 * per_row / memory.USABLE))  # room for 3 rows, not 64
    capsys.readouterr()
    tight = attribute(replacement, prompt=PROMPT, batch_size=64, show_progress=False)
    said = capsys.readouterr()
    assert "circuit.batch_size=64 does not fit in memory" in said.out + said.err
    assert torch.equal(tight.features, free.features)
    torch.testing.assert_close(tight.adjacency, free.adjacency, rtol=1e-9, atol=1e-12)


def test_circuit_refuses_a_prompt_or_a_matrix_that_cannot_fit(model, replacement, monkeypatch):
    ids = replacement.tokenize(PROMPT)
    per_row = row_bytes(replacement, ids.numel())
    _free(monkeypatch, int(0.5 * per_row / memory.USABLE))
    with pytest.raises(
        ConfigError, match=rf"frozen activations of a {ids.numel()}-token prompt.*shorten the prompt"
    ):
        attribute(replacement, prompt=PROMPT, show_progress=False)
    # a wide dictionary: many active features, so the matrix outgrows one backward row
    torch.manual_seed(0)
    wide = build_dictionary(
        DictionaryConfig(architecture="topk", d_sae=1024, k=512, site=MLP_IN, site_out=MLP_OUT), 32, 32
    )
    wide_rm = ReplacementModel(model, [wide.double()])
    _free(monkeypatch, int(2 * per_row / memory.USABLE))
    with pytest.raises(ConfigError, match=r"attribution matrix .*lower circuit.max_feature_nodes or shorten"):
        attribute(wide_rm, prompt=PROMPT, max_feature_nodes=10**4, show_progress=False)


def test_memory_module_is_where_the_decision_lives():
    """One home: the verbs use utils/memory.py, none reads /proc/meminfo itself."""
    src = Path(memory.__file__).parents[1]
    readers = [p for p in src.rglob("*.py") if "MemAvailable" in p.read_text() and p.name != "memory.py"]
    assert readers == []
