"""`monosemantic lm train`: a byte-level BPE tokenizer and a small causal LM, nanoGPT style.

The loop is deliberately plain: AdamW (no decay on gains/biases), linear warmup then cosine
decay, gradient clipping, batches of windows drawn at random positions of the whole corpus with a
seeded held-out set of documents for validation (`batches.py`; storyworld streams fresh stories
and validates on another seed), sample continuations, `metrics.jsonl`, and an atomic checkpoint
(model, optimizer, scheduler, step, RNG) every `checkpoint_every` steps. Rerunning the same
command resumes from it, and the result is bit-identical to an uninterrupted run on the same
device (a batch is a function of its step). Dropout is off. With `lm.init_from` the loop
fine-tunes an existing causal LM instead (`init_from.py`: its weights, shape and tokenizer).
The run is three phases: `_setup`, `_loop`, `_finish`.
"""

from __future__ import annotations

import itertools
import json
import math
import shutil
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from transformers import GPT2Config, GPT2LMHeadModel, LlamaConfig, LlamaForCausalLM, PreTrainedModel
from transformers import PreTrainedTokenizerFast as Tokenizer
from transformers import logging as hf_logging

from monosemantic.config import Config, ConfigLike, as_config
from monosemantic.config.lm import LMConfig
from monosemantic.corpus.sources import iter_texts
from monosemantic.corpus.windows import bos_eos_ids
from monosemantic.utils.disk import disk_full_guard
from monosemantic.utils.errors import ConfigError, DataError
from monosemantic.utils.files import check_output, write_json_atomic, write_text_atomic
from monosemantic.utils.lock import output_lock
from monosemantic.utils.progress import console, progress_bar
from monosemantic.utils.torch_utils import resolve_device, torch_dtype

from .batches import SampledBatches, StoryworldBatches, open_batches, write_heldout
from .card import write_model_card
from .checkpoint import SHAPE_KEYS, STATE_FILE, load_state, save_state
from .init_from import load_init
from .tokenizer import train_tokenizer

RECIPE = "recipe.json"  # beside the run's tokenizer: the settings that made it


def build_lm(lm: LMConfig, tokenizer: Tokenizer) -> PreTrainedModel:
    """A fresh GPT-2 or Llama causal LM sized by [lm], without dropout, tied embeddings."""
    special = tokenizer.eos_token_id
    d_mlp = lm.d_mlp or 4 * lm.d_model
    if lm.architecture == "gpt2":
        config = GPT2Config(
            vocab_size=len(tokenizer),
            n_positions=lm.context_size,
            n_embd=lm.d_model,
            n_layer=lm.n_layers,
            n_head=lm.n_heads,
            n_inner=d_mlp,
            resid_pdrop=0.0,
            embd_pdrop=0.0,
            attn_pdrop=0.0,
            bos_token_id=special,
            eos_token_id=special,
            pad_token_id=special,
            tie_word_embeddings=True,
            loss_type="ForCausalLM",
        )
        return GPT2LMHeadModel(config)
    config = LlamaConfig(
        vocab_size=len(tokenizer),
        hidden_size=lm.d_model,
        intermediate_size=d_mlp,
        num_hidden_layers=lm.n_layers,
        num_attention_heads=lm.n_heads,
        num_key_value_heads=lm.n_heads,
        max_position_embeddings=lm.context_size,
        bos_token_id=special,
        eos_token_id=special,
        pad_token_id=special,
        tie_word_embeddings=True,
        loss_type="ForCausalLM",
    )
    return LlamaForCausalLM(config)


def lr_lambda(lm: LMConfig) -> Callable[[int], float]:
    """Multiplier of lm.lr at a step: linear warmup, then cosine down to min_lr_ratio."""

    def f(step: int) -> float:
        if step < lm.warmup_steps:
            return (step + 1) / (lm.warmup_steps + 1)
        progress = min(1.0, (step - lm.warmup_steps) / max(1, lm.steps - lm.warmup_steps))
        return lm.min_lr_ratio + (1 - lm.min_lr_ratio) * 0.5 * (1 + math.cos(math.pi * progress))

    return f


