"""The model card (README.md) written beside every model `lm train` saves."""

from __future__ import annotations

import datetime as dt
import json
import sys
from pathlib import Path

from monosemantic.config import Config
from monosemantic.utils.files import write_text_atomic


def _command() -> str:
    argv = sys.argv
    if argv and Path(argv[0]).name == "monosemantic":
        return " ".join(["monosemantic", *argv[1:]])
    return "monosemantic.train_lm(cfg)  # from Python; the config is below"


def write_model_card(
    out: Path,
    cfg: Config,
    rows: list[dict],
    n_params: int,
    vocab: int,
    command: str | None = None,
    shape: dict | None = None,
    data: dict | None = None,
) -> Path:
    """Command, data, size, steps, tokens, final train/val loss, date, and the resolved config.

    `shape`: the model's architecture/n_layers/d_model/n_heads/d_mlp when they are not [lm]'s own
    (a fine-tune of lm.init_from). `data`: the batch source's summary (`batches.py`)."""
    lm = cfg.lm
    s = shape or {k: getattr(lm, k) for k in ("architecture", "n_layers", "d_model", "n_heads", "d_mlp")}
    origin = (
        f"fine-tuned from `{lm.init_from}` by monosemantic's `lm train` (lm.init_from)"
        if lm.init_from
        else "trained by monosemantic's own `lm train`"
    )
    tokenizer = (
        f"the tokenizer of `{lm.init_from}`, {vocab} tokens"
        if lm.init_from
        else f"byte-level BPE, {vocab} tokens (lm.vocab_size {lm.vocab_size} is the upper bound); "
        "`<\\|endoftext\\|>` (id 0) is BOS, EOS, PAD and UNK"
    )
    train = [r["loss"] for r in rows if "loss" in r]
    tail = train[-max(1, len(train) // 20) :] if train else []
    final_train = sum(tail) / len(tail) if tail else float("nan")
    vals = [r for r in rows if "val_loss" in r]
    final_val = vals[-1]["val_loss"] if vals else float("nan")
    samples = vals[-1].get("samples", []) if vals else []
    tokens = lm.steps * lm.batch_size * lm.context_size
    sampling, validation = _data_lines(cfg, data or {}, tokens)
    # a fine-tune's shape and tokenizer are the checkpoint's: [lm]'s unset defaults for them would mislead
    fixed = {"architecture", "vocab_size", "tokenizer_texts", "n_layers", "d_model", "n_heads", "d_mlp"}
    hide = fixed - lm.model_fields_set if lm.init_from else set()
    sections = {"lm": lm.model_dump(mode="json", exclude=hide), "data": cfg.data.model_dump(mode="json")}
    card = f"""# {Path(out).name}

A small `transformers` {s["architecture"]} causal LM {origin}.

| | |
|---|---|
| command | `{command or _command()}` |
| data | `{cfg.data.text}` (seed {cfg.data.seed}), windows of {lm.context_size} tokens, BOS-prefixed, documents joined by `<\\|endoftext\\|>`; {sampling} |
| architecture | {s["architecture"]}, {s["n_layers"]} layers, d_model {s["d_model"]}, {s["n_heads"]} heads, d_mlp {s["d_mlp"] or 4 * s["d_model"]}, {n_params:,} parameters |
| tokenizer | {tokenizer} |
| training | {lm.steps} steps x {lm.batch_size} x {lm.context_size} = {tokens:,} tokens; AdamW lr {lm.lr}, warmup {lm.warmup_steps}, cosine to {lm.min_lr_ratio} x lr, clip {lm.grad_clip} |
| final train loss | {final_train:.4f} nats/token (mean of the last 5% of logged steps) |
| final val loss | {final_val:.4f} nats/token ({validation}) |
| weights | {lm.save_dtype} safetensors |
| date | {dt.date.today().isoformat()} |

## Samples at the end of training

{chr(10).join(f"- {json.dumps(s)}" for s in samples) or "(none)"}

## Resolved config

```json
{json.dumps(sections, indent=2)}
```

`metrics.jsonl` holds the training curve (loss every few steps, validation loss and samples).
"""
    path = Path(out) / "README.md"
    write_text_atomic(path, card)
    return path


def _data_lines(cfg: Config, data: dict, tokens: int) -> tuple[str, str]:
    """How batches were drawn, and what validation read."""
    if data.get("sampling") != "random windows":
        return "consecutive windows of fresh stories", "held-out windows, data seed + 1000003"
    epochs = tokens / max(1, data["train_tokens"])
    return (
        f"windows at random positions of {data['train_tokens']:,} training tokens "
        f"({data['documents'] - data['heldout_documents']:,} documents; {epochs:.2g} epochs)",
        f"windows of {data['heldout_documents']:,} held-out documents, {data['validation_tokens']:,} tokens, "
        f"listed in heldout.json",
    )
