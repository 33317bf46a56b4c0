"""`monosemantic lm train`: a byte-level BPE tokenizer and a small causal LM, nanoGPT style.

The loop is deliberately plain: AdamW (no decay on gains/biases), linear warmup then cosine
decay, gradient clipping, validation on held-out text (another storyworld seed, or one document
in `HOLDOUT_EVERY` of a file or dataset, which training skips), sample continuations,
`metrics.jsonl`, and an atomic checkpoint (model, optimizer, scheduler, step, RNG, data
position) every `checkpoint_every` steps. Rerunning the same command resumes from it, and the
result is bit-identical to an uninterrupted run on the same device. Dropout is off: the data
are (practically) unlimited, so every step sees fresh windows. With `lm.init_from` the loop
fine-tunes an existing causal LM instead (`init_from.py`: its weights, shape and tokenizer).
"""

from __future__ import annotations

import itertools
import json
import math
import shutil
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import torch
from transformers import GPT2Config, GPT2LMHeadModel, LlamaConfig, LlamaForCausalLM, PreTrainedModel
from transformers import PreTrainedTokenizerFast as Tokenizer
from transformers import logging as hf_logging

from monosemantic.config import Config
from monosemantic.config.data import DataConfig
from monosemantic.config.lm import LMConfig
from monosemantic.corpus.sources import iter_texts
from monosemantic.corpus.windows import TokenWindows, bos_eos_ids
from monosemantic.utils.errors import ConfigError, DataError
from monosemantic.utils.files import check_output, write_json_atomic, write_text_atomic
from monosemantic.utils.progress import console, progress_bar
from monosemantic.utils.torch_utils import resolve_device, torch_dtype

from .card import write_model_card
from .checkpoint import SHAPE_KEYS, STATE_FILE, load_state, save_state
from .init_from import load_init
from .tokenizer import train_tokenizer

RECIPE = "recipe.json"  # beside the run's tokenizer: the settings that made it
VAL_SEED_OFFSET = 1_000_003  # validation windows come from a disjoint storyworld seed


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


def window_stream(
    data: DataConfig, tokenizer: Tokenizer, skip: int = 0, split: str = "all"
) -> Iterator[torch.Tensor]:
    """Token windows of `split` forever (a finite source starts over), after skipping `skip`."""
    while True:
        n = 0
        for window in TokenWindows(data, tokenizer, skip_windows=skip, split=split):
            n += 1
            yield window.tokens
        if n == 0 and skip == 0:  # (TokenWindows itself names a source too small for `split`)
            raise DataError(
                f"[data].text={data.text!r} produced no token windows; point it at non-empty text"
            )
        # a pass that was skipped entirely: the position lies in a later epoch
        skip = skip % sum(1 for _ in TokenWindows(data, tokenizer, split=split)) if n == 0 else 0


def next_batch(stream: Iterator[torch.Tensor], batch_size: int) -> torch.Tensor:
    return torch.stack([next(stream) for _ in range(batch_size)]).long()


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


def train_lm(cfg: Config, callback: Callable[[int, float], None] | None = None) -> Path:
    """Train tokenizer + LM per [lm] on [data] (or fine-tune lm.init_from, keeping its tokenizer);
    resume from lm.state_dir; save into lm.out.

    `callback(step, loss)` runs after every optimizer step (notebooks, tests, early stops).
    A run that fails before its first checkpoint removes the folders it created (a tokenizer
    trained for a config that failed must not meet the corrected rerun).
    """
    check_output(cfg.lm.out, "lm.out")
    check_output(cfg.lm.state_dir, "lm.state_dir")
    made = [Path(p) for p in (cfg.lm.out, cfg.lm.state_dir) if p is not None and not Path(p).exists()]
    try:
        return _train_lm(cfg, callback)
    except BaseException:
        for folder in made:
            if folder.is_dir() and not any(folder.rglob("*.pt")):  # no checkpoint to resume from
                shutil.rmtree(folder, ignore_errors=True)
        raise


