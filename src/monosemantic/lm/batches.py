"""Where `lm train`'s batches come from: random windows of a tokenized corpus, as nanoGPT samples
them, or storyworld's endless stream.

A file, folder or dataset is tokenized once into `<state_dir>/corpus/` (nanoGPT's train.bin and
val.bin): documents joined by EOS, with a seeded random `lm.holdout_fraction` of the documents held
out for validation (their indices recorded in `corpus.json`, and copied to `<lm.out>/heldout.json`
with the model). Every step then draws `batch_size` windows at uniformly random positions of the
training tokens, from a generator seeded by (data seed, step): a batch is a pure function of its
step, so a resumed run sees exactly the batches of an uninterrupted one and no data position needs
saving, and no batch is a run of consecutive windows of one document. Validation windows are
spread evenly over the held-out tokens.

Storyworld is endless and its stories are independent draws, so its consecutive windows already
are a random sample; its validation windows come from another generator seed.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from dataclasses import dataclass
from itertools import islice
from pathlib import Path
from typing import Any

import numpy as np
import torch

from monosemantic.config.data import DataConfig
from monosemantic.corpus.sources import is_storyworld, iter_texts
from monosemantic.corpus.windows import TokenWindows, bos_eos_ids, plain_backend
from monosemantic.utils.errors import ConfigError, DataError
from monosemantic.utils.files import atomic_dir, write_json_atomic
from monosemantic.utils.progress import console

CORPUS_DIR = "corpus"  # inside lm.state_dir
HELDOUT_FILE = "heldout.json"  # beside the saved model
VAL_SEED_OFFSET = 1_000_003  # storyworld validation windows come from a disjoint generator seed
_DOCS_PER_BATCH = 256
_HOLDOUT_STREAM = 0x484F4C44  # separates the held-out draw from the window positions (same seed)


class StoryworldBatches:
    """Consecutive windows of the endless generator (each story an independent draw)."""

    def __init__(self, data: DataConfig, tokenizer: Any, batch_size: int, val_batches: int, start_step: int):
        self.batch_size, self.step = batch_size, start_step
        self._stream = _windows_forever(data, tokenizer, skip=start_step * batch_size)
        val_data = data.model_copy(update={"seed": (data.seed or 0) + VAL_SEED_OFFSET})
        val_stream = _windows_forever(val_data, tokenizer)
        self.validation = [_stack(val_stream, batch_size) for _ in range(val_batches)]
        self.summary: dict[str, Any] = {"sampling": "storyworld stream", "validation": "data seed + 1000003"}

    def batch(self, step: int) -> torch.Tensor:
        if step != self.step:
            raise ValueError(f"storyworld batches are read in order: asked for step {step}, at {self.step}")
        self.step += 1
        return _stack(self._stream, self.batch_size)


def _windows_forever(data: DataConfig, tokenizer: Any, skip: int = 0) -> Iterator[torch.Tensor]:
    """Token windows of an endless source, after skipping `skip`."""
    for window in TokenWindows(data, tokenizer, skip_windows=skip):
        yield window.tokens
    raise DataError(
        f"[data].text={data.text!r} ran out of windows; storyworld is endless unless max_tokens is set"
    )


def _stack(stream: Iterator[torch.Tensor], n: int) -> torch.Tensor:
    return torch.stack([next(stream) for _ in range(n)]).long()


@dataclass
class TokenCorpus:
    """The tokenized training and held-out documents of a finite source."""

    train: np.ndarray  # token ids, documents joined by EOS
    validation: np.ndarray
    meta: dict[str, Any]


class SampledBatches:
    """Random windows of a `TokenCorpus`; see the module docstring."""

    def __init__(
        self, corpus: TokenCorpus, tokenizer: Any, data: DataConfig, batch_size: int, val_batches: int
    ) -> None:
        self.corpus, self.batch_size = corpus, batch_size
        self.context_size, self.seed = data.context_size, (data.seed or 0) % (1 << 63)
        self.bos = bos_eos_ids(tokenizer)[0] if data.prepend_bos else None
        body = self.context_size - (self.bos is not None)
        meta = corpus.meta
        if len(corpus.train) < body:
            raise DataError(
                f"data.text {data.text!r} holds {len(corpus.train)} training tokens, fewer than one window of "
                f"{self.context_size}; give more text or a smaller lm.context_size"
            )
        if len(corpus.validation) < body:
            raise DataError(
                f"data.text {data.text!r} is too small to hold out validation text: lm.holdout_fraction "
                f"{meta['holdout_fraction']} of its {meta['documents']} documents held out "
                f"{meta['heldout_documents']} with {len(corpus.validation)} tokens, fewer than one window of "
                f"{self.context_size}; give more documents or raise lm.holdout_fraction"
            )
        n_val = val_batches * batch_size
        starts = np.linspace(0, len(corpus.validation) - body, n_val).round().astype(np.int64)
        self.validation = list(self._windows(corpus.validation, starts).split(batch_size))
        self.summary = {"sampling": "random windows", **{k: corpus.meta[k] for k in _SUMMARY_KEYS}}

    def batch(self, step: int) -> torch.Tensor:
        rng = np.random.default_rng([self.seed, step])
        body = self.context_size - (self.bos is not None)
        starts = rng.integers(0, len(self.corpus.train) - body + 1, size=self.batch_size)
        return self._windows(self.corpus.train, starts)

    def _windows(self, tokens: np.ndarray, starts: np.ndarray) -> torch.Tensor:
        body = self.context_size - (self.bos is not None)
        ids = torch.from_numpy(tokens[starts[:, None] + np.arange(body)].astype(np.int64))
        if self.bos is None:
            return ids
        return torch.cat([torch.full((len(starts), 1), self.bos, dtype=torch.long), ids], dim=1)


_SUMMARY_KEYS = ("documents", "heldout_documents", "train_tokens", "validation_tokens", "holdout_fraction")


def open_batches(
    data: DataConfig,
    tokenizer: Any,
    state_dir: Path,
    recipe: dict[str, Any],
    *,
    batch_size: int,
    val_batches: int,
    holdout_fraction: float,
    start_step: int,
    resuming: bool,
) -> StoryworldBatches | SampledBatches:
    """The batch source for [data]: storyworld's stream, else random windows of the tokenized corpus
    (tokenized now, or reused from `state_dir` when the same settings made it)."""
    if is_storyworld(data):
        return StoryworldBatches(data, tokenizer, batch_size, val_batches, start_step)
    recipe = {**recipe, "holdout_fraction": holdout_fraction, "data.max_tokens": data.max_tokens}
    corpus = load_or_build_corpus(data, tokenizer, Path(state_dir) / CORPUS_DIR, recipe, resuming)
    return SampledBatches(corpus, tokenizer, data, batch_size, val_batches)


def load_or_build_corpus(
    data: DataConfig, tokenizer: Any, folder: Path, recipe: dict[str, Any], resuming: bool
) -> TokenCorpus:
    """The corpus in `folder` if `recipe` made it; else tokenize it there (a checkpoint that was
    trained on another corpus is refused instead)."""
    meta_path = folder / "corpus.json"
    if meta_path.is_file():
        meta = json.loads(meta_path.read_text())
        if meta.get("recipe") == recipe:
            return _load(folder, meta)
        if resuming:
            made = meta.get("recipe", {})
            key = next((k for k in recipe if made.get(k) != recipe[k]), "data.text")
            raise ConfigError(
                f"the checkpoint in {folder.parent} was trained on a corpus made with {key}={made.get(key)!r}, "
                f"not {recipe[key]!r}; delete that folder or choose another lm.out / lm.state_dir"
            )
    with atomic_dir(folder) as tmp:
        _tokenize(data, tokenizer, tmp, recipe)
    return _load(folder, json.loads(meta_path.read_text()))


def _load(folder: Path, meta: dict[str, Any]) -> TokenCorpus:
    dtype = np.dtype(meta["dtype"])
    split = {
        s: np.memmap(path, dtype=dtype, mode="r")
        if (path := folder / f"{s}.bin").stat().st_size
        else np.empty(0, dtype)
        for s in ("train", "validation")
    }
    return TokenCorpus(split["train"], split["validation"], meta)


def _tokenize(data: DataConfig, tokenizer: Any, tmp: Path, recipe: dict[str, Any]) -> None:
    """Write train.bin, validation.bin and corpus.json into `tmp`, one document batch at a time."""
    fraction = recipe["holdout_fraction"]
    backend = plain_backend(getattr(tokenizer, "backend_tokenizer", tokenizer))
    eos = bos_eos_ids(tokenizer)[1]
    dtype = np.uint16 if len(tokenizer) <= 1 << 16 else np.uint32
    rng = np.random.default_rng([(data.seed or 0) % (1 << 63), _HOLDOUT_STREAM])
    counts, heldout, n_docs = {"train": 0, "validation": 0}, [], 0
    budget = data.max_tokens if data.max_tokens is not None else float("inf")
    docs = iter_texts(data)
    with (
        open(tmp / "train.bin", "wb") as f_train,
        open(tmp / "validation.bin", "wb") as f_val,
        console.status(f"tokenizing {data.text} for lm train") as status,
    ):
        while sum(counts.values()) < budget and (batch := list(islice(docs, _DOCS_PER_BATCH))):
            held = rng.random(len(batch)) < fraction
            for enc, is_held in zip(backend.encode_batch(batch, add_special_tokens=False), held, strict=True):
                if sum(counts.values()) >= budget:  # data.max_tokens caps the corpus
                    break
                ids = np.asarray([*enc.ids, eos], dtype=dtype)
                (f_val if is_held else f_train).write(ids.tobytes())
                counts["validation" if is_held else "train"] += len(ids)
                if is_held:
                    heldout.append(n_docs)
                n_docs += 1
            status.update(f"tokenizing {data.text}: {n_docs:,} documents, {sum(counts.values()):,} tokens")
    meta = {
        "recipe": recipe,
        "source": data.text,
        "seed": data.seed or 0,
        "holdout_fraction": fraction,
        "documents": n_docs,
        "heldout_documents": len(heldout),
        "train_tokens": counts["train"],
        "validation_tokens": counts["validation"],
        "dtype": np.dtype(dtype).name,
        "heldout": heldout,
    }
    write_json_atomic(tmp / "corpus.json", meta, indent=None)


def write_heldout(out: Path, batches: StoryworldBatches | SampledBatches) -> None:
    """`<lm.out>/heldout.json`: which documents validation used, so later stages can keep them out."""
    if isinstance(batches, SampledBatches):
        meta = batches.corpus.meta
        keys = (
            "source",
            "seed",
            "holdout_fraction",
            "documents",
            "train_tokens",
            "validation_tokens",
            "heldout",
        )
        write_json_atomic(Path(out) / HELDOUT_FILE, {k: meta[k] for k in keys}, indent=None)
