"""The Python examples of the README and of docs/python.md run as written, against a tiny
demo-shaped run built in tmp (the other pages' Python blocks compile, in tests/test_docs.py)."""

from __future__ import annotations

from pathlib import Path

import pytest
from manual_pages import DOCS, README, split

CONFIG = """
seed = 0
device = "cpu"
[model]
name = "storyworld"
[data]
text = "storyworld"
context_size = 32
max_tokens = 4096
[sites]
names = ["blocks.1.hook_resid_post", "blocks.0.mlp.hook_in", "blocks.0.hook_mlp_out",
         "blocks.1.mlp.hook_in", "blocks.1.hook_mlp_out"]
[harvest]
out = "runs/demo/activations"
[dictionary]
architecture = "topk"
d_sae = 64
k = 8
[[dictionaries]]
name = "topk-k16"
site = "blocks.1.hook_resid_post"
[[dictionaries]]
name = "transcoder-L0"
site = "blocks.0.mlp.hook_in"
site_out = "blocks.0.hook_mlp_out"
[[dictionaries]]
name = "transcoder-L1"
site = "blocks.1.mlp.hook_in"
site_out = "blocks.1.hook_mlp_out"
[train]
tokens = 4096
batch_size = 512
buffer_tokens = 2048
init_tokens = 1024
out = "runs/demo/dictionaries"
[analyze]
out = "runs/demo"
top_k = 4
quantiles = 2
per_quantile = 2
negatives = 2
[explain]
db = "runs/demo/features.db"
[circuit]
out = "runs/demo/circuit"
prompt = "Tom the dog found a red ball in the park. He"
mean_sequences = 8
"""


def python_blocks(path: Path, section: str | None = None) -> list[str]:
    """The ```python blocks of a page, or of one of its `## ` sections."""
    text = path.read_text()
    if section is not None:
        start = text.index(f"## {section}")
        end = text.find("\n## ", start + 1)
        text = text[start : end if end >= 0 else len(text)]
    blocks, _ = split(text)
    return [b.code for b in blocks if b.lang == "python"]


@pytest.mark.slow
def test_readme_and_docs_python_examples_run(tmp_path, monkeypatch):
    import monosemantic

    monkeypatch.chdir(tmp_path)
    (tmp_path / "configs").mkdir()
    (tmp_path / "configs" / "demo.toml").write_text(CONFIG)
    cfg = monosemantic.load_config("configs/demo.toml")
    monosemantic.harvest(cfg)
    monosemantic.train(cfg)
    monosemantic.analyze(cfg)
    monosemantic.explain(cfg)
    monosemantic.circuit(cfg)
    examples = [
        ("README.md", python_blocks(README)),
        # one scope per page, as a reader runs them: the inline views use SpliceModel's import
        (
            "docs/python.md",
            python_blocks(DOCS / "python.md", "SpliceModel")
            + python_blocks(DOCS / "python.md", "Inline views"),
        ),
    ]
    for where, blocks in examples:
        assert blocks, where
        scope: dict = {}
        for block in blocks:
            exec(compile(block, where, "exec"), scope)  # noqa: S102 (the pages' own examples)
        if "cache" in scope:
            assert scope["cache"].codes["topk-k16"].shape[-1] == 64
