"""The storyworld LM shipped in the package: loads by name and models fresh stories well."""

from __future__ import annotations

import itertools
import json

import torch

from monosemantic.config import DataConfig
from monosemantic.corpus.windows import TokenWindows
from monosemantic.lm.model import load_model
from monosemantic.lm.shipped import shipped_model_path

# Measured: the shipped model scores 0.91-0.95 nats/token on fresh storyworld windows (val 0.927).
LOSS_BOUND = 1.1


def test_shipped_files_are_small_fp16_and_documented():
    path = shipped_model_path()
    size = sum(f.stat().st_size for f in path.rglob("*") if f.is_file())
    assert size <= 10 * 2**20
    config = json.loads((path / "config.json").read_text())
    assert config["n_layer"] >= 4 and config["dtype"] == "float16"
    card = (path / "README.md").read_text()
    assert "monosemantic lm train configs/storyworld-lm.toml" in card and "final val loss" in card


def test_shipped_model_loads_in_float32_and_predicts_fresh_stories():
    model = load_model("storyworld", device="cpu")
    assert model.dtype == torch.float32 and model.family == "gpt2" and model.n_layers >= 4
    data = DataConfig(text="storyworld", seed=987_654, context_size=128)
    windows = TokenWindows(data, model.tokenizer)
    tokens = torch.stack([w.tokens for w in itertools.islice(windows, 8)])
    with torch.no_grad():
        loss = model.hf(input_ids=tokens, labels=tokens).loss.item()
    assert loss < LOSS_BOUND


def test_shipped_model_tracks_pronoun_gender():
    model = load_model("storyworld", device="cpu")
    tok = model.tokenizer
    he, she = tok.encode(" He"), tok.encode(" She")
    assert len(he) == len(she) == 1
    for prompt, want, other in [
        ("Lily the cat went to the beach.", she, he),
        ("Tom the dog went to the park.", he, she),
    ]:
        ids = torch.tensor([[tok.bos_token_id, *tok.encode(prompt)]])
        with torch.no_grad():
            logits = model.run(ids).logits[0, -1]
        assert logits[want[0]] > logits[other[0]], prompt
