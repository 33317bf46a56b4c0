"""Token windows: documents -> fixed-length training/harvest sequences.

Documents are tokenized in batches by the fast (Rust) tokenizer, joined into one stream with an
EOS after each, and cut into windows of `data.context_size` tokens. With `data.prepend_bos`
every window starts with BOS (counted inside the context) and an EOS that would directly
follow it is dropped, since BOS already marks the boundary. The last, incomplete window of a
finite source is dropped. Over storyworld each window also carries the per-token concept
labels (`concepts.CONCEPTS` columns; BOS/EOS positions have none).

The stream is a pure function of (data config, tokenizer), so `skip_windows=n` resumes exactly
where a run that consumed n windows stopped: skipped text is tokenized but not labelled.
(`lm train` samples random windows of a finite corpus instead, holding documents out: `lm/batches.py`.)
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from dataclasses import dataclass
from itertools import islice
from typing import Any

import numpy as np
import torch

from monosemantic.config.data import DataConfig
from monosemantic.utils.errors import DataError

from .concepts import N_CONCEPTS, label_array
from .sources import is_storyworld, iter_conversations, iter_stories, iter_texts

_DOCS_PER_BATCH = 256


@dataclass
class Window:
    tokens: torch.Tensor  # LongTensor[ctx]
    concepts: torch.Tensor | None  # BoolTensor[ctx, n_concepts] (storyworld only)
    roles: torch.Tensor | None = None  # uint8 [ctx]: each token's chat role (`chat.ROLES`), chat data only


def special_token_ids(tokenizer: Any) -> list[int]:
    """The ids of BOS, EOS and PAD (those the tokenizer defines), sorted and without repeats."""
    ids = {getattr(tokenizer, a, None) for a in ("bos_token_id", "eos_token_id", "pad_token_id")}
    return sorted(i for i in ids if i is not None)


def special_token_mask(tokens: torch.Tensor, tokenizer: Any) -> torch.Tensor:
    """BoolTensor shaped like `tokens`: True where a position holds BOS, EOS or PAD."""
    ids = torch.tensor(special_token_ids(tokenizer), dtype=tokens.dtype, device=tokens.device)
    return torch.isin(tokens, ids)


def apply_special_tokens(tokenizer: Any, data_cfg: DataConfig) -> None:
    """Make `data.bos_token` / `data.eos_token` the tokenizer's BOS/EOS (when set); each must be a
    single token of its vocabulary. Idempotent, so every reader of the config can call it."""
    vocab = None
    for key in ("bos_token", "eos_token"):
        token = getattr(data_cfg, key, None)
        if token is None or getattr(tokenizer, key, None) == token:
            continue
        vocab = tokenizer.get_vocab() if vocab is None else vocab
        if token not in vocab:
            raise DataError(
                f"data.{key} {token!r} is not a token of the tokenizer's vocabulary; give one of its "
                f"tokens{_suggestion(tokenizer)}"
            )
        setattr(tokenizer, key, token)


def _suggestion(tokenizer: Any) -> str:
    cls, sep = getattr(tokenizer, "cls_token", None), getattr(tokenizer, "sep_token", None)
    if cls is not None and sep is not None:
        return (
            f" (this tokenizer has {cls!r} and {sep!r}: data.bos_token = {cls!r}, data.eos_token = {sep!r})"
        )
    return ""


def bos_eos_ids(tokenizer: Any) -> tuple[int, int]:
    """(BOS, EOS) ids; a tokenizer with only one of them uses it for both (gpt2: <|endoftext|>)."""
    bos, eos = getattr(tokenizer, "bos_token_id", None), getattr(tokenizer, "eos_token_id", None)
    if bos is None and eos is None:
        hint = _suggestion(tokenizer) or ' (e.g. data.eos_token = "<|endoftext|>" if the vocabulary has it)'
        raise DataError(
            "the tokenizer has neither a BOS nor an EOS token, which separate documents in the "
            f"windows; set data.bos_token and/or data.eos_token to tokens of its vocabulary{hint}"
        )
    return (eos if bos is None else bos), (bos if eos is None else eos)


def text_tokens(tokenizer: Any, text: str, prepend_bos: bool = True) -> torch.Tensor:
    """One text as harvest tokenizes it (LongTensor[T]): the fast tokenizer without its own special
    tokens, then the window's BOS (`bos_eos_ids`) in front when `prepend_bos`, so a prompt matches
    what the dictionaries were trained on."""
    backend = plain_backend(getattr(tokenizer, "backend_tokenizer", tokenizer))
    ids = list(backend.encode(text, add_special_tokens=False).ids)
    if prepend_bos:
        ids = [bos_eos_ids(tokenizer)[0], *ids]
    return torch.tensor(ids, dtype=torch.long)


def plain_backend(backend: Any) -> Any:
    """The tokenizer without the padding/truncation its tokenizer.json may fix (all-MiniLM-L6-v2 pads
    and cuts every input to 128 tokens, for sentence embeddings): documents are packed whole and
    unpadded whatever the file says. A copy, so the model's own tokenizer is left as it was."""
    if getattr(backend, "truncation", None) is None and getattr(backend, "padding", None) is None:
        return backend
    from tokenizers import Tokenizer

    plain = Tokenizer.from_str(backend.to_str())
    plain.no_truncation()
    plain.no_padding()
    return plain


