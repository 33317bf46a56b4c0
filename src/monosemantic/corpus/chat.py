"""Chat data: conversations rendered with the tokenizer's chat template, with each token's role.

A conversation is a list of `{"role", "content"}` messages (roles system, user, assistant, tool).
`render` turns it into token ids and, per token, the role of the turn that produced it (`ROLES`),
exactly, by one of two methods:

1. **Prefix differences** (every template). The template renders every prefix of the conversation;
   turn k's text is what `messages[:k+1]` adds to `messages[:k]` (its markup included). For an
   assistant turn, the part up to the end of the generation prompt (`messages[:k]` rendered with
   `add_generation_prompt=True`, i.e. `<start_of_turn>model\n`) is markup the model is given, role
   "other"; what follows (the content and the end-of-turn marker) is what the model writes,
   role "assistant". The full conversation is tokenized once with character offsets; a token
   takes the role of the span holding its first character. A template whose prefixes are not
   prefixes of the whole (it rewrites earlier turns) is refused in one line.
2. **Generation marks** (templates with `{% generation %}` blocks). The assistant tokens are the
   template's own `return_assistant_tokens_mask`; the other roles come from method 1.

Tokens before the first turn (a BOS the template writes, a default system preamble) are "other".
`train_on` keeps the positions of one role (`role_mask`).
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from monosemantic.utils.errors import ConfigError, DataError

ROLES = ("other", "system", "user", "assistant", "tool")
ROLE_CODE = {r: i for i, r in enumerate(ROLES)}


def check_messages(value: Any, where: str) -> list[dict[str, str]]:
    """A conversation as a list of {role, content} dicts with known roles, or one DataError line."""
    if not isinstance(value, Sequence) or isinstance(value, str | bytes) or not value:
        raise DataError(
            f"{where}: messages must be a non-empty list of {{role, content}} objects, got {type(value).__name__}"
        )
    out = []
    for i, m in enumerate(value):
        if not isinstance(m, Mapping) or "role" not in m or "content" not in m:
            raise DataError(f"{where}: message {i} is not a {{role, content}} object")
        role, content = m["role"], m["content"]
        if role not in ROLE_CODE or role == "other":
            raise DataError(
                f"{where}: message {i} has role {role!r}; use one of system, user, assistant, tool"
            )
        if not isinstance(content, str):
            raise DataError(f"{where}: message {i}'s content is {type(content).__name__}, not text")
        out.append({"role": str(role), "content": content})
    return out


def chat_template(tokenizer: Any, template_file: str | Path | None, model: str | None = None) -> str:
    """The Jinja chat template to render with: `data.chat_template`'s file, else the tokenizer's own."""
    if template_file is not None:
        path = Path(template_file).expanduser()
        try:
            return path.read_text(encoding="utf-8")
        except (OSError, UnicodeDecodeError) as e:
            raise ConfigError(
                f"data.chat_template {str(path)!r} cannot be read ({e}); give a Jinja template file"
            ) from None
    template = getattr(tokenizer, "chat_template", None)
    if isinstance(template, dict):  # several named templates: the default one
        template = template.get("default")
    if not template:
        raise ConfigError(
            f"the tokenizer of {model or 'this model'} has no chat template, so chat data cannot be rendered; "
            "use an instruction-tuned model's tokenizer, or set data.chat_template to a Jinja template file"
        )
    return str(template)


def template_fingerprint(template: str) -> str:
    return hashlib.sha256(template.encode()).hexdigest()[:16]


class ChatRenderer:
    """Renders conversations with one template and tokenizer (see the module docstring)."""

    def __init__(self, tokenizer: Any, template: str) -> None:
        self.tokenizer, self.template = tokenizer, template
        self.marks_generation = "{% generation %}" in template or "{%- generation %}" in template

    def text(self, messages: list[dict[str, str]], add_generation_prompt: bool = False) -> str:
        try:
            return self.tokenizer.apply_chat_template(
                messages,
                chat_template=self.template,
                tokenize=False,
                add_generation_prompt=add_generation_prompt,
            )
        except Exception as e:  # jinja2 errors: template raised (e.g. roles must alternate)
            msg = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
            raise DataError(f"the chat template cannot render this conversation ({msg})") from None

    def spans(
        self, messages: list[dict[str, str]], add_generation_prompt: bool
    ) -> tuple[str, list[tuple[int, int, int]]]:
        """The rendered text and its (start, end, role code) character spans, by prefix differences."""
        full = self.text(messages, add_generation_prompt)
        spans: list[tuple[int, int, int]] = []
        prev = self._preamble(messages)
        for k, m in enumerate(messages):
            cur = self.text(messages[: k + 1])
            if not cur.startswith(prev) or not full.startswith(cur):
                raise DataError(
                    f"the chat template renders turn {k} differently once later turns follow (it rewrites "
                    "earlier turns), so per-token roles are ambiguous; give conversations this template keeps, "
                    "or set data.chat_template"
                )
            start = len(prev)
            if m["role"] == "assistant":
                head = self.text(messages[:k], add_generation_prompt=True) if k else prev
                if cur.startswith(head) and len(head) >= start:
                    spans.append((start, len(head), ROLE_CODE["other"]))
                    start = len(head)
            spans.append((start, len(cur), ROLE_CODE[m["role"]]))
            prev = cur
        if len(full) > len(prev):  # the generation prompt after the last turn
            spans.append((len(prev), len(full), ROLE_CODE["other"]))
        return full, spans

    def _preamble(self, messages: list[dict[str, str]]) -> str:
        """What the template writes before the first turn (a BOS, a default system prompt), or ''."""
        from transformers.utils.chat_template_utils import render_jinja_template

        try:  # apply_chat_template refuses an empty conversation; the renderer under it does not
            empty = render_jinja_template(
                [[]], chat_template=self.template, **self.tokenizer.special_tokens_map
            )[0][0]
        except Exception:  # templates that index messages[0]
            return ""
        first = self.text(messages[:1])
        return empty if first.startswith(empty) else ""

    def render(
        self, messages: list[dict[str, str]], add_generation_prompt: bool = False
    ) -> tuple[list[int], np.ndarray]:
        """(token ids, role code per token) of one conversation."""
        full, spans = self.spans(messages, add_generation_prompt)
        enc = self.tokenizer(full, add_special_tokens=False, return_offsets_mapping=True, verbose=False)
        ids, offsets = list(enc["input_ids"]), enc["offset_mapping"]
        roles = np.zeros(len(ids), dtype=np.uint8)
        starts = np.array([s for s, _, _ in spans], dtype=np.int64)
        codes = np.array([c for _, _, c in spans], dtype=np.uint8)
        for i, (s, _) in enumerate(offsets):
            j = int(np.searchsorted(starts, s, side="right")) - 1
            if j >= 0 and s < spans[j][1]:
                roles[i] = codes[j]
        if self.marks_generation and any(m["role"] == "assistant" for m in messages):
            roles = self._generation_marks(messages, add_generation_prompt, ids, roles)
        return ids, roles

    def _generation_marks(
        self, messages: list[dict[str, str]], add_generation_prompt: bool, ids: list[int], roles: np.ndarray
    ) -> np.ndarray:
        out = self.tokenizer.apply_chat_template(
            messages, chat_template=self.template, tokenize=True, return_dict=True,
            return_assistant_tokens_mask=True, add_generation_prompt=add_generation_prompt,
        )  # fmt: skip
        if list(out["input_ids"]) != ids:
            raise DataError(
                "the chat template's own tokenization differs from the rendered text's; cannot mark roles"
            )
        mask = np.asarray(out["assistant_masks"], dtype=bool)
        roles = roles.copy()
        roles[(roles == ROLE_CODE["assistant"]) & ~mask] = ROLE_CODE["other"]
        roles[mask] = ROLE_CODE["assistant"]
        return roles


def role_mask(roles: Any, train_on: str) -> Any:
    """True where a position counts under `data.train_on` ("all": everywhere); `roles` is a
    tensor or array of role codes, and so is the mask."""
    if train_on == "all":
        return roles >= 0  # role codes are unsigned: every position
    return roles == ROLE_CODE[train_on]
