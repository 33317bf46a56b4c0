"""Chat data for tests: a tiny random model whose tokenizer has a chat template, and conversations
built from storyworld stories (a user asks for a story about someone, the assistant tells one).

The shipped storyworld LM has no chat template; these tiny models are saved with one (a Gemma-like
template; `GENERATION_TEMPLATE` also marks the assistant's text with `{% generation %}`).
"""

from __future__ import annotations

import json
from pathlib import Path

from transformers import AutoTokenizer

from monosemantic.corpus.storyworld import generate_stories
from monosemantic.lm.tiny import save_tiny_model

TEMPLATE = (
    "{{ bos_token }}{% for m in messages %}<start_of_turn>{{ 'model' if m['role'] == 'assistant' else m['role'] }}\n"
    "{{ m['content'] }}<end_of_turn>\n{% endfor %}"
    "{% if add_generation_prompt %}<start_of_turn>model\n{% endif %}"
)
GENERATION_TEMPLATE = (
    "{{ bos_token }}{% for m in messages %}<start_of_turn>{{ 'model' if m['role'] == 'assistant' else m['role'] }}\n"
    "{% if m['role'] == 'assistant' %}{% generation %}{{ m['content'] }}<end_of_turn>\n{% endgeneration %}"
    "{% else %}{{ m['content'] }}<end_of_turn>\n{% endif %}{% endfor %}"
    "{% if add_generation_prompt %}<start_of_turn>model\n{% endif %}"
)


def save_chat_model(path: Path, family: str = "gpt2", template: str = TEMPLATE) -> Path:
    """A tiny random model of `family` whose saved tokenizer carries `template`."""
    save_tiny_model(family, path, seed=0)
    tok = AutoTokenizer.from_pretrained(path)
    tok.chat_template = template
    tok.save_pretrained(path)
    return path


def conversations(n: int, seed: int = 0) -> list[list[dict[str, str]]]:
    """`n` two- or three-turn conversations whose assistant turns are storyworld stories."""
    out = []
    for i, story in zip(range(n), generate_stories(seed, None, 0), strict=False):
        first = story.text.split(".")[0]
        msgs = [{"role": "user", "content": f"Tell me a story. Start with: {first}."},
                {"role": "assistant", "content": story.text}]  # fmt: skip
        if i % 3 == 0:
            msgs.insert(0, {"role": "system", "content": "You tell short stories."})
        out.append(msgs)
    return out


def write_chat_jsonl(path: Path, n: int, seed: int = 0) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w", encoding="utf-8") as f:
        for msgs in conversations(n, seed):
            f.write(json.dumps({"messages": msgs, "id": len(msgs)}) + "\n")
    return path
