"""Interventions inside the replacement model: add to, set, scale or ablate latents at chosen
positions, then re-run or generate. What an intervention is and how it edits latents is
`dictionaries/interventions.py` (shared with `steer`); this module resolves a dictionary by its name
in the replacement model and runs the model with the edits.

The replacement model runs freely (downstream latents respond), with the error terms computed live,
so without interventions it is the subject model. `freeze_attention` holds the clean prompt's
attention patterns (as circuit-tracer's constrained interventions do) to isolate non-attention paths.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor

from monosemantic.dictionaries.interventions import Intervention, apply_interventions
from monosemantic.lm.generate import EosPolicy, Sampling, context_of
from monosemantic.lm.generate import generate as lm_generate
from monosemantic.utils.errors import MonosemanticError

from .replacement import ReplacementModel


def _resolve(rm: ReplacementModel, iv: Intervention) -> int:
    if isinstance(iv.dictionary, str):
        names = [s.name for s in rm.spliced]
        if iv.dictionary not in names:
            raise MonosemanticError(f"no dictionary {iv.dictionary!r}; spliced: {', '.join(names)}")
        return names.index(iv.dictionary)
    if not 0 <= iv.dictionary < len(rm.spliced):
        raise MonosemanticError(f"dictionary index {iv.dictionary} out of range (0..{len(rm.spliced) - 1})")
    return iv.dictionary


def _editor(rm: ReplacementModel, interventions: Sequence[Intervention]):
    """The replacement model's latent edit: each intervention resolved to its spliced dictionary."""
    plan: dict[int, list[Intervention]] = {}
    for iv in interventions:
        i = _resolve(rm, iv)
        iv.check(int(rm.spliced[i].dic.cfg.d_sae), rm.spliced[i].name)
        plan.setdefault(i, []).append(iv)

    def edit(i: int, f: Tensor) -> Tensor:
        return apply_interventions(f, plan.get(i, ()))

    return edit


@torch.no_grad()
def intervene(
    rm: ReplacementModel,
    prompt: str | Tensor | Sequence[int],
    interventions: Sequence[Intervention],
    freeze_attention: bool = False,
) -> tuple[Tensor, Tensor]:
    """(clean logits, intervened logits), each [T, vocab]."""
    ids = rm.tokenize(prompt)
    clean = rm.plain_logits(ids[None])[0]
    freeze = rm.setup(ids).freeze if freeze_attention else None
    out = rm.free(ids[None], edit=_editor(rm, interventions), freeze_attention=freeze)[0]
    return clean, out


@torch.no_grad()
def generate(
    rm: ReplacementModel,
    prompt: str | Tensor | Sequence[int],
    interventions: Sequence[Intervention],
    max_new_tokens: int = 20,
    temperature: float = 0.0,
    seed: int = 0,
    top_p: float = 1.0,
    eos: EosPolicy = "stop",
) -> Tensor:
    """Token ids of the prompt plus up to `max_new_tokens` continued under the interventions, by
    the library's one generation loop (`lm.generate`: sampling, EOS policy). The replacement
    model keeps no key/value cache, so each step recomputes the sequence; attention is free
    (patterns for generated positions do not exist on the clean prompt)."""
    ids = rm.tokenize(prompt)
    edit = _editor(rm, interventions)

    def forward(seq: Tensor, start: int, cache: object) -> tuple[Tensor, None]:
        return rm.free(seq, edit=edit), None

    ctx = context_of(rm.lm.config)
    eos_id = getattr(rm.tokenizer, "eos_token_id", None)
    (new,) = lm_generate(
        forward, ids, max_new_tokens, Sampling(temperature, top_p, seed), 1, eos_id, eos, ctx
    )
    return torch.cat([ids, new.to(ids.device)])
