"""`lm train` on a tiny model: writes a loadable model, and resumes to the identical result."""

from __future__ import annotations

import json

import pytest
import torch
from safetensors.torch import load_file

from monosemantic.config import Config
from monosemantic.lm.model import load_model
from monosemantic.lm.training import lr_lambda, train_lm
from monosemantic.utils.errors import ConfigError, DataError


def tiny_cfg(out, **lm) -> Config:
    base = dict(
        vocab_size=400,
        tokenizer_texts=200,
        n_layers=2,
        d_model=32,
        n_heads=2,
        context_size=32,
        steps=8,
        batch_size=4,
        lr=3e-3,
        warmup_steps=2,
        eval_every=4,
        checkpoint_every=3,
        val_batches=1,
        sample_tokens=4,
        sample_prompts=["Lily"],
        out=str(out),
    )
    return Config(device="cpu", seed=0, lm={**base, **lm})


def test_train_writes_a_loadable_model(tmp_path):
    out = train_lm(tiny_cfg(tmp_path / "run", architecture="llama"))
    model = load_model(str(out), device="cpu")
    assert model.family == "llama" and model.n_layers == 2 and model.d_model == 32
    assert (out / "model.safetensors").exists() and (out / "tokenizer.json").exists()
    rows = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in rows if "val_loss" in r] == [4, 8]
    assert rows[0]["loss"] > rows[-2]["loss"]  # it learns something in 8 steps
    card = (out / "README.md").read_text()
    assert "final val loss" in card and "8 steps" in card
    ids = model.tokenizer("Lily the cat", return_tensors="pt").input_ids
    assert model.run(ids).logits.shape == (1, ids.shape[1], len(model.tokenizer))


def test_resume_matches_an_uninterrupted_run(tmp_path):
    straight = train_lm(tiny_cfg(tmp_path / "a"))

    def crash(step: int, loss: float) -> None:
        if step == 5:
            raise RuntimeError("simulated crash")

    cfg = tiny_cfg(tmp_path / "b")
    with pytest.raises(RuntimeError, match="simulated crash"):
        train_lm(cfg, callback=crash)
    assert not (tmp_path / "b" / "model.safetensors").exists()
    steps: list[int] = []
    resumed = train_lm(cfg, callback=lambda step, loss: steps.append(step))
    assert steps == [4, 5, 6, 7, 8]  # continues after the last checkpoint (step 3)
    a, b = load_file(straight / "model.safetensors"), load_file(resumed / "model.safetensors")
    assert a.keys() == b.keys()
    assert all(torch.equal(a[k], b[k]) for k in a)
    rows = [json.loads(line) for line in (resumed / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in rows if "loss" in r] == list(range(1, 9))


def test_resume_refuses_a_different_model_shape(tmp_path):
    def crash(step: int, loss: float) -> None:
        raise RuntimeError("stop")

    with pytest.raises(RuntimeError):
        train_lm(tiny_cfg(tmp_path / "c", checkpoint_every=1), callback=crash)
    with pytest.raises(ConfigError, match="lm.d_model=32, not 64"):
        train_lm(tiny_cfg(tmp_path / "c", d_model=64))


def test_a_stale_tokenizer_from_a_failed_run_with_other_settings_is_not_reused(tmp_path, capsys):
    """A run that dies before its first checkpoint leaves its tokenizer; the corrected rerun must not use it."""
    from transformers import PreTrainedTokenizerFast

    def crash(step: int, loss: float) -> None:
        raise RuntimeError("stop")

    out = tmp_path / "run"
    # a failed run removes only folders it created: one that existed before (like a run killed
    # with -9, which cleans up nothing) keeps the tokenizer it left
    out.mkdir()
    with pytest.raises(RuntimeError):
        train_lm(tiny_cfg(out, vocab_size=300, checkpoint_every=100), callback=crash)
    saved = out / "trainer_state" / "tokenizer"
    assert len(PreTrainedTokenizerFast.from_pretrained(saved)) <= 300
    capsys.readouterr()
    train_lm(tiny_cfg(out, vocab_size=400, steps=2, checkpoint_every=1))
    seen = capsys.readouterr()
    assert "retraining the tokenizer" in " ".join((seen.out + seen.err).split())
    assert 300 < len(PreTrainedTokenizerFast.from_pretrained(saved)) <= 400
    assert json.loads((out / "config.json").read_text())["vocab_size"] == len(
        PreTrainedTokenizerFast.from_pretrained(out)
    )
    # with a checkpoint that depends on it, another tokenizer setting is refused, not silently retrained
    with pytest.raises(ConfigError, match="tokenizer made with tokenizer_texts=200, not 150"):
        train_lm(tiny_cfg(out, steps=4, checkpoint_every=1, tokenizer_texts=150))


def test_lr_schedule_warms_up_then_decays():
    lm = tiny_cfg("x", steps=100, warmup_steps=10, min_lr_ratio=0.1).lm
    f = lr_lambda(lm)
    assert f(0) < f(5) < f(9) <= 1.0
    assert f(10) == pytest.approx(1.0)
    assert f(55) == pytest.approx(0.55)
    assert f(100) == pytest.approx(0.1)


def test_file_source_holds_out_validation_documents(tmp_path):
    """On a file corpus, validation windows come from documents training never reads."""
    from transformers import AutoTokenizer

    from monosemantic.config.data import DataConfig
    from monosemantic.corpus.windows import HOLDOUT_EVERY, TokenWindows
    from monosemantic.lm.shipped import SHIPPED_DIR

    corpus = tmp_path / "corpus.txt"
    corpus.write_text("\n\n".join(f"Document number {i} says hello to {i % 7} friends." for i in range(300)))
    data = DataConfig(text=str(corpus))
    tokenizer = AutoTokenizer.from_pretrained(SHIPPED_DIR)

    def docs(split: str) -> set[str]:
        return {t for batch in TokenWindows(data, tokenizer, split=split)._documents() for t, _ in batch}

    train, val, every = docs("train"), docs("validation"), docs("all")
    assert not train & val and train | val == every and len(val) == 300 // HOLDOUT_EVERY

    lm = {**tiny_cfg(tmp_path).lm.model_dump(), "out": str(tmp_path / "run"), "tokenizer_texts": 300}
    out = train_lm(Config(device="cpu", seed=0, data={"text": str(corpus)}, lm=lm))
    rows = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    assert any("val_loss" in r for r in rows)
    small = tmp_path / "small.txt"
    small.write_text("\n\n".join(f"One of only {i} documents, each with a few words." for i in range(40)))
    with pytest.raises(DataError, match="too small to hold out"):
        train_lm(
            Config(device="cpu", seed=0, data={"text": str(small)}, lm={**lm, "out": str(tmp_path / "s")})
        )
