"""Load any supported `transformers` model and read/edit its TransformerLens hook sites.

`SubjectModel` wraps the plain HF model (no weight conversion, no re-implementation), so its
logits are exactly the model's own; hooks only observe (or, for `edits`, replace what the user
asked to replace). Parameters are frozen: the subject model is never trained here, and no
autograd graph is built unless an edit introduces a tensor that requires grad.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable, Iterable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from safetensors import SafetensorError
from torch import Tensor, nn
from transformers import (
    AutoConfig,
    AutoModel,
    AutoModelForCausalLM,
    AutoModelForMaskedLM,
    AutoTokenizer,
    PreTrainedModel,
)
from transformers import logging as hf_logging

from monosemantic.utils.errors import MonosemanticError
from monosemantic.utils.torch_utils import resolve_device, torch_dtype

from . import attn_scores
from .big import BigModel, input_device
from .families import family_of
from .family_sites import site_width
from .hooks import StopForward, hooked
from .shipped import shipped_model_path
from .sites import final_norm_path, parse_site, site_names, site_suffix, unknown_site_error


@dataclass
class RunOutput:
    """Logits `[B, T, vocab]` (None when stopped early or the model has no head), captures, and
    the key/value cache when `run(..., use_cache=True)` asked for it."""

    logits: Tensor | None
    activations: dict[str, Tensor] = field(default_factory=dict)
    past_key_values: Any = None


def resolve_model_path(name_or_path: str) -> str:
    """'storyworld' -> the shipped LM folder; anything else is passed to from_pretrained as is."""
    if name_or_path == "storyworld":
        return str(shipped_model_path())
    if name_or_path.startswith(("/", ".", "~")) and not Path(name_or_path).expanduser().is_dir():
        raise MonosemanticError(
            f"model folder {name_or_path} does not exist; give a save_pretrained folder, a hub id or 'storyworld'"
        )
    return str(Path(name_or_path).expanduser()) if name_or_path.startswith("~") else name_or_path


class SubjectModel:
    """A frozen HF model plus its hook sites (see `monosemantic.lm.sites`)."""

    def __init__(self, hf: PreTrainedModel, tokenizer, name: str, revision: str | None = None) -> None:
        self.hf = hf.eval().requires_grad_(False)
        self.tokenizer = tokenizer
        self.name = name
        self.revision = revision
        family = family_of(hf.config.model_type)
        self.family_entry = family
        self.family = family.name
        self.layout = family.layout
        self.base: nn.Module = hf.base_model
        self.n_layers = len(self.base.get_submodule(self.layout.blocks))
        self.d_model = int(hf.config.hidden_size)
        self.parallel_residual = family.parallel_residual(hf.config)
        self.has_head = hf.get_output_embeddings() is not None
        # an encoder (BERT) sees the whole sequence: no next-token loss, no generation
        self.is_encoder = not family.causal
        self._sites = site_names(
            self.n_layers,
            self.parallel_residual,
            self.has_head,
            self.layout.block_kinds,
            tuple(self.layout.final_sites()),
        )
        self._site_set = set(self._sites)

    @property
    def device(self) -> torch.device:
        return input_device(self.hf)

    @property
    def dtype(self) -> torch.dtype:
        return next(self.hf.parameters()).dtype

    # -- sites ---------------------------------------------------------------------------------
    def site_names(self) -> list[str]:
        """Every valid site, in forward order."""
        return list(self._sites)

    def check_sites(self, sites: Iterable[str]) -> None:
        for site in sites:
            if site not in self._site_set:
                raise unknown_site_error(site, self._sites)

    def editable(self, site: str) -> bool:
        """Whether `run(edits=...)` can replace a site (norm scales, attention patterns and router
        logits are capture-only)."""
        self.check_sites([site])
        spec = (
            self.layout.final_sites()[site]
            if site.startswith("ln_final.")
            else self.layout.sites[site_suffix(site)]
        )
        return not spec.capture_only

    def site_width(self, site: str) -> int:
        """Per-token width of a site's activations (the trailing dims flattened: heads x head_dim for
        hook_q/k/v/z); one clear error for attention patterns, which are not per-token vectors."""
        self.check_sites([site])
        width = site_width(self.family_entry, self.hf.config, site_suffix(site))
        if width is None:
            raise MonosemanticError(
                f"{site} is [batch, heads, query, key], not one vector per token; capture it with "
                "run(capture=[...]) instead of harvesting or training on it"
            )
        return width

    def site_layer(self, site: str) -> int:
        """Block index of a site; hook_embed is 0 and the ln_final.* sites are n_layers."""
        self.check_sites([site])
        if site.startswith("ln_final."):
            return self.n_layers
        return parse_site(site)[1] or 0

    def stop_layer(self, sites: Iterable[str]) -> int | None:
        """The smallest `stop_at_layer` that still computes every site (None: run to the end)."""
        sites = list(sites)
        self.check_sites(sites)
        if not sites or any(s.startswith("ln_final.") for s in sites):
            return None
        return max((parse_site(s)[1] + 1 if parse_site(s)[1] is not None else 0) for s in sites)

    @property
    def max_context(self) -> int | None:
        """Longest sequence the model's learned absolute position embeddings cover (gpt2, bert);
        None for rotary models, which have no hard limit."""
        if self.family_entry.pos_embed is None:
            return None
        c = self.hf.config
        return int(getattr(c, "n_positions", None) or c.max_position_embeddings)

    def check_context(self, n_tokens: int, key: str = "data.context_size") -> None:
        """One clear error, before any forward pass, instead of an IndexError deep in the embedding."""
        ctx = self.max_context
        if ctx is not None and n_tokens > ctx:
            raise MonosemanticError(
                f"{key}={n_tokens} is longer than {self.name}'s {ctx} learned positions; use {key} <= {ctx}"
            )

    # -- forward -------------------------------------------------------------------------------
    def run(
        self,
        input_ids: Tensor,
        attention_mask: Tensor | None = None,
        capture: Sequence[str] = (),
        edits: dict[str, Callable[[Tensor], Tensor]] | None = None,
        stop_at_layer: int | None = None,
        past_key_values: Any = None,
        use_cache: bool = False,
    ) -> RunOutput:
        """One forward pass that captures `capture`, applies `edits`, optionally stops early.

        Captured tensors are the model's own (not copies); a capture at an edited site holds the
        edited value. Grad mode is the caller's: wrap in `torch.inference_mode()` to harvest.
        With `use_cache`, the output carries the key/value cache; passing it back as
        `past_key_values` runs only the new tokens `input_ids` (captures and edits then see
        those positions only, and `attention_mask`, if given, covers past and new tokens).
        """
        capture = list(dict.fromkeys(capture))
        edits = dict(edits or {})
        self.check_sites([*capture, *edits])
        if stop_at_layer is not None:
            if not 0 <= stop_at_layer <= self.n_layers:
                raise MonosemanticError(
                    f"stop_at_layer={stop_at_layer} is out of range; use 0..{self.n_layers} or None"
                )
            needed = self.stop_layer([*capture, *edits])
            if needed is None or needed > stop_at_layer:
                late = [
                    s
                    for s in [*capture, *edits]
                    if self.stop_layer([s]) is None or self.stop_layer([s]) > stop_at_layer
                ]
                fix = f"use stop_at_layer={needed}" if needed is not None else "leave stop_at_layer unset"
                raise MonosemanticError(
                    f"site {late[0]!r} is computed after stop_at_layer={stop_at_layer}; {fix}"
                )
        if input_ids.dim() == 1:
            input_ids = input_ids.unsqueeze(0)
            attention_mask = attention_mask.unsqueeze(0) if attention_mask is not None else None
        input_ids = input_ids.to(self.device)
        if attention_mask is None:
            # Packed windows hold no padding; an explicit all-ones mask says so (and keeps transformers
            # from warning whenever pad == bos, as in GPT-2-style tokenizers).
            past = past_key_values.get_seq_length() if past_key_values is not None else 0
            attention_mask = torch.ones(input_ids.shape[0], past + input_ids.shape[1], dtype=torch.long)
        attention_mask = attention_mask.to(self.device)
        logits, cache = None, None
        kwargs: dict[str, Any] = {"use_cache": use_cache}
        if past_key_values is not None:
            kwargs[self._cache_argument()] = past_key_values
        order, shape = self._sites, (input_ids.shape[0], input_ids.shape[1])
        with (
            self._eager_if([*capture, *edits]),
            hooked(
                self.base, self.hf, self.family_entry, order, set(capture), edits, stop_at_layer, shape
            ) as h,
        ):
            try:
                out = self.hf(input_ids=input_ids, attention_mask=attention_mask, **kwargs)
                logits = getattr(out, "logits", None)
                if use_cache:  # transformers >= 5.x names it `cache`, earlier `past_key_values`
                    cache = out["cache"] if "cache" in out else out.get("past_key_values")
            except StopForward:
                pass
            acts = {site: h.acts[site] for site in capture}
        return RunOutput(logits, acts, cache)

    @contextmanager
    def _eager_if(self, sites: Sequence[str]) -> Iterator[None]:
        """Run with eager attention while attention patterns are captured (sdpa and flash attention
        never form them), or eager attention that keeps its scores while `attn.hook_attn_scores` is
        (lm/attn_scores.py); the model's own implementation is restored afterwards."""
        before = self.hf.config._attn_implementation
        want = None
        if any(s.endswith("attn.hook_attn_scores") for s in sites):
            want = attn_scores.register()
        elif any(s.endswith("attn.hook_pattern") for s in sites):
            want = "eager"
        if want is None or before == want:
            yield
            return
        self.hf.set_attn_implementation(want)
        try:
            yield
        finally:
            self.hf.set_attn_implementation(before)
            if want == attn_scores.IMPLEMENTATION:  # layers whose scores no site took
                for mod in self.hf.modules():
                    attn_scores.take_scores(mod)

    def _cache_argument(self) -> str:
        """The forward argument taking a key/value cache: `cache` (transformers 5.x, where
        `past_key_values` is deprecated) or `past_key_values` (4.x)."""
        params = inspect.signature(self.hf.forward).parameters
        return "cache" if "cache" in params else "past_key_values"

    # -- unembedding (logit lens) ------------------------------------------------------------
    @property
    def final_norm(self) -> nn.Module:
        self._need_head()
        return self.hf.get_submodule(final_norm_path(self.hf, self.layout))

    @property
    def lm_head(self) -> nn.Linear:
        self._need_head()
        return self.hf.get_output_embeddings()

    @property
    def W_U(self) -> Tensor:  # noqa: N802 (TransformerLens name)
        """Unembedding matrix `[d_model, vocab]`."""
        return self.lm_head.weight.T

    def unembed(self, resid: Tensor) -> Tensor:
        """Final norm + LM head on a residual-stream vector (the logit lens)."""
        logits = self.lm_head(self.final_norm(resid.to(self.device, self.dtype)))
        cap = getattr(self.hf.config, "final_logit_softcapping", None)
        if cap is not None:  # Gemma 2's final soft-capping
            logits = torch.tanh(logits / cap) * cap
        return logits

    def _need_head(self) -> None:
        if not self.has_head:
            raise MonosemanticError(
                f"{self.name} was loaded without a language-model head; unembedding needs one "
                "(save the model with its *ForCausalLM / *ForMaskedLM head)"
            )

    def __repr__(self) -> str:
        return (
            f"SubjectModel({self.name!r}, family={self.family}, n_layers={self.n_layers}, "
            f"d_model={self.d_model}, dtype={self.dtype}, device={self.device})"
        )


