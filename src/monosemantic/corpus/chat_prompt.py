"""Chat prompts (`--chat` of `circuit` and `steer`, `chat` in the live API): a conversation given
as a JSON list of {role, content}, `role: text` lines or a file of either, rendered to token ids with
the chat template and the generation prompt, with the runs of positions each turn covers.

Its own module because it joins the renderer (`chat.py`) with the window's BOS (`windows.py`),
which itself renders chat data through `chat.py`.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from monosemantic.utils.errors import ConfigError

from .chat import ROLE_CODE, ROLES, ChatRenderer, chat_template, check_messages
from .windows import bos_eos_ids

__all__ = ["chat_prompt", "parse_chat", "turns"]


def parse_chat(spec: str | list, files: bool = True) -> list[dict[str, str]]:
    """A chat prompt, in one of three forms: a JSON list of {role, content} (or that list itself);
    lines `role: text` (a line without a known role prefix continues the previous message); or,
    with `files` (the command line, not the web API), the path of a .json/.jsonl/.txt file holding
    one of those (.jsonl: one message object per line)."""
    if isinstance(spec, list):
        return check_messages(spec, "chat")
    text = spec
    path = Path(spec).expanduser()
    if (
        files
        and len(spec) < 4096
        and "\n" not in spec
        and path.suffix in (".json", ".jsonl", ".txt")
        and path.is_file()
    ):
        text = path.read_text(encoding="utf-8")
        if path.suffix == ".jsonl":
            import json

            try:
                rows = [json.loads(line) for line in text.splitlines() if line.strip()]
            except json.JSONDecodeError as e:
                raise ConfigError(f"--chat {str(path)!r}: not one JSON message per line ({e.msg})") from None
            return check_messages(rows, f"--chat {path}")
    stripped = text.strip()
    if stripped.startswith("["):
        import json

        try:
            return check_messages(json.loads(stripped), "--chat")
        except json.JSONDecodeError as e:
            raise ConfigError(f"--chat: not a JSON list of {{role, content}} ({e.msg})") from None
    return check_messages(_role_lines(stripped), "--chat")


def _role_lines(text: str) -> list[dict[str, str]]:
    messages: list[dict[str, str]] = []
    for line in text.splitlines():
        role, sep, rest = line.partition(":")
        if sep and role.strip().lower() in ROLE_CODE and role.strip().lower() != "other":
            messages.append({"role": role.strip().lower(), "content": rest.strip()})
        elif messages:
            messages[-1]["content"] += "\n" + line
        elif line.strip():
            raise ConfigError(
                f"--chat: {line.strip()[:40]!r} has no role; write lines 'user: ...' / 'assistant: ...', "
                "a JSON list of {role, content}, or a file holding either"
            )
    return messages


def chat_prompt(
    tokenizer: Any,
    messages: list[dict[str, str]],
    template_file: str | Path | None = None,
    prepend_bos: bool = True,
) -> tuple[list[int], np.ndarray]:
    """A chat prompt's token ids and per-token role codes, rendered with the generation prompt
    (the model's turn comes next), starting with exactly one BOS as harvested chat windows do."""
    renderer = ChatRenderer(tokenizer, chat_template(tokenizer, template_file))
    ids, roles = renderer.render(messages, add_generation_prompt=messages[-1]["role"] != "assistant")
    bos = bos_eos_ids(tokenizer)[0]
    if ids and ids[0] == bos:
        ids, roles = ids[1:], roles[1:]
    if prepend_bos:
        ids, roles = [bos, *ids], np.concatenate([np.zeros(1, np.uint8), roles])
    return ids, roles


def turns(roles: Any) -> list[dict[str, Any]]:
    """Runs of one role over token positions: [{"role", "start", "end"}] (end exclusive), for the
    viewers' turn boundaries and graph metadata."""
    codes = [int(r) for r in roles]
    out: list[dict[str, Any]] = []
    for i, c in enumerate(codes):
        if out and out[-1]["code"] == c:
            out[-1]["end"] = i + 1
        else:
            out.append({"code": c, "role": ROLES[c], "start": i, "end": i + 1})
    return [{k: v for k, v in t.items() if k != "code"} for t in out]
