"""`lm train` on a tiny model: writes a loadable model, and resumes to the identical result."""

from __future__ import annotations

import json
import re

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


def _corpus(path, n_docs: int):
    path.write_text(
        "\n\n".join(
            f"Document number {i} says hello to {i % 7} friends and {i % 11} cats." for i in range(n_docs)
        )
    )
    return path


def test_file_corpus_holds_out_documents_and_samples_random_windows(tmp_path):
    """On a file corpus, training draws windows at random positions of the training documents (a
    pure function of data seed and step), and validation reads only held-out documents, recorded."""
    from monosemantic.lm.batches import CORPUS_DIR

    corpus = _corpus(tmp_path / "corpus.txt", 300)
    lm = {**tiny_cfg(tmp_path).lm.model_dump(), "out": str(tmp_path / "run"), "tokenizer_texts": 300}
    out = train_lm(Config(device="cpu", seed=0, data={"text": str(corpus)}, lm=lm))
    record = json.loads((out / "heldout.json").read_text())
    assert record["documents"] == 300 and record["holdout_fraction"] == 0.02
    held = set(record["heldout"])
    assert 1 <= len(held) <= 20 and held <= set(range(300))
    assert "held-out documents" in (out / "README.md").read_text()

    from transformers import AutoTokenizer

    from monosemantic.config.data import DataConfig
    from monosemantic.lm.batches import SampledBatches, load_or_build_corpus

    tokenizer = AutoTokenizer.from_pretrained(out)
    meta = json.loads((out / "trainer_state" / CORPUS_DIR / "corpus.json").read_text())
    data = DataConfig(text=str(corpus), seed=0, context_size=32)
    stored = load_or_build_corpus(data, tokenizer, out / "trainer_state" / CORPUS_DIR, meta["recipe"], True)
    batches = SampledBatches(stored, tokenizer, data, batch_size=4, val_batches=1)

    def numbers(windows) -> set[int]:
        return {
            int(n)
            for w in windows
            for n in re.findall(r"Document number (\d+) says", tokenizer.decode(w[1:]))
        }

    assert (
        len(numbers(batches.batch(3))) >= 3
    )  # windows from documents far apart, not consecutive windows of one
    assert torch.equal(batches.batch(3), batches.batch(3)) and not torch.equal(
        batches.batch(3), batches.batch(4)
    )
    seen = numbers(w for b in batches.validation for w in b)
    assert seen and seen <= held  # validation reads held-out documents only
    trained = numbers(w for step in range(20) for w in batches.batch(step))
    assert len(trained) > 20 and not trained & held


def test_file_corpus_resume_matches_an_uninterrupted_run(tmp_path):
    corpus = _corpus(tmp_path / "corpus.txt", 300)

    def cfg(name: str) -> Config:
        lm = {**tiny_cfg(tmp_path).lm.model_dump(), "out": str(tmp_path / name), "tokenizer_texts": 300}
        return Config(device="cpu", seed=0, data={"text": str(corpus)}, lm=lm)

    straight = train_lm(cfg("a"))

    def crash(step: int, loss: float) -> None:
        if step == 5:
            raise RuntimeError("simulated crash")

    with pytest.raises(RuntimeError, match="simulated crash"):
        train_lm(cfg("b"), callback=crash)
    resumed = train_lm(cfg("b"))
    a, b = load_file(straight / "model.safetensors"), load_file(resumed / "model.safetensors")
    assert all(torch.equal(a[k], b[k]) for k in a)
    with pytest.raises(ConfigError, match="holdout_fraction=0.02, not 0.1"):
        train_lm(cfg("b").model_copy(update={"lm": cfg("b").lm.model_copy(update={"holdout_fraction": 0.1})}))


def test_a_corpus_too_small_to_hold_out_is_refused(tmp_path):
    small = _corpus(tmp_path / "small.txt", 40)
    lm = {**tiny_cfg(tmp_path).lm.model_dump(), "out": str(tmp_path / "s"), "tokenizer_texts": 40}
    with pytest.raises(DataError, match="too small to hold out"):
        train_lm(
            Config(device="cpu", seed=0, data={"text": str(small)}, lm={**lm, "holdout_fraction": 0.001})
        )