def load_model(
    name_or_path: str | Path = "storyworld",
    dtype: str | torch.dtype | None = None,
    device: str | torch.device | None = None,
    revision: str | None = None,
    big: BigModel | None = None,
) -> SubjectModel:
    """Load a hub id, a local save_pretrained folder, or 'storyworld' (the LM shipped here).

    dtype defaults to float32 (the shipped fp16 weights are upcast); device None means auto.
    `big` (from `[model]`) splits or offloads the model with accelerate, quantizes it, and reads
    the hub token; then `device` is ignored.
    """
    big = big or BigModel()
    name_or_path = str(name_or_path)
    path = resolve_model_path(name_or_path)
    hf_logging.disable_progress_bar()  # our own bars report progress; one load needs none
    torch_dt = torch_dtype(dtype) if dtype is not None else torch.float32
    dev = resolve_device(str(device) if device is not None else None)
    try:
        token = big.token()
        config = AutoConfig.from_pretrained(path, revision=revision, token=token)
        family = family_of(config.model_type)
        kwargs: dict = {"revision": revision, "dtype": torch_dt, "token": token, **big.kwargs(torch_dt)}
        if family.eager:
            kwargs["attn_implementation"] = "eager"  # sdpa lacks its soft-capping or attention sinks
        if not family.causal:
            archs = config.architectures or []
            auto = AutoModelForMaskedLM if any(a.endswith("ForMaskedLM") for a in archs) else AutoModel
        else:
            auto = AutoModelForCausalLM
        hf = auto.from_pretrained(path, **kwargs)
        tokenizer = AutoTokenizer.from_pretrained(path, revision=revision, token=token)
    except (OSError, ValueError, SafetensorError, UnicodeDecodeError) as err:
        first = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
        raise MonosemanticError(
            f"could not load model {name_or_path!r} ({first}); give a local save_pretrained folder, "
            "a reachable hub id, or 'storyworld'"
        ) from err
    if tokenizer.pad_token is None and tokenizer.eos_token is not None:
        tokenizer.pad_token = tokenizer.eos_token
    hf = hf if big.dispatched else hf.to(dev)
    return SubjectModel(hf, tokenizer, name=name_or_path, revision=revision)
