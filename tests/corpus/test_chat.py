"""Chat rendering: every token's role is exact (both methods of `corpus/chat.py`), chat data packs
into windows with its roles, chat prompts parse in their three forms, and a model without a chat
template is one line naming the fix."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from chat_world import GENERATION_TEMPLATE, TEMPLATE, conversations, save_chat_model, write_chat_jsonl
from transformers import AutoTokenizer

from monosemantic.config import Config, load_config
from monosemantic.corpus.chat import ROLE_CODE, ROLES, ChatRenderer, role_mask
from monosemantic.corpus.chat_prompt import chat_prompt, parse_chat, turns
from monosemantic.corpus.windows import TokenWindows
from monosemantic.lm.shipped import shipped_model_path
from monosemantic.utils.errors import ConfigError, DataError

DEMO = Path(__file__).resolve().parents[2] / "configs" / "demo.toml"


@pytest.fixture(scope="module")
def tok(tmp_path_factory):
    return AutoTokenizer.from_pretrained(save_chat_model(tmp_path_factory.mktemp("chat-model")))


def _text_by_role(tok, ids, roles) -> dict[str, str]:
    return {r: tok.decode([i for i, c in zip(ids, roles, strict=True) if c == ROLE_CODE[r]]) for r in ROLES}


@pytest.mark.parametrize("template", [TEMPLATE, GENERATION_TEMPLATE])
def test_every_token_has_its_turns_role(tok, template):
    """The tokens of each role decode to exactly that role's rendered text: user and system turns
    with their markup, the assistant's text after its generation prompt, markup elsewhere "other"."""
    renderer = ChatRenderer(tok, template)
    assert renderer.marks_generation == (template is GENERATION_TEMPLATE)
    for msgs in conversations(6):
        ids, roles = renderer.render(msgs)
        text = _text_by_role(tok, ids, roles)
        users = "".join(
            f"<start_of_turn>user\n{m['content']}<end_of_turn>\n" for m in msgs if m["role"] == "user"
        )
        assistant = "".join(f"{m['content']}<end_of_turn>\n" for m in msgs if m["role"] == "assistant")
        system = "".join(
            f"<start_of_turn>system\n{m['content']}<end_of_turn>\n" for m in msgs if m["role"] == "system"
        )
        assert text["user"] == users and text["assistant"] == assistant and text["system"] == system
        assert text["other"] == tok.bos_token + "<start_of_turn>model\n"
        assert tok.decode(ids) == renderer.text(msgs)


def test_generation_marks_and_prefix_differences_agree(tok):
    plain, marked = ChatRenderer(tok, TEMPLATE), ChatRenderer(tok, GENERATION_TEMPLATE)
    for msgs in conversations(5, seed=1):
        a, b = plain.render(msgs, add_generation_prompt=True), marked.render(msgs, add_generation_prompt=True)
        assert a[0] == b[0] and np.array_equal(a[1], b[1])


def test_a_template_that_rewrites_earlier_turns_is_refused(tok):
    # keeps only the last assistant message's text: earlier turns change as the conversation grows
    rewriting = ("{% for m in messages %}{% if m['role'] == 'assistant' and not loop.last %}[old]"
                 "{% else %}{{ m['role'] }}: {{ m['content'] }}\n{% endif %}{% endfor %}")  # fmt: skip
    msgs = [
        {"role": "user", "content": "a"},
        {"role": "assistant", "content": "b"},
        {"role": "user", "content": "c"},
    ]
    with pytest.raises(DataError, match="renders turn 1 differently once later turns follow"):
        ChatRenderer(tok, rewriting).render(msgs)


def test_a_model_without_chat_template_names_the_fix(tmp_path):
    cfg = Config.model_validate(
        {"data": {"format": "chat", "text": str(write_chat_jsonl(tmp_path / "c.jsonl", 2))}}
    )
    shipped = AutoTokenizer.from_pretrained(shipped_model_path())
    with pytest.raises(ConfigError) as err:
        TokenWindows(cfg.data, shipped)
    msg = str(err.value)
    assert "has no chat template" in msg and "data.chat_template" in msg and "\n" not in msg
    (tmp_path / "t.jinja").write_text(TEMPLATE)
    cfg.data.chat_template = tmp_path / "t.jinja"  # the fix it names
    assert next(iter(TokenWindows(cfg.data, shipped))).roles is not None