def _train_lm(cfg: Config, callback: Callable[[int, float], None] | None = None) -> Path:
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

    step, consumed = 0, 0
    state = load_state(state_dir, shape)
    if state is not None:
        model.load_state_dict(state["model"])
        opt.load_state_dict(state["optimizer"])
        sched.load_state_dict(state["scheduler"])
        step, consumed = state["step"], state["windows"]
        console.print(f"resuming from step {step} ({state_dir})")
    metrics_path = out / "metrics.jsonl"
    rows = _read_metrics(metrics_path, step)

    train_data = cfg.data.model_copy(update={"context_size": lm.context_size})
    # validation never sees training text: storyworld draws it from another seed, a file or
    # dataset source holds out one document in HOLDOUT_EVERY
    val_data = train_data.model_copy(update={"seed": (train_data.seed or 0) + VAL_SEED_OFFSET})
    stream = window_stream(train_data, tokenizer, skip=consumed, split="train")
    val_stream = window_stream(val_data, tokenizer, split="validation")
    val = [next_batch(val_stream, lm.batch_size) for _ in range(lm.val_batches)]
    amp = torch_dtype(lm.dtype or "float32")
    tokens_per_step = lm.batch_size * lm.context_size
    log_every = max(1, lm.eval_every // 10)

    def checkpoint() -> None:
        save_state(
            state_dir,
            model=model.state_dict(),
            optimizer=opt.state_dict(),
            scheduler=sched.state_dict(),
            step=step,
            windows=consumed,
            shape=shape,
        )
        write_text_atomic(metrics_path, "".join(json.dumps(r) + "\n" for r in rows))

    def validate() -> None:
        row = {
            "step": step,
            "val_loss": evaluate(model, val, device),
            "samples": samples(model, tokenizer, lm, device),
        }
        rows.append(row)
        console.print(f"step {step}: val loss {row['val_loss']:.4f}")
        for text in row["samples"]:
            console.print(f"  [dim]{text!r}[/]")

    model.train()
    t0, in_step = time.time(), False
    try:
        with progress_bar() as bar:
            task = bar.add_task(
                "lm train",
                total=lm.steps * tokens_per_step,
                completed=step * tokens_per_step,
                info="",
                unit="tok",
            )
            while step < lm.steps:
                batch = next_batch(stream, lm.batch_size).to(device)
                in_step = True
                with torch.autocast(device.type, dtype=amp, enabled=amp != torch.float32):
                    loss = model(input_ids=batch, labels=batch).loss
                if not torch.isfinite(loss):
                    raise DataError(f"training loss became {loss.item()} at step {step}; lower lm.lr")
                opt.zero_grad(set_to_none=True)
                loss.backward()
                torch.nn.utils.clip_grad_norm_(model.parameters(), lm.grad_clip)
                opt.step()
                sched.step()
                step, consumed, in_step = step + 1, consumed + lm.batch_size, False
                bar.update(task, advance=tokens_per_step, info=f"loss {loss.item():.3f}")
                if step % log_every == 0 or step == lm.steps:
                    rows.append(
                        {
                            "step": step,
                            "loss": loss.item(),
                            "lr": sched.get_last_lr()[0],
                            "tokens": step * tokens_per_step,
                            "elapsed_s": round(time.time() - t0, 1),
                        }
                    )
                if step % lm.eval_every == 0 and step < lm.steps:
                    validate()
                if step % lm.checkpoint_every == 0 and step < lm.steps:
                    checkpoint()
                if callback is not None:
                    callback(step, loss.item())
    except KeyboardInterrupt:
        if not in_step:  # a half-done step would save weights that disagree with `step`
            checkpoint()
        console.print(f"interrupted at step {step}; rerun the same command to resume")
        raise
    rows = [r for r in rows if not (r["step"] == step and "val_loss" in r)]
    validate()
    checkpoint()
    model.to(torch_dtype(lm.save_dtype)).save_pretrained(out)
    tokenizer.save_pretrained(out)
    write_text_atomic(metrics_path, "".join(json.dumps(r) + "\n" for r in rows))
    write_model_card(
        out, cfg, rows, n_params=sum(p.numel() for p in model.parameters()), vocab=len(tokenizer), shape=shape
    )
    return out
