"""The replacement model: dictionaries spliced into the subject model, with explicit error terms.

Each transcoder replaces its layer's MLP (`blocks.L.mlp.hook_in`, or the residual entering it, or ln2's
x_hat -> `blocks.L.hook_mlp_out`) and each
SAE replaces the activation at its site by `decode(encode(x)) + error`, where the error (true
activation minus reconstruction on the clean prompt) is held fixed. The forward pass is therefore
unchanged. In `frozen` mode attention patterns, norm scales and any MLP not replaced by a
transcoder hold their clean values, so the model is linear from its sources (embeddings, feature
activations times decoder rows, error terms) to every feature pre-activation and logit.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import torch
from torch import Tensor

from monosemantic.config.site import Site, SiteError
from monosemantic.dictionaries.base import Dictionary
from monosemantic.lm.token_display import TokenDisplay
from monosemantic.utils.errors import MonosemanticError

from .clt_layers import CLTLayer, layer_views, same_clt
from .forward import Freeze, FunctionalLM, NoHooks

if TYPE_CHECKING:
    from transformers import PreTrainedModel

    from monosemantic.lm.model import SubjectModel

# Hooks a dictionary can read or write in a circuit, in forward order within a block.
_ORDER = {"hook_resid_pre": 0, "ln1.hook_normalized": 1, "hook_attn_out": 2, "hook_resid_mid": 3,
          "hook_mlp_in": 4, "ln2.hook_normalized": 5, "mlp.hook_in": 6, "hook_mlp_out": 7,
          "hook_resid_post": 8}  # fmt: skip
# A transcoder replaces the MLP, reading the residual entering it, the norm's x_hat or its output.
_TRANSCODER_IN = ("hook_resid_mid", "hook_mlp_in", "ln2.hook_normalized", "mlp.hook_in")
_READ_ONLY = ("ln1.hook_normalized", "ln2.hook_normalized")  # off the main path: read, never replaced
# Lorsa (a dictionary of attention heads) replaces attention, reading the residual entering it or ln1's x_hat.
_ATTENTION_IN = ("hook_resid_pre", "ln1.hook_normalized")


def _parse(site: str | None) -> tuple[int, str]:
    """(layer, hook) of a one-model block site a circuit can splice at."""
    try:
        parsed = Site.parse(site or "")
        layer, kind = (
            (parsed.layer, parsed.hook) if not parsed.is_group and parsed.model == "a" else (None, "")
        )
    except SiteError:
        layer, kind = None, ""
    if layer is None or kind not in _ORDER:
        raise MonosemanticError(
            f"dictionary site {site!r} cannot be spliced into a circuit; use blocks.L.hook_"
            "{resid_pre,attn_out,resid_mid,mlp_in,mlp_out,resid_post}, or for a transcoder's input "
            "blocks.L.ln2.hook_normalized or blocks.L.mlp.hook_in"
        )
    return layer, kind


@dataclass
class Spliced:
    """One dictionary in the replacement model, with where it reads and writes."""

    name: str
    dic: Dictionary
    hook_name: str
    hook_name_out: str
    layer: int
    transcoder: bool
    attention: bool = False  # a Lorsa replacing the layer's attention output (its patterns held)
    slot: int = 0  # index among the dictionaries of the same layer (keeps node ids unique)
    offset: int = 0  # feature-index offset of this dictionary in its layer's node ids
    source: int = 0  # index of the dictionary it comes from (a CLT gives one Spliced per layer)
    # (spliced index j, decoder [d_sae_j, d_out]) for every dictionary whose latents write to this
    # output: itself for single-site dictionaries, every earlier layer's view for a CLT.
    sources: list[tuple[int, Tensor]] = field(default_factory=list)

    def encoder_dirs(self, idx: Tensor) -> Tensor:
        """[n, d_in]: the linear part of each latent's pre-activation (the architecture decides)."""
        return self.dic.encoder_dirs(idx)

    def readout(self, idx: int, pos: int, pattern: Tensor | None) -> tuple[int | slice, Tensor]:
        """Where latent `idx` at `pos` reads its input, and with what: (pos, encoder direction [d_in]),
        or for a Lorsa head (every position, pattern[pos, s] x its value direction [T, d_in]): its
        pre-activation, linear in the input once the head's pattern is held at the prompt's."""
        d = self.encoder_dirs(torch.tensor([idx], device=self.dic.b_dec.device))[0]
        if not self.attention:
            return pos, d
        return slice(None), pattern[idx // self.dic.group_size, pos][:, None] * d[None]


@dataclass
class Active:
    """Active latents of one dictionary on one prompt: (pos[j], idx[j]) has activation act[j]."""

    pos: Tensor
    idx: Tensor
    act: Tensor


@dataclass
class Setup:
    """Everything a clean run fixes for attribution on one prompt."""

    input_ids: Tensor  # [T]
    logits: Tensor  # [T, vocab], the subject model's logits
    freeze: Freeze
    embed: Tensor  # [T, d_model]: the residual entering block 0 (token + position embeddings)
    inputs: list[Tensor]  # per dictionary [T, d_in]
    active: list[Active]
    errors: list[Tensor]  # per dictionary [T, d_out]
    recon: list[Tensor]  # per dictionary [T, d_out] (clean reconstruction, bias and skip included)
    # mixtures of experts: the clean input [T, d] of each MoE block a transcoder replaces, by layer
    moe_inputs: dict[int, Tensor] = field(default_factory=dict)
    # per Lorsa (spliced index) its QK heads' patterns on the prompt [G, T, T], held like the model's
    patterns: dict[int, Tensor] = field(default_factory=dict)

    @property
    def n_pos(self) -> int:
        return int(self.input_ids.shape[-1])


class _Capture(NoHooks):
    def __init__(self, names: set[str]) -> None:
        self.names, self.acts = names, {}

    def wants(self, name: str) -> bool:
        return name in self.names

    def site(self, name: str, x: Tensor) -> Tensor:
        if name in self.names:
            self.acts[name] = x
        return x


class ReplacementModel:
    """A subject model (SubjectModel or HF model) with transcoders and/or SAEs spliced in."""

    def __init__(
        self,
        model: SubjectModel | PreTrainedModel,
        dictionaries: Sequence[Dictionary],
        names: Sequence[str] | None = None,
        zero_bos: bool = False,
    ) -> None:
        hf = getattr(model, "hf", model)
        self.subject = model
        # circuit-tracer's convention: no latent is active at position 0 (the BOS token), whose
        # dictionaries' output then goes to the error terms. Off by default: BOS features are kept.
        self.zero_bos = zero_bos
        self.tokenizer = getattr(model, "tokenizer", None)
        self._display: TokenDisplay | None = None
        self.lm = FunctionalLM(hf)
        p = next(hf.parameters())
        self.dtype, self.device = p.dtype, p.device
        if not dictionaries:
            raise MonosemanticError(
                "no dictionaries to splice in; train transcoders first or set circuit.dictionaries"
            )
        names = list(names) if names is not None else [f"dict{i}" for i in range(len(dictionaries))]
        self.dictionaries, self.names = list(dictionaries), names
        items = []
        for k, (n, d) in enumerate(zip(names, dictionaries, strict=False)):
            views = layer_views(d)
            if views is None:
                items.append((n, d, k))
            else:
                items += [(f"{n}/L{v.cfg.hook_name.split('.')[1]}", v, k) for v in views]
        spliced = [self._splice(n, d, k) for n, d, k in items]
        spliced.sort(key=lambda s: (s.layer, _ORDER[_parse(s.hook_name_out)[1]]))
        outs = [s.hook_name_out for s in spliced]
        if len(set(outs)) != len(outs):
            dup = next(o for o in outs if outs.count(o) > 1)
            raise MonosemanticError(f"two dictionaries write {dup}; splice at most one per site")
        for s in spliced:
            same = [t for t in spliced if t.layer == s.layer]
            s.slot = same.index(s)
            s.offset = sum(int(t.dic.cfg.d_sae) for t in same[: s.slot])
        clash = [s.name for s in spliced if s.transcoder and s.hook_name in outs]
        if clash:
            raise MonosemanticError(
                f"{clash[0]} reads a site another dictionary replaces; splice the SAE at a different site"
            )
        for i, s in enumerate(spliced):
            if isinstance(s.dic, CLTLayer):
                s.sources = [
                    (j, s.dic.decoder_from(t.dic.i))
                    for j, t in enumerate(spliced)
                    if same_clt(t.dic, s.dic) and t.dic.i <= s.dic.i
                ]
            else:
                s.sources = [(i, s.dic.W_dec)]
        self.spliced = spliced
        self.by_out = {s.hook_name_out: i for i, s in enumerate(spliced)}
        self.transcoder_at = {s.layer: i for i, s in enumerate(spliced) if s.transcoder}

    def _splice(self, name: str, dic: Dictionary | CLTLayer, source: int = 0) -> Spliced:
        dic.to(device=self.device, dtype=self.dtype).eval().requires_grad_(False)
        cfg = dic.cfg
        layer, kind = _parse(cfg.hook_name)
        if kind == "hook_resid_mid" and self.lm.parallel:
            raise MonosemanticError(
                f"{name}: {cfg.hook_name} does not exist in this parallel-residual model (attention and MLP "
                "both read resid_pre); train on blocks.L.hook_resid_pre, hook_mlp_in or hook_resid_post"
            )
        if kind == "ln2.hook_normalized" and self.lm.family.ln2 is None:
            raise MonosemanticError(
                f"{name}: {cfg.hook_name} does not exist in {self.lm.family.name} (no norm before its MLP); "
                "read blocks.L.hook_mlp_in"
            )
        if kind == "ln1.hook_normalized" and self.lm.family.ln1 is None:
            raise MonosemanticError(
                f"{name}: {cfg.hook_name} does not exist in {self.lm.family.name} (no norm before attention); "
                "read blocks.L.hook_resid_pre"
            )
        if getattr(dic, "sequence_level", False):
            return self._splice_attention(name, dic, layer, kind, source)
        if not cfg.is_transcoder:
            if kind in _READ_ONLY:
                raise MonosemanticError(
                    f"{name}: an SAE at {cfg.hook_name} cannot be spliced (the MLP reads the norm's "
                    "weighted output); splice it at blocks.L.mlp.hook_in, or train a transcoder from it"
                )
            if layer >= self.lm.n_layers:
                raise MonosemanticError(
                    f"{name}: site {cfg.hook_name} is past the model's {self.lm.n_layers} layers"
                )
            return Spliced(name, dic, cfg.hook_name, cfg.hook_name, layer, False, source=source)
        out_layer, out_kind = _parse(cfg.hook_name_out)
        if out_kind != "hook_mlp_out" or out_layer != layer or kind not in _TRANSCODER_IN:
            raise MonosemanticError(
                f"{name}: a transcoder must map blocks.L.mlp.hook_in (or ln2.hook_normalized, hook_mlp_in, "
                f"hook_resid_mid) to blocks.L.hook_mlp_out of the same layer, not {cfg.hook_name} -> "
                f"{cfg.hook_name_out}"
            )
        return Spliced(name, dic, cfg.hook_name, cfg.hook_name_out, layer, True, source=source)

    def _splice_attention(self, name: str, dic: Dictionary, layer: int, kind: str, source: int) -> Spliced:
        """A Lorsa: it replaces the layer's attention output (the model's own attention is cut off)."""
        cfg = dic.cfg
        out_layer, out_kind = _parse(cfg.hook_name_out)
        if kind not in _ATTENTION_IN or out_kind != "hook_attn_out" or out_layer != layer:
            raise MonosemanticError(
                f"{name}: a Lorsa must map blocks.L.ln1.hook_normalized (or hook_resid_pre) to "
                f"blocks.L.hook_attn_out of the same layer, not {cfg.hook_name} -> {cfg.hook_name_out}"
            )
        return Spliced(name, dic, cfg.hook_name, cfg.hook_name_out, layer, False, True, source=source)

    def mlp_only(self) -> ReplacementModel | None:
        """The same model with its Lorsas left out (attention the model's own, patterns frozen), to
        compare a complete replacement model's graph with; None when nothing replaces attention."""
        keep = [k for k, d in enumerate(self.dictionaries) if not getattr(d, "sequence_level", False)]
        if len(keep) == len(self.dictionaries) or not keep:
            return None
        return ReplacementModel(
            self.subject, [self.dictionaries[k] for k in keep], [self.names[k] for k in keep], self.zero_bos
        )

    # ---- tokens ----------------------------------------------------------------------------------
    def tokenize(self, prompt: str | Tensor | Sequence[int]) -> Tensor:
        if isinstance(prompt, str):
            if self.tokenizer is None:
                raise MonosemanticError("this model has no tokenizer; pass token ids instead of text")
            # verbose=False: the length is checked below, in one line, not warned about by transformers
            ids = self.tokenizer(prompt, return_tensors="pt", verbose=False).input_ids[0]
            bos = self.tokenizer.bos_token_id
            if bos is not None and (len(ids) == 0 or int(ids[0]) != bos):
                ids = torch.cat([torch.tensor([bos]), ids])
        else:
            ids = torch.as_tensor(prompt, dtype=torch.long).flatten()
        if ids.numel() == 0:
            raise MonosemanticError("the prompt is empty; give at least one token")
        cfg = self.lm.config
        ctx = getattr(cfg, "n_positions", None) or getattr(cfg, "max_position_embeddings", None)
        if ctx is not None and ids.numel() > ctx:
            raise MonosemanticError(
                f"the prompt has {ids.numel()} tokens but the model's context is {ctx}; shorten it"
            )
        return ids.to(self.device)

    def token_str(self, token_id: int) -> str:
        """Display string with the tokenizer family's spacing (see `monosemantic.lm.token_display`)."""
        if self.tokenizer is None:
            return str(int(token_id))
        if self._display is None:
            self._display = TokenDisplay(self.tokenizer)
        return self._display(token_id)

    # ---- the clean run ---------------------------------------------------------------------------
    @torch.no_grad()
    def setup(self, input_ids: Tensor) -> Setup:
        """Record the clean pass: patterns, norm scales, each dictionary's latents and error."""
        ids = input_ids.flatten().to(self.device)
        sites = {s.hook_name for s in self.spliced} | {s.hook_name_out for s in self.spliced}
        sites.add("blocks.0.hook_resid_pre")
        moe = [L for L in self.transcoder_at if self.lm.family.mlp == "moe"]
        sites |= {f"blocks.{L}.mlp.hook_in" for L in moe}
        cap, freeze = _Capture(sites), Freeze()
        logits = self.lm(ids[None], hooks=cap, mode="record", freeze=freeze)[0]
        inputs = [cap.acts[s.hook_name][0] for s in self.spliced]
        fs = [self.encode(i, x) for i, x in enumerate(inputs)]
        active, errors, recons = [], [], []
        for i, (s, f) in enumerate(zip(self.spliced, fs, strict=True)):
            recon = self.decode(i, fs, inputs[i])
            pos, idx = (f != 0).nonzero(as_tuple=True)
            active.append(Active(pos, idx, f[pos, idx]))
            errors.append(cap.acts[s.hook_name_out][0] - recon)
            recons.append(recon)
        embed = cap.acts["blocks.0.hook_resid_pre"][0]
        moe_inputs = {L: cap.acts[f"blocks.{L}.mlp.hook_in"][0] for L in moe}
        patterns = {i: s.dic.patterns(inputs[i]) for i, s in enumerate(self.spliced) if s.attention}
        return Setup(ids, logits, freeze, embed, inputs, active, errors, recons, moe_inputs, patterns)

    def feature_spec(self, setup: Setup, i: int, pos: int, idx: int) -> tuple:
        """The row spec (`attribution.seed_rows`) of latent `idx` of dictionary i at `pos`: its
        pre-activation read from the dictionary's input, linear in the frozen model."""
        where, vec = self.spliced[i].readout(idx, pos, setup.patterns.get(i))
        return ("feature", i, where, vec)

    def encode(self, i: int, x_in: Tensor) -> Tensor:
        """Latents of dictionary i on inputs [..., T, d_in], with position 0 zeroed if `zero_bos`."""
        f = self.spliced[i].dic.encode(x_in)
        if self.zero_bos:
            f = f.clone()
            f[..., 0, :] = 0
        return f

    def plain_logits(self, input_ids: Tensor) -> Tensor:
        with torch.no_grad():
            return self.lm(input_ids.reshape(-1, input_ids.shape[-1]).to(self.device))

    # ---- reconstruction ---------------------------------------------------------------------------
    def decode(self, i: int, fs: Sequence[Tensor], x_in: Tensor) -> Tensor:
        """Dictionary i's output from dense latents fs[j] of every spliced dictionary (a CLT layer
        sums its sources; others decode their own fs[i])."""
        s = self.spliced[i]
        if not isinstance(s.dic, CLTLayer):
            return s.dic.decode(fs[i], x_in)
        out = s.dic.b_dec
        for j, W in s.sources:
            out = out + fs[j].to(W.dtype) @ W
        return out

    def reconstruct(
        self, i: int, active: Sequence[Active], vals: Sequence[Tensor], x_in: Tensor, n_pos: int
    ) -> Tensor:
        """b_dec + sum over sources j of vals[j][..., k] W_j[idx_k] at pos_k (+ skip): [T, d], or
        [B, T, d] for [B, n] vals. `active[j]`, `vals[j]` are indexed by spliced dictionary."""
        dic = self.spliced[i].dic
        out = None
        for j, W in self.spliced[i].sources:
            a, v = active[j], vals[j]
            rows = v[..., None] * W[a.idx]
            lead = v.shape[:-1]
            part = rows.new_zeros(*lead, n_pos, W.shape[1]).index_add(len(lead), a.pos, rows)
            out = part if out is None else out + part
        out = out + dic.b_dec
        skip = _skip(dic)
        if skip is not None:
            out = out + x_in @ skip
        return out

    # ---- passes ----------------------------------------------------------------------------------
    def frozen(
        self,
        setup: Setup,
        batch: int = 1,
        values: list[Tensor] | None = None,
        errors: list[Tensor] | None = None,
        inject: dict[str, Tensor] | None = None,
        embed: Tensor | None = None,
        observe: Callable[[str, Tensor], Tensor] | None = None,
    ) -> tuple[Tensor, list[Tensor]]:
        """The linearised replacement model: (final normalised residual [B, T, d], inputs per dictionary).

        `values` override the active latents' activations ([n] or [B, n] per dictionary), `errors` the
        error terms, `embed` the embedding; `inject` adds tensors at "embed" and each dictionary's output
        site (gradients there are what attribution reads). `observe(name, x)` sees every site's value
        after the splice and returns what flows on (a residual-direction target reads a site with it,
        head loadings cut attention at `attn.hook_z`).
        """
        hooks = _FrozenHooks(self, setup, values, errors, inject or {}, embed, observe)
        ids = setup.input_ids[None].expand(batch, -1)
        resid = self.lm(ids, hooks=hooks, mode="frozen", freeze=setup.freeze, unembed=False)
        return resid, [hooks.inputs[s.hook_name] for s in self.spliced]

    def free(
        self,
        input_ids: Tensor,
        edit: Callable[[int, Tensor], Tensor] | None = None,
        edit_error: Callable[[int, Tensor], Tensor] | None = None,
        freeze_attention: Freeze | None = None,
        observe: Callable[[str, Tensor], Tensor] | None = None,
    ) -> Tensor:
        """The replacement model run freely: logits [B, T, vocab].

        At each dictionary, f = encode(x_in) is passed through `edit(i, f)` (dense [B, T, d_sae]) and
        the error (true output minus reconstruction, computed live) through `edit_error(i, err)`;
        the output is decode(f', x_in) + err'. With no edits this is the subject model. `observe(name,
        x)` sees every site's value after the edits (as in `frozen`).
        """
        ids = input_ids.reshape(-1, input_ids.shape[-1]).to(self.device)
        hooks = _FreeHooks(self, edit, edit_error, observe)
        if freeze_attention is not None:
            fz = Freeze(
                patterns=freeze_attention.patterns, routes=freeze_attention.routes, patterns_only=True
            )
            return self.lm(ids, hooks=hooks, mode="frozen", freeze=fz)
        return self.lm(ids, hooks=hooks)


def _skip(dic: Dictionary | CLTLayer) -> Tensor | None:
    """A skip transcoder's W_skip [d_in, d_out]; None for kinds without one (Lorsa has no such field)."""
    return getattr(dic, "W_skip", None)


class _FrozenHooks(NoHooks):
    def __init__(
        self, rm: ReplacementModel, setup: Setup, values, errors, inject, embed, observe=None
    ) -> None:
        self.rm, self.setup, self.values, self.errors, self.inject, self.embed = (
            rm,
            setup,
            values,
            errors,
            inject,
            embed,
        )
        self.observe = observe
        self.ins = {s.hook_name: i for i, s in enumerate(rm.spliced)}
        self.inputs: dict[str, Tensor] = {}

    def wants(self, name: str) -> bool:
        return name in self.ins

    def _out(self, i: int) -> Tensor:
        s, st = self.rm.spliced[i], self.setup
        x_in = self.inputs[s.hook_name]
        if self.values is None and _skip(s.dic) is None:
            out = st.recon[i]  # the clean reconstruction: it carries no gradient, so reuse it
        else:
            vals = [a.act for a in st.active] if self.values is None else self.values
            out = self.rm.reconstruct(i, st.active, vals, x_in, st.n_pos)
        out = out + (st.errors[i] if self.errors is None else self.errors[i])
        if s.hook_name_out in self.inject:
            out = out + self.inject[s.hook_name_out]
        return out

    def site(self, name: str, x: Tensor) -> Tensor:
        if name == "blocks.0.hook_resid_pre":
            if self.embed is not None:
                x = self.embed.expand_as(x)
            if "embed" in self.inject:
                x = x + self.inject["embed"]
        if name in self.ins:
            self.inputs[name] = x
        i = self.rm.by_out.get(name)
        if i is not None and not self.rm.spliced[i].transcoder:
            x = self._out(i).expand_as(x) if x.ndim == 3 else self._out(i)
        return x if self.observe is None else self.observe(name, x)

    def mlp(self, layer: int, x: Tensor) -> Tensor | None:
        i = self.rm.transcoder_at.get(layer)
        if i is None:
            return None
        out = self._out(i)
        return out.expand(x.shape[0], *out.shape[-2:]) if out.ndim == 2 else out


class _FreeHooks(NoHooks):
    def __init__(self, rm: ReplacementModel, edit, edit_error, observe=None) -> None:
        self.rm, self.edit, self.edit_error, self.observe = rm, edit, edit_error, observe
        self.ins = {s.hook_name for s in rm.spliced}
        self.inputs: dict[str, Tensor] = {}
        n = len(rm.spliced)
        self.clean: list[Tensor | None] = [None] * n  # latents as encoded
        self.edited: list[Tensor | None] = [None] * n  # latents after `edit`

    def wants(self, name: str) -> bool:
        return name in self.ins

    def site(self, name: str, x: Tensor) -> Tensor:
        x = self._site(name, x)
        return x if self.observe is None else self.observe(name, x)

    def _site(self, name: str, x: Tensor) -> Tensor:
        if name in self.ins:
            self.inputs[name] = x
        i = self.rm.by_out.get(name)
        if i is None:
            return x
        s = self.rm.spliced[i]
        x_in = self.inputs[s.hook_name]
        self.clean[i] = f = self.rm.encode(i, x_in)
        self.edited[i] = self.edit(i, f) if self.edit is not None else f
        err = x - self.rm.decode(i, self.clean, x_in)
        if self.edit_error is not None:
            err = self.edit_error(i, err)
        if self.edit is None and self.edit_error is None:
            return x
        return self.rm.decode(i, self.edited, x_in) + err
