"""The Foundation acceptance: `monosemantic harvest` on the shipped storyworld LM with the demo sites.

`.venv/bin/monosemantic harvest configs/demo.toml --set data.max_tokens=16384 --set harvest.out=OUT`
must write a docs/design.md cache whose `model` names the shipped LM, and whose first shard holds
`tokens` and `blocks.1.hook_resid_post` equal to block 1's output of the model loaded with plain
`AutoModelForCausalLM.from_pretrained`. The config here repeats demo.toml's harvest sections.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from transformers import AutoModelForCausalLM

from monosemantic.activations.cache import ActivationCache
from monosemantic.corpus.concepts import CONCEPTS
from monosemantic.lm.shipped import SHIPPED_DIR

CONFIG = """
device = "cpu"
seed = 0

[model]
name = "storyworld"

[data]
text = "storyworld"
context_size = 128
max_tokens = 131_072
special_tokens = "exclude"

[sites]
names = [
  "blocks.1.hook_resid_post",
  "blocks.0.mlp.hook_in", "blocks.0.hook_mlp_out",
  "blocks.1.mlp.hook_in", "blocks.1.hook_mlp_out",
  "blocks.2.mlp.hook_in", "blocks.2.hook_mlp_out",
  "blocks.3.mlp.hook_in", "blocks.3.hook_mlp_out",
]

[harvest]
out = "runs/demo/activations"
dtype = "float16"
batch_size = 64
shard_sequences = 256
"""


@pytest.mark.skipif(
    not (SHIPPED_DIR / "config.json").exists(), reason="the shipped storyworld LM is not built yet"
)
def test_harvest_command_on_the_shipped_model(tmp_path: Path):
    config = tmp_path / "demo.toml"
    config.write_text(CONFIG)
    out = tmp_path / "OUT"
    cli = Path(sys.executable).parent / "monosemantic"
    result = subprocess.run(
        [str(cli), "harvest", str(config), "--set", "data.max_tokens=16384", "--set", f"harvest.out={out}"],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert result.returncode == 0, result.stderr

    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["format_version"] == 1
    assert manifest["model"] == manifest["tokenizer"] == str(SHIPPED_DIR.resolve())
    assert Path(manifest["model"]).is_absolute() and (Path(manifest["model"]) / "config.json").exists()
    assert list(manifest["sites"])[0] == "blocks.1.hook_resid_post" and len(manifest["sites"]) == 9
    assert manifest["dtype"] == "float16" and manifest["context_size"] == 128
    assert manifest["special_tokens"] == "exclude" and manifest["special_token_ids"]
    assert manifest["prepend_bos"] is True and manifest["data"]["text"] == "storyworld"
    assert manifest["sequences"] == 128 and manifest["tokens"] == 16384 and manifest["complete"]
    assert [s["file"] for s in manifest["shards"]] == ["shard-00000.safetensors"]
    assert manifest["concepts"] == [c.name for c in CONCEPTS]

    shard = ActivationCache(out).load_shard(0)
    assert shard["tokens"].dtype == torch.int32 and shard["tokens"].shape == (128, 128)
    resid = shard["blocks.1.hook_resid_post"]
    assert resid.dtype == torch.float16 and resid.shape[:2] == (128, 128)
    hf = AutoModelForCausalLM.from_pretrained(manifest["model"], dtype=torch.float32).eval()
    with torch.no_grad():
        expected = hf(shard["tokens"][:16].long(), output_hidden_states=True).hidden_states[2]
    torch.testing.assert_close(resid[:16].float(), expected, rtol=1e-3, atol=1e-3)
