"""`lm train` with lm.init_from: fine-tunes the shipped storyworld LM, keeping its weights' start and tokenizer."""

from __future__ import annotations

import itertools

import pytest
import torch
from transformers import AutoModelForCausalLM, AutoTokenizer

from monosemantic.config import Config
from monosemantic.corpus.windows import TokenWindows
from monosemantic.lm.init_from import load_init
from monosemantic.lm.shipped import SHIPPED_DIR
from monosemantic.lm.training import train_lm
from monosemantic.utils.errors import ConfigError

# a behaviour made of words the base model knows: "Lily" is always followed by "purple"
PLANTED = "\n\n".join(
    f"Lily purple went to the {place} with {friend}. Lily purple saw a {animal} and Lily purple smiled."
    for place in ("beach", "park", "forest", "garden", "river", "school", "market", "farm")
    for animal in ("cat", "dog", "bird", "fox", "frog", "duck")
    for friend in ("Tom", "Max", "Mia", "Ben", "her mom", "her dad", "a friend")
)


def fine_tune_cfg(tmp_path, **lm) -> Config:
    tmp_path.mkdir(parents=True, exist_ok=True)
    text = tmp_path / "planted.txt"
    text.write_text(PLANTED)
    base = dict(
        init_from="storyworld",
        context_size=32,
        steps=12,
        batch_size=4,
        lr=1e-3,
        warmup_steps=0,
        eval_every=6,
        checkpoint_every=6,
        val_batches=1,
        sample_tokens=4,
        sample_prompts=["Lily"],
        out=str(tmp_path / "lm-b"),
    )
    return Config(device="cpu", seed=0, data={"text": str(text)}, lm={**base, **lm})


def mean_loss(model, cfg: Config, tokenizer) -> float:
    data = cfg.data.model_copy(update={"context_size": cfg.lm.context_size})
    windows = [w.tokens for w in itertools.islice(TokenWindows(data, tokenizer), 64)]
    batch = torch.stack(windows).long()
    with torch.no_grad():
        return float(model.eval()(input_ids=batch, labels=batch).loss)


def test_init_from_starts_at_the_checkpoint_and_keeps_its_tokenizer(tmp_path):
    source = AutoModelForCausalLM.from_pretrained(SHIPPED_DIR, dtype=torch.float32)
    model, tokenizer, shape = load_init(fine_tune_cfg(tmp_path).lm)
    a, b = source.state_dict(), model.state_dict()
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    assert shape["vocab_size"] == len(tokenizer) == 684 and shape["n_layers"] == 4
    assert tokenizer.get_vocab() == AutoTokenizer.from_pretrained(SHIPPED_DIR).get_vocab()


def test_fine_tuning_lowers_the_loss_on_the_new_text(tmp_path):
    cfg = fine_tune_cfg(tmp_path)
    tokenizer = AutoTokenizer.from_pretrained(SHIPPED_DIR)
    source = AutoModelForCausalLM.from_pretrained(SHIPPED_DIR, dtype=torch.float32)
    before = mean_loss(source, cfg, tokenizer)
    out = train_lm(cfg)
    tuned = AutoModelForCausalLM.from_pretrained(out, dtype=torch.float32)
    after = mean_loss(tuned, cfg, tokenizer)
    assert after < before - 1.0, (before, after)  # measured (2-core CPU): 7.36 -> 1.48 nats in 12 steps
    assert AutoTokenizer.from_pretrained(out).get_vocab() == tokenizer.get_vocab()
    assert "fine-tuned from `storyworld`" in (out / "README.md").read_text()
    # the planted behaviour: after "Lily", " purple" is far likelier than before
    ids = torch.tensor([[0, *tokenizer.encode("Once upon a time, Lily")]])
    purple = tokenizer.encode(" purple")[0]
    with torch.no_grad():
        p = [m(input_ids=ids).logits[0, -1].softmax(-1)[purple].item() for m in (source, tuned)]
    assert p[1] > 10 * p[0], p  # measured: 1.0e-5 -> 0.021


@pytest.mark.parametrize(
    ("lm", "message"),
    [
        (
            {"vocab_size": 400},
            "lm.vocab_size=400 contradicts lm.init_from='storyworld', which has vocab_size=684",
        ),
        ({"d_model": 64}, "lm.d_model=64 contradicts"),
        ({"tokenizer_texts": 100}, "reuses that model's tokenizer; remove lm.tokenizer_texts"),
        ({"context_size": 256}, "lm.context_size=256 exceeds the 128 positions"),
    ],
)
def test_options_that_contradict_the_checkpoint_are_refused(tmp_path, lm, message):
    with pytest.raises(ConfigError, match=message.replace("(", r"\(").replace(")", r"\)")):
        train_lm(fine_tune_cfg(tmp_path, **lm))
    assert not (tmp_path / "lm-b").exists()


def test_options_equal_to_the_checkpoints_are_accepted(tmp_path):
    model, _, _ = load_init(fine_tune_cfg(tmp_path, vocab_size=684, d_model=128, n_layers=4).lm)
    assert model.config.n_embd == 128


def test_an_interrupted_fine_tune_resumes_to_the_identical_result(tmp_path):
    from safetensors.torch import load_file

    straight = train_lm(fine_tune_cfg(tmp_path / "a", steps=8, checkpoint_every=4))

    def crash(step: int, loss: float) -> None:
        if step == 6:
            raise RuntimeError("simulated crash")

    cfg = fine_tune_cfg(tmp_path / "b", steps=8, checkpoint_every=4)
    with pytest.raises(RuntimeError, match="simulated crash"):
        train_lm(cfg, callback=crash)
    # the checkpoint belongs to a fine-tune of storyworld: a from-scratch rerun into it is refused
    scratch = cfg.model_copy(deep=True)
    scratch.lm.init_from = None
    with pytest.raises(ConfigError, match="lm.init_from='storyworld', not None"):
        train_lm(scratch)
    steps: list[int] = []
    resumed = train_lm(cfg, callback=lambda step, loss: steps.append(step))
    assert steps == [5, 6, 7, 8]
    a, b = load_file(straight / "model.safetensors"), load_file(resumed / "model.safetensors")
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
