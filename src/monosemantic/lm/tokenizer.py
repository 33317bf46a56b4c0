"""Byte-level BPE tokenizer trained with `tokenizers`, wrapped as a `PreTrainedTokenizerFast`.

Byte-level BPE is lossless: decode(encode(text)) == text for any unicode string, because every
byte has a token and no normaliser runs. There is one special token, `<|endoftext|>` (id 0), used
as BOS, EOS, PAD and UNK -- the GPT-2 convention: documents are packed with it between them, so
"start of window" and "document boundary" are the same token, and masks of special tokens need
only one id. The tokenizer never inserts it by itself; windowing (`corpus.windows`) does.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterable
from typing import Any

from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors, trainers
from transformers import PreTrainedTokenizerFast

from monosemantic.utils.errors import ConfigError

SPECIAL = "<|endoftext|>"
MIN_VOCAB = 257  # 256 byte tokens + the special token


def train_tokenizer(
    texts: Iterable[str], vocab_size: int, model_max_length: int = 1024
) -> PreTrainedTokenizerFast:
    """Train a byte-level BPE with `vocab_size` entries (incl. the special token) on `texts`."""
    if vocab_size < MIN_VOCAB:
        raise ConfigError(
            f"lm.vocab_size={vocab_size} is too small for byte-level BPE; use at least {MIN_VOCAB}"
        )
    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    tok.post_processor = processors.ByteLevel(trim_offsets=True)
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        min_frequency=2,
        special_tokens=[SPECIAL],
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tok.train_from_iterator(texts, trainer)
    return wrap_tokenizer(tok, model_max_length)


def wrap_tokenizer(tok: Tokenizer, model_max_length: int = 1024) -> PreTrainedTokenizerFast:
    return PreTrainedTokenizerFast(
        tokenizer_object=tok,
        bos_token=SPECIAL,
        eos_token=SPECIAL,
        unk_token=SPECIAL,
        pad_token=SPECIAL,
        model_max_length=model_max_length,
        clean_up_tokenization_spaces=False,
    )


def tokenizer_fingerprint(tokenizer: Any) -> str:
    """A short hash of the vocabulary (every token string in id order): two tokenizers with the same
    fingerprint map text to the same ids. Recorded by harvest and in dictionary checkpoints, so a
    dictionary is never read on token ids it was not trained on."""
    vocab = tokenizer.get_vocab()
    ordered = [token for token, _ in sorted(vocab.items(), key=lambda kv: kv[1])]
    return hashlib.sha256(json.dumps(ordered, ensure_ascii=False).encode()).hexdigest()[:16]