def tokenizer_recipe(cfg: Config) -> dict[str, Any]:
    """Every setting that shapes the trained tokenizer (its vocabulary and the texts it saw)."""
    d, lm = cfg.data, cfg.lm
    return {
        "vocab_size": lm.vocab_size,
        "tokenizer_texts": lm.tokenizer_texts,
        "context_size": lm.context_size,
        "data.text": d.text,
        "data.text_column": d.text_column,
        "data.dataset_config": d.dataset_config,
        "data.split": d.split,
        "data.seed": d.seed,
    }


def _tokenizer(cfg: Config, state_dir: Path) -> Tokenizer:
    """Train the tokenizer once per run; a resumed run reuses the saved one if the same settings
    made it (`recipe.json`). One left by a failed run with other settings is retrained; one that a
    checkpoint depends on is refused."""
    saved = state_dir / "tokenizer"
    recipe = tokenizer_recipe(cfg)
    if (saved / "tokenizer.json").exists():
        made = json.loads((saved / RECIPE).read_text()) if (saved / RECIPE).is_file() else None
        has_state = (state_dir / STATE_FILE).exists()
        if made == recipe or (made is None and has_state):
            return Tokenizer.from_pretrained(saved)
        key = next((k for k in recipe if made is None or made.get(k) != recipe[k]), "vocab_size")
        was = "unknown" if made is None else repr(made.get(key))
        if has_state:
            raise ConfigError(
                f"the checkpoint in {state_dir} was trained with a tokenizer made with {key}={was}, not "
                f"{recipe[key]!r}; delete that folder or choose another lm.out / lm.state_dir"
            )
        console.print(
            f"[yellow]note:[/] retraining the tokenizer in {saved}: an earlier run made it with {key}={was}, "
            f"not {recipe[key]!r}",
            highlight=False,
        )
    lm = cfg.lm
    texts = itertools.islice(iter_texts(cfg.data), lm.tokenizer_texts)
    with console.status(f"training a {lm.vocab_size}-token BPE tokenizer on {lm.tokenizer_texts} documents"):
        tokenizer = train_tokenizer(texts, lm.vocab_size, model_max_length=lm.context_size)
    tokenizer.save_pretrained(saved)
    write_json_atomic(saved / RECIPE, recipe)
    return tokenizer


@torch.no_grad()
def evaluate(model: PreTrainedModel, batches: list[torch.Tensor], device: torch.device) -> float:
    model.eval()
    losses = [model(input_ids=b.to(device), labels=b.to(device)).loss.item() for b in batches]
    model.train()
    return sum(losses) / len(losses)


@torch.no_grad()
def samples(model: PreTrainedModel, tokenizer: Tokenizer, lm: LMConfig, device: torch.device) -> list[str]:
    """Sampled continuations (temperature 0.8, top-p 0.95, seeded by `lm.seed` with a generator of
    their own, so the training RNG is untouched), by the library's one generation loop."""
    from .generate import Sampling, context_of, generate, hf_forward

    if lm.sample_tokens == 0:
        return []
    forward = hf_forward(model, device)
    model.eval()
    out = []
    for prompt in lm.sample_prompts:
        ids = torch.tensor([bos_eos_ids(tokenizer)[0], *tokenizer.encode(prompt)])
        (new,) = generate(forward, ids, lm.sample_tokens, Sampling(0.8, 0.95, lm.seed or 0),
                          eos_id=tokenizer.eos_token_id, context=context_of(model.config))  # fmt: skip
        out.append(tokenizer.decode(torch.cat([ids[1:], new.cpu()]).tolist(), skip_special_tokens=True))
    model.train()
    return out