class TokenWindows:
    """Iterable of `Window`s over `data.text`; see the module docstring for the packing rules."""

    def __init__(
        self,
        data_cfg: DataConfig,
        tokenizer: Any,
        skip_windows: int = 0,
    ) -> None:
        if skip_windows < 0:
            raise ValueError("skip_windows must be >= 0")
        self.data_cfg = data_cfg
        self.tokenizer = tokenizer
        self.backend = plain_backend(getattr(tokenizer, "backend_tokenizer", tokenizer))
        apply_special_tokens(tokenizer, data_cfg)
        self.bos_id, self.eos_id = bos_eos_ids(tokenizer)
        self.context_size = data_cfg.context_size
        self.skip_windows = skip_windows
        self.labelled = is_storyworld(data_cfg)
        self.chat = None
        if data_cfg.format == "chat":
            from .chat import ChatRenderer, chat_template

            self.chat = ChatRenderer(tokenizer, chat_template(tokenizer, data_cfg.chat_template))
        mt = data_cfg.max_tokens
        self.total_windows: int | None = None if mt is None else math.ceil(mt / self.context_size)

    @property
    def n_windows(self) -> int | None:
        """Windows this iterator yields (after skipping), or None for an endless source."""
        return None if self.total_windows is None else max(0, self.total_windows - self.skip_windows)

    def __len__(self) -> int:
        if self.n_windows is None:
            raise TypeError("TokenWindows over an endless source has no length; set data.max_tokens")
        return self.n_windows

    def special_ids(self) -> list[int]:
        return special_token_ids(self.tokenizer)

    def __iter__(self) -> Iterator[Window]:
        windows = self._windows()
        if self.n_windows is not None:
            windows = islice(windows, self.n_windows)
        for ids, labels, roles in windows:
            yield Window(
                torch.from_numpy(ids),
                None if labels is None else torch.from_numpy(labels),
                None if roles is None else torch.from_numpy(roles),
            )

    def batches(self, batch_size: int) -> Iterator[tuple[torch.Tensor, torch.Tensor | None]]:
        """Stacked windows: (tokens LongTensor[B, ctx], concepts BoolTensor[B, ctx, C] | None); the
        last batch may be smaller."""
        it = iter(self)
        while chunk := list(islice(it, batch_size)):
            tokens = torch.stack([w.tokens for w in chunk])
            concepts = None if chunk[0].concepts is None else torch.stack([w.concepts for w in chunk])
            yield tokens, concepts

    # -- the packer ------------------------------------------------------------------------------
    def _documents(self) -> Iterator[list[tuple[Any, list | None]]]:
        """Batches of (text or conversation, concept spans or None)."""
        if self.labelled:
            docs: Iterator[tuple[Any, list | None]] = ((s.text, s.spans) for s in iter_stories(self.data_cfg))
        else:
            source = iter_conversations(self.data_cfg) if self.chat is not None else iter_texts(self.data_cfg)
            docs = ((t, None) for t in source)
        while batch := list(islice(docs, _DOCS_PER_BATCH)):
            yield batch

    def _encode_chat(self, batch: list[tuple[Any, list | None]]) -> tuple[np.ndarray, None, np.ndarray]:
        """Conversations -> (ids with an EOS after each, None, role codes). A BOS the template writes
        first is dropped: windows mark their start and document boundaries themselves."""
        assert self.chat is not None
        ids_out, roles_out = [], []
        for messages, _ in batch:
            ids, roles = self.chat.render(messages)
            if ids and ids[0] == self.bos_id:
                ids, roles = ids[1:], roles[1:]
            ids_out += [*ids, self.eos_id]
            roles_out.append(np.append(roles, np.uint8(0)))
        return np.asarray(ids_out, dtype=np.int64), None, np.concatenate(roles_out)

    def _encode(
        self, batch: list[tuple[Any, list | None]], label: bool
    ) -> tuple[np.ndarray, np.ndarray | None, np.ndarray | None]:
        """One document batch -> (ids with an EOS after each document, labels or None, roles or None)."""
        if self.chat is not None:
            return self._encode_chat(batch)
        texts = [t for t, _ in batch]
        if label:
            encs = self.backend.encode_batch(texts, add_special_tokens=False)
            id_lists = [e.ids for e in encs]
        elif hasattr(self.backend, "encode_batch_fast"):
            id_lists = [e.ids for e in self.backend.encode_batch_fast(texts, add_special_tokens=False)]
        else:
            id_lists = [e.ids for e in self.backend.encode_batch(texts, add_special_tokens=False)]
        lengths = np.fromiter((len(x) + 1 for x in id_lists), dtype=np.int64, count=len(id_lists))
        ids = np.empty(int(lengths.sum()), dtype=np.int64)
        ends = np.cumsum(lengths)
        ids[ends - 1] = self.eos_id
        pos = 0
        for x, n in zip(id_lists, lengths, strict=True):
            ids[pos : pos + n - 1] = x
            pos += n
        if not self.labelled:
            return ids, None, None
        labels = np.zeros((len(ids), N_CONCEPTS), dtype=np.bool_)
        if label:
            pos = 0
            for (text, spans), enc, n in zip(batch, encs, lengths, strict=True):
                labels[pos : pos + n - 1] = label_array(text, spans, enc.offsets)
                pos += n
        return ids, labels, None

    def _windows(self) -> Iterator[tuple[np.ndarray, np.ndarray | None, np.ndarray | None]]:
        ctx, bos, eos = self.context_size, self.bos_id, self.eos_id
        prepend = self.data_cfg.prepend_bos
        body = ctx - 1 if prepend else ctx
        buf = np.empty(0, dtype=np.int64)
        lab = np.zeros((0, N_CONCEPTS), dtype=np.bool_) if self.labelled else None
        rol = np.zeros(0, dtype=np.uint8) if self.chat is not None else None
        done = 0  # windows emitted so far (including the ones the caller skips)
        for batch in self._documents():
            # Label only text that can reach a window the caller keeps: windows finished with this
            # batch are at most done + (len(buf) + new) // body, an upper bound (EOS drops only lower it).
            n_new = sum(len(t) for t, _ in batch) if self.chat is None else 1 << 60
            need = done + (len(buf) + n_new) // body + 1 >= self.skip_windows
            ids, labels, roles = self._encode(batch, label=need)
            buf = np.concatenate([buf, ids])
            if lab is not None:
                lab = np.concatenate([lab, labels])
            if rol is not None:
                rol = np.concatenate([rol, roles])
            pos = 0
            while True:
                if prepend and pos < len(buf) and buf[pos] == eos:
                    pos += 1  # BOS already marks the boundary
                if len(buf) - pos < body:
                    break
                if done < self.skip_windows:  # skipped: only the position matters
                    pos += body
                    done += 1
                    continue
                w = buf[pos : pos + body]
                lw = None if lab is None else lab[pos : pos + body]
                rw = None if rol is None else rol[pos : pos + body]
                pos += body
                if prepend:
                    w = np.concatenate([[bos], w])
                    lw = None if lw is None else np.concatenate([np.zeros((1, N_CONCEPTS), np.bool_), lw])
                    rw = None if rw is None else np.concatenate([np.zeros(1, np.uint8), rw])
                else:
                    w = w.copy()
                    lw = None if lw is None else lw.copy()
                    rw = None if rw is None else rw.copy()
                done += 1
                yield w, lw, rw
            buf = buf[pos:]
            lab = None if lab is None else lab[pos:]
            rol = None if rol is None else rol[pos:]
        if done == 0:
            raise DataError(
                f"data.text {self.data_cfg.text!r} holds fewer than {body} tokens, not enough for one "
                f"window of data.context_size={ctx}; give more text or a smaller context_size"
            )
