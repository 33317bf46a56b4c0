"""The one generation loop (`lm.generate`): sampling, top-p, the key/value cache, the EOS policy,
batched samples, and the window past the context; on a bigram table and on a real tiny GPT-2."""

from __future__ import annotations

import pytest
import torch

from monosemantic.lm.generate import Sampling, context_of, generate, next_tokens, subject_forward
from monosemantic.lm.model import SubjectModel
from monosemantic.utils.errors import MonosemanticError

V, EOS = 6, 5


def bigram(table: torch.Tensor, calls: list | None = None):
    """A bigram LM as a `Forward`: the logits of each position are the row of its token. It keeps no
    cache, so the loop must hand it the whole sequence every step."""

    def forward(ids: torch.Tensor, start: int, cache: object) -> tuple[torch.Tensor, None]:
        if calls is not None:
            calls.append((start, ids.shape[1]))
        return table[ids], None

    return forward


def chain() -> torch.Tensor:
    """0 -> 1 -> 2 -> 3 -> EOS, greedily."""
    t = torch.full((V, V), -10.0)
    for a, b in ((0, 1), (1, 2), (2, 3), (3, EOS), (EOS, 0), (4, 4)):
        t[a, b] = 10.0
    return t


def test_eos_policies_stop_include_ignore() -> None:
    f, ids = bigram(chain()), torch.tensor([0])
    assert generate(f, ids, 10, eos_id=EOS)[0].tolist() == [1, 2, 3]
    assert generate(f, ids, 10, eos_id=EOS, eos="include")[0].tolist() == [1, 2, 3, EOS]
    assert generate(f, ids, 6, eos_id=EOS, eos="ignore")[0].tolist() == [1, 2, 3, EOS, 0, 1]
    assert generate(f, ids, 2, eos_id=EOS)[0].tolist() == [1, 2]  # max_new_tokens first
    with pytest.raises(MonosemanticError, match="eos policy"):
        generate(f, ids, 2, eos_id=EOS, eos="keep")  # type: ignore[arg-type]


def test_a_forward_without_cache_gets_the_whole_sequence_and_the_window_slides() -> None:
    calls: list = []
    generate(bigram(chain(), calls), torch.tensor([4, 4, 4]), 4, eos_id=EOS)
    assert calls == [(0, 3), (0, 4), (0, 5), (0, 6)]
    calls.clear()
    generate(bigram(chain(), calls), torch.tensor([4, 4, 4]), 4, eos_id=EOS, context=4)
    assert calls == [(0, 3), (0, 4), (1, 4), (2, 4)]  # past the context: the last 4 positions


def test_top_p_keeps_the_nucleus_only() -> None:
    probs = torch.tensor([[0.5, 0.3, 0.15, 0.05]])
    logits = probs.log()
    gen = torch.Generator().manual_seed(0)
    nucleus = {int(next_tokens(logits, Sampling(1.0, 0.75, 0), gen)) for _ in range(400)}
    assert nucleus == {0, 1}  # 0.5 < 0.75 needs the second; 0.8 >= 0.75 stops there
    only = {int(next_tokens(logits, Sampling(1.0, 0.4, 0), gen)) for _ in range(50)}
    assert only == {0}
    everything = {int(next_tokens(logits, Sampling(1.0, 1.0, 0), gen)) for _ in range(2000)}
    assert everything == {0, 1, 2, 3}
    # the nucleus is renormalised: token 1 keeps its share 0.3 / 0.8 within it
    draws = torch.stack([next_tokens(logits, Sampling(1.0, 0.75, 0), gen) for _ in range(4000)])
    assert abs(float((draws == 1).float().mean()) - 0.3 / 0.8) < 0.03
    assert int(next_tokens(logits, Sampling(0.0, 0.1, 0), gen)) == 0  # greedy ignores top_p


@pytest.mark.parametrize("bad", [dict(temperature=-1.0), dict(temperature=float("inf")), dict(top_p=0.0),
                                 dict(top_p=1.5)])  # fmt: skip
def test_bad_sampling_is_one_line(bad: dict) -> None:
    with pytest.raises(MonosemanticError) as err:
        Sampling(**bad)
    assert "\n" not in str(err.value)


@pytest.fixture(scope="module")
def gpt2(tiny_model) -> SubjectModel:  # noqa: ANN001 (the session fixture of tests/lm/conftest.py)
    return tiny_model("gpt2")


def test_batched_samples_are_seeded_and_the_cache_changes_nothing(gpt2: SubjectModel) -> None:
    ids = torch.tensor(gpt2.tokenizer("the cat sat on the", add_special_tokens=False)["input_ids"])
    s = Sampling(temperature=1.0, top_p=0.9, seed=7)
    ctx = context_of(gpt2.hf.config)
    a = generate(subject_forward(gpt2), ids, 12, s, n=5, eos_id=None, context=ctx)
    b = generate(subject_forward(gpt2), ids, 12, s, n=5, eos_id=None, context=ctx)
    full = generate(subject_forward(gpt2), ids, 12, s, n=5, eos_id=None, context=ctx, cache=False)
    assert [x.tolist() for x in a] == [x.tolist() for x in b] == [x.tolist() for x in full]
    assert len({tuple(x.tolist()) for x in a}) > 1  # five samples, not one repeated
    other = generate(subject_forward(gpt2), ids, 12, Sampling(1.0, 0.9, 8), n=5, eos_id=None, context=ctx)
    assert [x.tolist() for x in other] != [x.tolist() for x in a]
    # greedy equals the model's own argmax, step by step
    greedy = generate(subject_forward(gpt2), ids, 6, eos_id=None)[0]
    seq = ids
    for _ in range(6):
        seq = torch.cat([seq, gpt2.hf(seq[None]).logits[0, -1].argmax()[None]])
    assert greedy.tolist() == seq[ids.numel() :].tolist()


def test_tokens_stream_as_they_are_chosen(gpt2: SubjectModel) -> None:
    ids = torch.tensor(gpt2.tokenizer("a dog", add_special_tokens=False)["input_ids"])
    seen: list[tuple[int, int]] = []
    out = generate(
        subject_forward(gpt2), ids, 5, Sampling(1.0, 1.0, 3), n=2, on_token=lambda i, t: seen.append((i, t))
    )
    assert [t for i, t in seen if i == 0] == out[0].tolist() and [t for i, t in seen if i == 1] == out[
        1
    ].tolist()
