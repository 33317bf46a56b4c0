"""Token ids -> display strings that concatenate back into readable text, for every tokenizer family.

Decoding one id on its own is wrong for two of the three common families: WordPiece keeps the
`##` of a continuation and gives a whole word no leading space ("sha", "##lt" -> "sha##lt"), and
SentencePiece's decoder strips the `▁` (space) of the first token it sees. Byte-level BPE (`Ġ`,
`Ċ`) already decodes right alone. One rule fixes all three without naming them: decode the token
*after* a fixed one-token anchor and keep what the token added, so the tokenizer's own decoder
decides spacing and joining ("a" + "##lt" -> "alt" -> "lt"; "a" + "thou" -> "a thou" -> " thou";
"▁a" + "▁the" -> "a the" -> " the"; "a" + "Ġthe" -> " the"). Special tokens show as themselves.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any


class TokenDisplay:
    """Callable `id -> str`, memoised; `many(ids)` for a sequence. Without a tokenizer ids show as `<id>`."""

    def __init__(self, tokenizer: Any | None) -> None:
        self.tokenizer = tokenizer
        self._memo: dict[int, str] = {}
        self._anchor: int | None = None
        self._anchor_text = ""
        self._special: set[int] = set()
        if tokenizer is not None:
            self._special = {int(i) for i in getattr(tokenizer, "all_special_ids", []) or []}
            ids = tokenizer("a", add_special_tokens=False)["input_ids"]
            if len(ids) == 1:
                self._anchor = int(ids[0])
                self._anchor_text = tokenizer.decode([self._anchor])

    def __call__(self, token_id: int) -> str:
        i = int(token_id)
        s = self._memo.get(i)
        if s is None:
            s = self._display(i)
            self._memo[i] = s
        return s

    def many(self, ids: Iterable[int]) -> list[str]:
        return [self(i) for i in ids]

    def _display(self, i: int) -> str:
        tok = self.tokenizer
        if tok is None:
            return f"<{i}>"
        alone = tok.decode([i])
        if i in self._special or self._anchor is None:
            return alone
        pair = tok.decode([self._anchor, i])
        if not pair.startswith(self._anchor_text):
            return alone
        return pair[len(self._anchor_text) :]


def display_tokens(tokenizer: Any | None, ids: Iterable[int]) -> list[str]:
    """Display strings of `ids` (see the module docstring): `"".join(...)` reads as the text."""
    return TokenDisplay(tokenizer).many(ids)