def _read_metrics(path: Path, upto: int) -> list[dict]:
    if not path.exists():
        return []
    rows = [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
    return [r for r in rows if r["step"] <= upto]


def train_lm(cfg: ConfigLike, callback: Callable[[int, float], None] | None = None) -> Path:
    """Train tokenizer + LM per [lm] on [data] (or fine-tune lm.init_from, keeping its tokenizer);
    resume from lm.state_dir; save into lm.out.

    `callback(step, loss)` runs after every optimizer step (notebooks, tests, early stops).
    A run that fails before its first checkpoint removes the folders it created (a tokenizer
    trained for a config that failed must not meet the corrected rerun).
    """
    cfg = as_config(cfg)
    check_output(cfg.lm.state_dir, "lm.state_dir")
    made = [Path(p) for p in (cfg.lm.out, cfg.lm.state_dir) if p is not None and not Path(p).exists()]
    try:
        with output_lock(cfg.lm.out, "lm.out"), output_lock(cfg.lm.state_dir, "lm.state_dir"):
            with disk_full_guard(cfg.lm.out, "lm.out"):
                return _train_lm(cfg, callback)
    except BaseException:
        for folder in made:
            if folder.is_dir() and not any(folder.rglob("*.pt")):  # no checkpoint to resume from
                shutil.rmtree(folder, ignore_errors=True)
        raise


@dataclass
class _Run:
    """Everything one `lm train` run holds (setup builds it, the loop advances it, finish saves it)."""

    cfg: Config
    out: Path
    state_dir: Path
    device: torch.device
    model: PreTrainedModel
    tokenizer: Tokenizer
    shape: dict[str, Any]
    opt: torch.optim.Optimizer
    sched: torch.optim.lr_scheduler.LambdaLR
    batches: StoryworldBatches | SampledBatches
    step: int
    rows: list[dict]

    @property
    def metrics_path(self) -> Path:
        return self.out / "metrics.jsonl"


def _train_lm(cfg: Config, callback: Callable[[int, float], None] | None = None) -> Path:
    run = _setup(cfg)
    _loop(run, callback)
    return _finish(run)


def _setup(cfg: Config) -> _Run:
    """Tokenizer, model, optimizer, schedule and batch source; the checkpoint's state on resume."""
    hf_logging.disable_progress_bar()
    lm = cfg.lm
    out = Path(lm.out)
    state_dir = Path(lm.state_dir) if lm.state_dir is not None else out / "trainer_state"
    device = resolve_device(lm.device)
    torch.manual_seed(lm.seed or 0)
    if lm.init_from is None:
        shape = {k: getattr(lm, k) for k in SHAPE_KEYS}
        tokenizer = _tokenizer(cfg, state_dir)
        model = build_lm(lm, tokenizer).to(device)
    else:  # fine-tune: the checkpoint's weights, shape and tokenizer
        model, tokenizer, shape = load_init(lm)
        model, shape = model.to(device), {**shape, "init_from": lm.init_from}
    decay = [p for p in model.parameters() if p.dim() >= 2]
    no_decay = [p for p in model.parameters() if p.dim() < 2]
    opt = torch.optim.AdamW(
        [{"params": decay, "weight_decay": lm.weight_decay}, {"params": no_decay, "weight_decay": 0.0}],
        lr=lm.lr,
        betas=(0.9, 0.95),
        fused=device.type == "cuda",
    )
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lr_lambda(lm))
    step = 0
    state = load_state(state_dir, shape)
    if state is not None:
        model.load_state_dict(state["model"])
        opt.load_state_dict(state["optimizer"])
        sched.load_state_dict(state["scheduler"])
        step = state["step"]
        console.print(f"resuming from step {step} ({state_dir})")
    batches = open_batches(
        cfg.data.model_copy(update={"context_size": lm.context_size}),
        tokenizer,
        state_dir,
        {**tokenizer_recipe(cfg), "init_from": lm.init_from},
        batch_size=lm.batch_size,
        val_batches=lm.val_batches,
        holdout_fraction=lm.holdout_fraction,
        start_step=step,
        resuming=state is not None,
    )
    if state is None:
        _describe_data(batches, lm)
    rows = _read_metrics(out / "metrics.jsonl", step)
    return _Run(cfg, out, state_dir, device, model, tokenizer, shape, opt, sched, batches, step, rows)


def _describe_data(batches: StoryworldBatches | SampledBatches, lm: LMConfig) -> None:
    """One line on what training will read: how much text, how much held out, how many epochs."""
    s = batches.summary
    if s["sampling"] != "random windows":
        return
    epochs = lm.steps * lm.batch_size * lm.context_size / max(1, s["train_tokens"])
    console.print(
        f"corpus: {s['train_tokens']:,} training tokens in {s['documents'] - s['heldout_documents']:,} documents, "
        f"{s['validation_tokens']:,} held out in {s['heldout_documents']:,} "
        f"(lm.holdout_fraction {s['holdout_fraction']}); {lm.steps} steps of {lm.batch_size} random windows "
        f"read {epochs:.2g} epochs",
        highlight=False,
    )


