"""A steering evaluation: `n` samples of one prompt, plain and at each steering value, scored for
how often the concept appears and for fluency.

- The concept is the feature's top activating tokens (the tokens at the peaks of its top
  examples in the feature store, what the dashboard lists it by), or the words the caller gives.
  Without a store it falls back to the feature's logit-lens tokens (the tokens its decoder
  direction promotes through the unembedding), and says so.
- `concept_rate`: the share of samples in which the concept appears at least once;
  `concept_per_100`: its appearances per 100 generated tokens. A token matches when its text,
  stripped and lower-cased, is one of the concept tokens; a word matches as a whole word,
  case-insensitively, in the decoded text.
- `loss`: fluency as the unsteered model's own cross-entropy (nats per token) on the generated
  tokens, given the prompt: steering that breaks the text raises it.

Every arm (plain, then each value) samples with the same seed, so the arms share their random
numbers and differ only by the edit.
"""

from __future__ import annotations

import re
from collections import Counter
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from typing import TYPE_CHECKING, Any

import torch
from torch import Tensor

from monosemantic.dictionaries.base import Dictionary
from monosemantic.lm.generate import Sampling, context_of, generate, subject_forward
from monosemantic.lm.token_display import TokenDisplay

from .edits import Value, bos_aware_edits, check_steering_value

if TYPE_CHECKING:
    from monosemantic.lm.model import SubjectModel
    from monosemantic.store.feature_store import FeatureStore

CONCEPT_TOKENS = 8  # top activating tokens that stand for the concept


@dataclass
class FeatureFacts:
    """What steering needs to know of a feature from the analysis: its scale and its concept."""

    max_activation: float | None = None
    tokens: list[str] = field(default_factory=list)  # top activating tokens, most frequent first
    source: str = "none"  # where `tokens` came from: "top activations", "logit lens" or "none"


def feature_facts(store: FeatureStore | None, did: int | None, feature: int) -> FeatureFacts:
    """The feature's max activation and top activating tokens from the store, if it has them."""
    if store is None or did is None:
        return FeatureFacts()
    from monosemantic.utils.errors import MonosemanticError

    try:
        row = store.feature(did, feature)
    except MonosemanticError:
        return FeatureFacts()
    counts: Counter[str] = Counter()
    for e in store.examples(did, feature, kind="top"):
        toks, peak = e.get("tokens") or [], e.get("peak")
        if peak is not None and 0 <= peak < len(toks) and _norm(toks[peak]):
            counts[toks[peak]] += 1
    tokens = [t for t, _ in counts.most_common(CONCEPT_TOKENS)]
    return FeatureFacts(row.get("max_activation"), tokens, "top activations" if tokens else "none")


def logit_lens_tokens(
    model: SubjectModel, dic: Dictionary, feature: int, k: int = CONCEPT_TOKENS
) -> list[str]:
    """The tokens the feature's decoder direction promotes most through the unembedding."""
    with torch.no_grad():
        logits = model.unembed(dic.W_dec[feature].detach().to(model.device, model.dtype)).float()
    show = TokenDisplay(model.tokenizer)
    return [t for t in show.many(logits.topk(4 * k).indices.tolist()) if _norm(t)][:k]


def _norm(token: str) -> str:
    return token.strip().lower()


@dataclass
class Arm:
    """One row of the evaluation: `n` samples at one steering value (None: plain)."""

    label: str
    value: float | None
    multiple: float | None
    samples: list[list[int]]
    texts: list[str]
    concept_rate: float
    concept_per_100: float
    loss: float | None  # nats per generated token under the plain model; None if nothing was generated
    mean_tokens: float


@dataclass
class SteeringEvaluation:
    dictionary: str
    site: str
    feature: int
    mode: str
    prompt: str
    concept: list[str]
    concept_kind: str  # "tokens (top activations)", "tokens (logit lens)" or "words"
    max_activation: float | None
    sampling: dict[str, Any]
    max_new_tokens: int
    arms: list[Arm]

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


class ConceptCounter:
    """Appearances of the concept in one generation: concept tokens by id, or words in the text."""

    def __init__(self, model: SubjectModel, tokens: list[str], words: list[str]) -> None:
        self.show = TokenDisplay(model.tokenizer)
        self.decode = model.tokenizer.decode
        self.tokens = {_norm(t) for t in tokens if _norm(t)}
        self.words = [
            re.compile(rf"(?<!\w){re.escape(w.strip())}(?!\w)", re.IGNORECASE) for w in words if w.strip()
        ]

    def __call__(self, ids: list[int]) -> int:
        if self.words:
            text = self.decode(ids)
            return sum(len(p.findall(text)) for p in self.words)
        return sum(_norm(t) in self.tokens for t in self.show.many(ids))


