"""The library's one generation loop: `steer`, circuit interventions and the server's live steering
all continue text through `generate`, so they sample, cache and stop alike.

- Sampling (`Sampling`): greedy at temperature 0; else softmax(logits / temperature), cut to the
  top-p nucleus (the fewest tokens whose probability reaches `top_p`), sampled with a seeded CPU
  generator, so a seed gives the same tokens on any device. `n` samples of one prompt run as one
  batch and draw from one generator: a seed fixes the whole set, and two calls with the same seed
  (say plain and steered) share their random numbers.
- Key/value cache: a `Forward` that returns a cache is given only the new positions from then on
  (one position per step); one that returns None is given the whole sequence each step. Past the
  model's context the window slides and is recomputed every step.
- EOS policy (`eos`), explicit: "stop" (the default) ends a sample at EOS and leaves the EOS out;
  "include" ends it and keeps the EOS as its last token; "ignore" runs every sample to
  `max_new_tokens`. A sample that has ended keeps being fed EOS until the batch ends; those
  positions are not returned.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Literal, Protocol

import torch
from torch import Tensor

from monosemantic.utils.errors import MonosemanticError

if TYPE_CHECKING:
    from monosemantic.lm.model import SubjectModel

__all__ = ["EOS_POLICIES", "Forward", "Sampling", "context_of", "generate", "next_tokens", "subject_forward"]

EOS_POLICIES = ("stop", "include", "ignore")
EosPolicy = Literal["stop", "include", "ignore"]


@dataclass(frozen=True)
class Sampling:
    """How each next token is chosen: greedy at `temperature` 0, else sampled from the top-p nucleus."""

    temperature: float = 0.0
    top_p: float = 1.0
    seed: int = 0

    def __post_init__(self) -> None:
        if not (self.temperature >= 0 and self.temperature < float("inf")):
            raise MonosemanticError(
                f"temperature {self.temperature} must be a finite number >= 0 (0: greedy)"
            )
        if not 0 < self.top_p <= 1:
            raise MonosemanticError(f"top_p {self.top_p} must be in (0, 1] (1: the whole distribution)")


class Forward(Protocol):
    def __call__(self, ids: Tensor, start: int, cache: Any) -> tuple[Tensor, Any]:
        """Logits [B, t, vocab] of `ids` [B, t], the positions start..start+t-1 of each sequence,
        given `cache` (None, or what this forward returned for the positions before `start`);
        returns the logits and the new cache (None if it keeps none)."""
        ...


def next_tokens(logits: Tensor, sampling: Sampling, generator: torch.Generator) -> Tensor:
    """[B] token ids from last-position logits [B, vocab] (on the CPU, as `generator`)."""
    logits = logits.float().cpu()
    scaled = logits / sampling.temperature if sampling.temperature > 0 else None
    if scaled is None or not torch.isfinite(scaled).all():
        return logits.argmax(-1)  # greedy, also the limit of a temperature so small the logits overflow
    probs = torch.softmax(scaled, -1)
    if sampling.top_p < 1:
        sorted_p, order = probs.sort(-1, descending=True)
        # keep a token while the mass before it is under top_p (the most likely one always)
        drop = (sorted_p.cumsum(-1) - sorted_p) >= sampling.top_p
        sorted_p = sorted_p.masked_fill(drop, 0.0)
        probs = torch.zeros_like(probs).scatter(-1, order, sorted_p)
    return torch.multinomial(probs, 1, generator=generator)[:, 0]


def context_of(config: Any) -> int | None:
    """The longest sequence a model's config says it reads (learned positions, or the rotary models'
    trained length); generation slides its window past it."""
    n = getattr(config, "n_positions", None) or getattr(config, "max_position_embeddings", None)
    return int(n) if n else None


def subject_forward(model: SubjectModel, edits: Callable[[int], dict | None] | dict | None = None) -> Forward:
    """A cached `Forward` over a `SubjectModel`, applying `edits` (a dict of site edits, or a
    function of the first position a forward covers, e.g. to leave a leading BOS alone)."""
    edits_at = edits if callable(edits) else (lambda start: edits)

    def forward(ids: Tensor, start: int, cache: Any) -> tuple[Tensor, Any]:
        out = model.run(ids, edits=edits_at(start), past_key_values=cache, use_cache=True)
        return out.logits, out.past_key_values

    return forward


def hf_forward(model: Any, device: torch.device | str | None = None) -> Forward:
    """A cached `Forward` over a plain `transformers` causal LM (no hooks, no edits), passing the
    cache as the model names it: `cache` (transformers 5.x) or `past_key_values` (4.x)."""
    import inspect

    name = "cache" if "cache" in inspect.signature(model.forward).parameters else "past_key_values"

    def forward(ids: Tensor, start: int, cache: Any) -> tuple[Tensor, Any]:
        out = model(input_ids=ids.to(device or model.device), use_cache=True, **{name: cache})
        return out.logits, out["cache"] if "cache" in out else out.get("past_key_values")

    return forward


def _step(forward: Forward, seq: Tensor, state: dict[str, Any], context: int | None, cache: bool) -> Tensor:
    """Last-position logits [B, vocab] of `seq` [B, T], reusing the cache in `state` when it can."""
    T = seq.shape[1]
    if cache and (context is None or T <= context):
        start = state.get("cached", 0)
        logits, state["cache"] = forward(seq[:, start:], start, state.get("cache"))
        state["cached"] = T if state["cache"] is not None else 0  # no cache: the whole sequence again
        return logits[:, -1]
    start = 0 if context is None else max(T - context, 0)
    state.pop("cache", None)
    return forward(seq[:, start:], start, None)[0][:, -1]


@torch.no_grad()
def generate(
    forward: Forward,
    ids: Tensor,
    max_new_tokens: int,
    sampling: Sampling = Sampling(),
    n: int = 1,
    eos_id: int | None = None,
    eos: EosPolicy = "stop",
    context: int | None = None,
    cache: bool = True,
    on_token: Callable[[int, int], None] | None = None,
) -> list[Tensor]:
    """Continue the prompt `ids` [T] `n` times; returns each sample's new tokens (see the module
    docstring for sampling, the cache and the EOS policy). `context`: the model's window, if any.
    `on_token(sample, token)` sees each token as it is chosen (the server streams them)."""
    if eos not in EOS_POLICIES:
        raise MonosemanticError(f"eos policy {eos!r}; use one of {', '.join(EOS_POLICIES)}")
    if ids.dim() != 1 or ids.numel() == 0:
        raise MonosemanticError("generate takes one non-empty prompt of token ids [T]")
    gen = torch.Generator().manual_seed(int(sampling.seed))
    seq = ids.detach().cpu().reshape(1, -1).expand(n, -1).clone()  # forwards move it to their device
    done = torch.zeros(n, dtype=torch.bool)
    new: list[list[int]] = [[] for _ in range(n)]
    state: dict[str, Any] = {}
    for _ in range(max_new_tokens):
        nxt = next_tokens(_step(forward, seq, state, context, cache), sampling, gen)
        for i in (~done).nonzero().flatten().tolist():
            t = int(nxt[i])
            if eos != "ignore" and eos_id is not None and t == eos_id:
                done[i] = True
                if eos == "stop":
                    continue
            new[i].append(t)
            if on_token is not None:
                on_token(i, t)
        if bool(done.all()):
            break
        if eos_id is not None:
            nxt = nxt.masked_fill(done, eos_id)
        seq = torch.cat([seq, nxt.to(seq.dtype)[:, None]], 1)
    return [torch.tensor(t, dtype=torch.long) for t in new]