def _checkpoint(run: _Run) -> None:
    save_state(
        run.state_dir,
        model=run.model.state_dict(),
        optimizer=run.opt.state_dict(),
        scheduler=run.sched.state_dict(),
        step=run.step,
        shape=run.shape,
    )
    write_text_atomic(run.metrics_path, "".join(json.dumps(r) + "\n" for r in run.rows))


def _validate(run: _Run) -> None:
    val_loss = evaluate(run.model, run.batches.validation, run.device)
    if not math.isfinite(val_loss):  # the weights diverged in the last step: nothing to sample from
        raise DataError(f"validation loss became {val_loss} at step {run.step}; lower lm.lr")
    row = {
        "step": run.step,
        "val_loss": val_loss,
        "samples": samples(run.model, run.tokenizer, run.cfg.lm, run.device),
    }
    run.rows.append(row)
    console.print(f"step {run.step}: val loss {row['val_loss']:.4f}")
    for text in row["samples"]:
        console.print(f"  [dim]{text!r}[/]")


def _loop(run: _Run, callback: Callable[[int, float], None] | None) -> None:
    """Optimizer steps until lm.steps, logging, validating and checkpointing as configured; Ctrl-C
    checkpoints between steps and re-raises."""
    lm, device = run.cfg.lm, run.device
    amp = torch_dtype(lm.dtype or "float32")
    tokens_per_step = lm.batch_size * lm.context_size
    log_every = max(1, lm.eval_every // 10)
    run.model.train()
    t0, in_step = time.time(), False
    try:
        with progress_bar() as bar:
            task = bar.add_task(
                "lm train",
                total=lm.steps * tokens_per_step,
                completed=run.step * tokens_per_step,
                info="",
                unit="tok",
            )
            while run.step < lm.steps:
                batch = run.batches.batch(run.step).to(device)
                in_step = True
                with torch.autocast(device.type, dtype=amp, enabled=amp != torch.float32):
                    loss = run.model(input_ids=batch, labels=batch).loss
                if not torch.isfinite(loss):
                    raise DataError(f"training loss became {loss.item()} at step {run.step}; lower lm.lr")
                run.opt.zero_grad(set_to_none=True)
                loss.backward()
                torch.nn.utils.clip_grad_norm_(run.model.parameters(), lm.grad_clip)
                run.opt.step()
                run.sched.step()
                run.step, in_step = run.step + 1, False
                bar.update(task, advance=tokens_per_step, info=f"loss {loss.item():.3f}")
                if run.step % log_every == 0 or run.step == lm.steps:
                    run.rows.append(
                        {
                            "step": run.step,
                            "loss": loss.item(),
                            "lr": run.sched.get_last_lr()[0],
                            "tokens": run.step * tokens_per_step,
                            "elapsed_s": round(time.time() - t0, 1),
                        }
                    )
                if run.step % lm.eval_every == 0 and run.step < lm.steps:
                    _validate(run)
                if run.step % lm.checkpoint_every == 0 and run.step < lm.steps:
                    _checkpoint(run)
                if callback is not None:
                    callback(run.step, loss.item())
    except KeyboardInterrupt:
        if not in_step:  # a half-done step would save weights that disagree with `step`
            _checkpoint(run)
        console.print(f"interrupted at step {run.step}; rerun the same command to resume")
        raise


def _finish(run: _Run) -> Path:
    """Final validation and checkpoint, then the model, tokenizer, held-out record and model card."""
    run.rows = [r for r in run.rows if not (r["step"] == run.step and "val_loss" in r)]
    _validate(run)
    _checkpoint(run)
    run.model.to(torch_dtype(run.cfg.lm.save_dtype)).save_pretrained(run.out)
    run.tokenizer.save_pretrained(run.out)
    write_heldout(run.out, run.batches)
    write_text_atomic(run.metrics_path, "".join(json.dumps(r) + "\n" for r in run.rows))
    write_model_card(
        run.out,
        run.cfg,
        run.rows,
        n_params=sum(p.numel() for p in run.model.parameters()),
        vocab=len(run.tokenizer),
        shape=run.shape,
        data=run.batches.summary,
    )
    return run.out
