"""`circuit --prompts`: graph scores over a prompt set, per dictionary set, with intervals."""

import json
import math

import pytest

from monosemantic.circuits.prompt_sets import read_prompts, trace_prompts
from monosemantic.config import Config
from monosemantic.dictionaries.io import save_dictionary
from monosemantic.utils.errors import ConfigError

from .conftest import PROMPT, make_dicts


def test_read_prompts_tasks_comments_and_errors(tmp_path):
    f = tmp_path / "p.txt"
    f.write_text(
        "# a comment\n\nfirst prompt\n[pronoun]\nLily went home. She\n  \n[colour]\nA red ball and a\n"
    )
    assert read_prompts(f) == [("prompt", "first prompt"), ("pronoun", "Lily went home. She"),
                               ("colour", "A red ball and a")]  # fmt: skip
    (tmp_path / "empty.txt").write_text("# nothing\n[task]\n")
    with pytest.raises(ConfigError, match="holds no prompt"):
        read_prompts(tmp_path / "empty.txt")
    with pytest.raises(ConfigError, match="is not a file"):
        read_prompts(tmp_path / "missing.txt")


def test_two_sets_side_by_side_with_intervals_and_a_paired_difference(tiny_paths, tmp_path, capsys):
    from monosemantic.lm.model import load_model

    d_model = load_model(str(tiny_paths["gpt2"])).d_model
    a = [d.float() for d in make_dicts(d_model, 2, seed=0)]
    b = [d.float() for d in make_dicts(d_model, 2, seed=1)]
    for i in range(2):
        save_dictionary(a[i], tmp_path / "a" / f"transcoder-L{i}")
        save_dictionary(b[i], tmp_path / "b" / f"transcoder-L{i}")
    prompts = tmp_path / "prompts.txt"
    prompts.write_text(f"[one]\n{PROMPT}\nThe dog ran to the park and\n[two]\nTom had a red ball. He\n")
    out = tmp_path / "circuit"
    cfg = Config.model_validate({
        "device": "cpu", "model": {"name": str(tiny_paths["gpt2"])},
        "analyze": {"cache": str(tmp_path / "no-cache")},
        "circuit": {"out": str(out), "batch_size": 16, "ablation": "zero",
                    "sets": {"A": [str(tmp_path / "a")], "B": [str(tmp_path / "b")],
                             "later": [str(tmp_path / "not-trained")],
                             "half": [str(tmp_path / "a"), str(tmp_path / "not-trained")]}},
    })  # fmt: skip
    capsys.readouterr()
    folder = trace_prompts(cfg, prompts)
    seen = capsys.readouterr()
    printed = " ".join((seen.out + seen.err).split())
    assert printed.count("skipped") == 2 and "Graph scores over 3 prompts" in printed
    summary = json.loads((folder / "summary.json").read_text())
    assert list(summary["sets"]) == ["A", "B"] and summary["n_prompts"] == 3
    rows = (folder / "scores.csv").read_text().splitlines()
    assert len(rows) == 1 + 2 * 3
    for s in summary["sets"].values():
        r = s["replacement_score"]
        assert r["n"] == 3 and 0.0 <= r["mean"] <= 1.0
        assert r["ci95"][0] <= r["mean"] <= r["ci95"][1]
        assert set(s["by_task"]) == {"one", "two"} and s["by_task"]["one"]["n_prompts"] == 2
    pair = summary["paired"]["B - A"]["replacement_score"]
    assert pair["n"] == 3 and math.isclose(
        pair["mean"],
        summary["sets"]["B"]["replacement_score"]["mean"] - summary["sets"]["A"]["replacement_score"]["mean"],
        abs_tol=1e-9,
    )
    assert "| A | 2 |" in (folder / "summary.md").read_text()