@torch.no_grad()
def generation_loss(model: SubjectModel, ids: Tensor, samples: list[list[int]]) -> tuple[float, int]:
    """(summed nats, tokens) of the plain model predicting each sample's tokens after the prompt."""
    rows = [s for s in samples if s]
    if not rows:
        return 0.0, 0
    T, L = ids.numel(), max(len(s) for s in rows)
    seq = torch.zeros(len(rows), T + L, dtype=torch.long)
    mask = torch.zeros(len(rows), L, dtype=torch.bool)
    for i, s in enumerate(rows):
        seq[i, :T] = ids
        seq[i, T : T + len(s)] = torch.tensor(s)
        mask[i, : len(s)] = True
    logits = model.run(seq).logits[:, T - 1 : T + L - 1].float().cpu()  # predictions of the new tokens
    nll = -torch.log_softmax(logits, -1).gather(-1, seq[:, T:, None])[..., 0]
    return float(nll[mask].sum()), int(mask.sum())


def _arm(
    model: SubjectModel, ids: Tensor, samples: list[list[int]], label: str, value: float | None,
    multiple: float | None, count: ConceptCounter,
) -> Arm:  # fmt: skip
    hits = [count(s) for s in samples]
    nats, n_tok = generation_loss(model, ids, samples)
    return Arm(
        label=label,
        value=value,
        multiple=multiple,
        samples=samples,
        texts=[model.tokenizer.decode(s) for s in samples],
        concept_rate=sum(h > 0 for h in hits) / max(len(samples), 1),
        concept_per_100=100 * sum(hits) / max(n_tok, 1),
        loss=nats / n_tok if n_tok else None,
        mean_tokens=n_tok / max(len(samples), 1),
    )


def resolve_arms(
    mode: str, values: list[Value], max_activation: float | None
) -> list[tuple[str, float | None, float | None]]:
    """(label, raw value, multiple) of each steered arm, every value checked before any generation."""
    if mode == "ablate":
        return [("ablate", None, None)]
    arms = []
    for v in values:
        raw = v.resolve(max_activation)
        check_steering_value(raw, mode)
        arms.append(
            (f"{v.multiple:g}x ({raw:.3g})" if v.multiple is not None else f"{raw:g}", raw, v.multiple)
        )
    return arms


def concept_for(
    model: SubjectModel, dic: Dictionary, feature: int, facts: FeatureFacts, words: list[str]
) -> tuple[list[str], str]:
    """The words given, else the feature's top activating tokens, else its logit-lens tokens."""
    words = [w.strip() for w in words if w.strip()]
    if words:
        return words, "words"
    if facts.tokens:
        return facts.tokens, f"tokens ({facts.source})"
    return logit_lens_tokens(model, dic, feature), "tokens (logit lens)"


def evaluate_steering(
    model: SubjectModel,
    dic: Dictionary,
    ids: Tensor,
    feature: int,
    mode: str,
    arms: list[tuple[str, float | None, float | None]],
    concept: tuple[list[str], str],
    sampling: Sampling,
    n: int,
    max_new_tokens: int,
    on_token: Callable[[int, int, int], None] | None = None,
) -> list[Arm]:
    """The plain arm, then one per `resolve_arms` entry, each `n` samples of `ids` continued.
    `on_token(arm, sample, token)` sees tokens as they are chosen."""
    words, kind = concept
    count = ConceptCounter(model, [] if kind == "words" else words, words if kind == "words" else [])
    ctx, eos = context_of(model.hf.config), model.tokenizer.eos_token_id
    out = []
    for j, (label, raw, multiple) in enumerate([("plain", None, None), *arms]):
        edits = (
            None if j == 0 else bos_aware_edits(model, dic, ids, feature, mode, 0.0 if raw is None else raw)
        )
        tok = None if on_token is None else (lambda i, t, j=j: on_token(j, i, t))
        new = generate(
            subject_forward(model, edits), ids, max_new_tokens, sampling, n, eos, "stop", ctx, on_token=tok
        )
        out.append(_arm(model, ids, [t.tolist() for t in new], label, raw, multiple, count))
    return out