def test_chat_windows_carry_each_tokens_role(tok, tmp_path):
    data = write_chat_jsonl(tmp_path / "chat.jsonl", 12)
    cfg = Config.model_validate({"data": {"format": "chat", "text": str(data), "context_size": 32}})
    windows = list(TokenWindows(cfg.data, tok))
    ids = np.concatenate([w.tokens.numpy()[1:] for w in windows])
    roles = np.concatenate([w.roles.numpy()[1:] for w in windows])
    assert all(w.roles[0] == 0 and w.tokens[0] == tok.bos_token_id for w in windows)
    # the stream is the conversations rendered one after another, template BOS dropped, EOS between
    renderer = ChatRenderer(tok, TEMPLATE)
    want_ids, want_roles = [], []
    for msgs in conversations(12):
        r_ids, r_roles = renderer.render(msgs)
        want_ids += [*r_ids[1:], tok.eos_token_id]
        want_roles += [*r_roles[1:].tolist(), 0]
    # windows: BOS + the next 31 tokens of that stream, skipping an EOS right after a window's BOS
    expected_ids, expected_roles, pos = [], [], 0
    while True:
        if pos < len(want_ids) and want_ids[pos] == tok.eos_token_id:
            pos += 1
        if len(want_ids) - pos < 31:
            break
        expected_ids += want_ids[pos : pos + 31]
        expected_roles += want_roles[pos : pos + 31]
        pos += 31
    assert ids.tolist() == expected_ids and roles.tolist() == expected_roles
    assert set(np.unique(roles)) == {0, 1, 2, 3}
    assert role_mask(roles, "assistant").sum() == (roles == ROLE_CODE["assistant"]).sum() > 0


def test_chat_records_are_checked(tmp_path):
    bad = tmp_path / "bad.jsonl"
    bad.write_text(json.dumps({"messages": [{"role": "robot", "content": "x"}]}) + "\n")
    cfg = Config.model_validate({"data": {"format": "chat", "text": str(bad)}})
    with pytest.raises(DataError, match="role 'robot'; use one of system, user, assistant, tool"):
        next(iter(TokenWindows(cfg.data, AutoTokenizer.from_pretrained(save_chat_model(tmp_path / "m")))))
    with pytest.raises(
        ConfigError,
        match='data.train_on = .assistant. restricts chat data to one role; set data.format = "chat"',
    ):
        load_config(DEMO, ["data.train_on=assistant"])


def test_chat_prompts_parse_in_three_forms_and_render_with_the_generation_prompt(tok, tmp_path):
    lines = "system: Be brief.\nuser: Where did Lily go?\nShe was happy."
    msgs = parse_chat(lines)
    assert msgs == [{"role": "system", "content": "Be brief."},
                    {"role": "user", "content": "Where did Lily go?\nShe was happy."}]  # fmt: skip
    assert parse_chat(json.dumps(msgs)) == msgs
    (tmp_path / "p.json").write_text(json.dumps(msgs))
    (tmp_path / "p.jsonl").write_text("\n".join(json.dumps(m) for m in msgs))
    (tmp_path / "p.txt").write_text(lines)
    assert all(parse_chat(str(tmp_path / f"p.{s}")) == msgs for s in ("json", "jsonl", "txt"))
    with pytest.raises(ConfigError, match="has no role"):
        parse_chat("hello there")
    ids, roles = chat_prompt(tok, msgs)
    assert ids[0] == tok.bos_token_id and ids.count(tok.bos_token_id) == 1
    assert [t["role"] for t in turns(roles)] == ["other", "system", "user", "other"]
    assert tok.decode(ids).endswith("<start_of_turn>model\n")
