"""load_model: paths, dtypes, and one-line errors for what it cannot load."""

from __future__ import annotations

import pytest
import torch
from transformers import AutoTokenizer, OPTConfig, OPTForCausalLM

from monosemantic.lm.model import load_model
from monosemantic.utils.errors import MonosemanticError


def test_path_objects_dtypes_and_tokenizer(tiny_path):
    path = tiny_path("llama")
    m = load_model(path, dtype="bf16", device="cpu")
    assert m.dtype == torch.bfloat16 and m.name == str(path) and m.revision is None
    assert m.tokenizer.pad_token_id is not None
    assert not any(p.requires_grad for p in m.hf.parameters()) and not m.hf.training
    out = m.run(torch.tensor([1, 2, 3]), capture=["blocks.1.hook_mlp_out"])
    assert out.logits.dtype == torch.bfloat16 and out.activations["blocks.1.hook_mlp_out"].shape == (1, 3, 32)


def test_missing_folder_is_one_clear_line(tmp_path):
    with pytest.raises(MonosemanticError, match="does not exist") as err:
        load_model(str(tmp_path / "nope"))
    assert "\n" not in str(err.value)


def test_unsupported_family_names_the_supported_ones(tmp_path, tiny_path):
    cfg = OPTConfig(
        vocab_size=300,
        hidden_size=16,
        num_hidden_layers=1,
        ffn_dim=32,
        num_attention_heads=2,
        word_embed_proj_dim=16,
    )
    OPTForCausalLM(cfg).save_pretrained(tmp_path)
    AutoTokenizer.from_pretrained(tiny_path("gpt2")).save_pretrained(tmp_path)
    with pytest.raises(MonosemanticError, match="unsupported model type 'opt'; supported: .*gpt_neox"):
        load_model(str(tmp_path))
