"""QK attribution: why a head attends from a query position to a key position.

With the norm scales frozen, a head's pre-softmax score s(q, k) = scale * Q[q] . K[k] is bilinear in
the residual streams at q and k (rotary embeddings and frozen q/k norms are linear maps at a fixed
position). Each residual stream is the sum of what was written into it at its own position:

- the token embedding, and the learned position embedding where the family has one;
- every active feature of a dictionary that writes before this layer's attention (activation x
  decoder row), and each such dictionary's error term;
- every earlier attention head's output at this position (its mixed values z, pushed through its
  output projection);
- one bias: everything constant (decoder and projection biases, LayerNorm and q/k biases).

Each component reaches the layer's residual through the *attention-cut* model (later MLPs not
replaced by transcoders are linear with their gates frozen; attention contributes only through the
head components), so Q[q] = sum_i Q_i and K[k] = sum_j K_j exactly and the score splits into terms
scale * Q_i . K_j that sum to it. Removing a key-side component (its attention outputs held) changes
the score by exactly its terms.

One plain forward pass computes every component's Q and K at every requested position and layer: the
cut model never mixes positions, so components at different positions share a batch row, and the
pass has one row per component of the busiest position plus a baseline row with every source off
(the bias). The cut model is affine, so a component's Q and K are its row's minus the baseline's.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

import torch
from torch import Tensor

from monosemantic.utils.errors import MonosemanticError

from .graph_json import feature_node_id
from .heads import injection_points, sources_off, z_site
from .replacement import ReplacementModel, Setup


@dataclass(frozen=True)
class Component:
    """One thing written into the residual stream at a position: kind is "feature", "error",
    "embedding", "position", "head" or "bias"; `node` is its graph.json node id where it has one."""

    kind: str
    label: str
    node: str | None = None
    layer: int | None = None  # where it writes (features, errors, heads)
    head: int | None = None
    dictionary: int | None = None  # spliced dictionary index (features, errors)
    entry: int | None = None  # index among that dictionary's active latents (features)

    def json(self) -> dict:
        return {k: v for k, v in vars(self).items() if v is not None and k != "entry"}

    def reaches(self, layer: int, site_out: str | None) -> bool:
        """Whether it is written before `layer`'s attention reads the residual."""
        if self.kind == "head":
            return self.layer < layer
        return site_out is None or _writes_before(site_out, layer)


@dataclass
class QKTerms:
    """The score of (layer, head) from `query` to `key` split into query x key component terms."""

    layer: int
    head: int
    query: int
    key: int
    score: float  # scale * Q[q] . K[k] with frozen norms, before any soft-capping
    capped: float | None  # the soft-capped score (Gemma 2), else None
    pattern: float  # the clean attention weight of this pair
    query_components: list[Component]
    key_components: list[Component]
    terms: Tensor  # [n_query_components, n_key_components]; terms.sum() == score

    def to_json(self, top: int = 20) -> dict:
        """The largest |term| pairs and each side's component totals (what the viewer lists)."""
        flat = self.terms.flatten()
        order = flat.abs().argsort(descending=True)[:top].tolist()
        nk = self.terms.shape[1]

        def comp(c: Component) -> dict:
            return c.json()

        def side(comps: list[Component], totals: Tensor) -> list[dict]:
            idx = totals.abs().argsort(descending=True)[:top].tolist()
            return [{**comp(comps[i]), "value": float(totals[i])} for i in idx if totals[i] != 0]

        return {
            "layer": self.layer,
            "head": self.head,
            "query": self.query,
            "key": self.key,
            "score": self.score,
            "capped": self.capped,
            "pattern": self.pattern,
            "sum_of_terms": float(self.terms.sum()),
            "pairs": [
                {
                    "query": comp(self.query_components[i // nk]),
                    "key": comp(self.key_components[i % nk]),
                    "term": float(flat[i]),
                }
                for i in order
                if flat[i] != 0
            ],
            "query_totals": side(self.query_components, self.terms.sum(1)),
            "key_totals": side(self.key_components, self.terms.sum(0)),
        }


@dataclass
class _Rows:
    """Which component each (row, position) of the forward pass carries."""

    comps: dict[int, list[Component]] = field(default_factory=dict)  # position -> components by row

    @property
    def n(self) -> int:
        return max((len(c) for c in self.comps.values()), default=0)


def _components(rm: ReplacementModel, setup: Setup, pos: int, below: int) -> list[Component]:
    """Everything written into the residual at `pos` before layer `below`'s attention (in the row
    order `_injections` injects them)."""
    lm, tid = rm.lm, int(setup.input_ids[pos])
    out = [Component("embedding", f'token "{rm.token_str(tid)}"', f"E_{tid}_{pos}")]
    if lm.family.pos_embed is not None:
        out.append(Component("position", f"position {pos}"))
    for i, s in enumerate(rm.spliced):
        if not _writes_before(s.hook_name_out, below):
            continue
        a = setup.active[i]
        for k in (a.pos == pos).nonzero().flatten().tolist():
            idx = int(a.idx[k])
            node = feature_node_id(s.layer, s.offset + idx, pos)
            out.append(Component("feature", f"{s.name} #{idx}", node, s.layer, dictionary=i, entry=k))
        err = f"{s.layer}_{-1 - s.slot}_{pos}"
        out.append(Component("error", f"error of {s.name}", err, s.layer, dictionary=i))
    for L in range(below):
        out += [Component("head", f"L{L}.H{h}", None, L, h) for h in range(lm.n_heads)]
    return out


def _writes_before(site: str, layer: int) -> bool:
    """Whether a dictionary writing `site` (blocks.L.hook_*) writes before layer `layer`'s attention."""
    L, kind = int(site.split(".")[1]), site.rsplit("hook_", 1)[1]
    return L < layer or (L == layer and kind == "resid_pre")


def _injections(rm: ReplacementModel, setup: Setup, rows: _Rows, z_clean: list[Tensor]) -> tuple[dict, list]:
    """What each row injects at each injection point and each hook_z: row r + 1 at position p carries
    comps[p][r]; row 0 nothing."""
    lm, T, R = rm.lm, setup.n_pos, rows.n + 1  # row 0: the baseline, nothing injected
    z = torch.zeros(lm.n_layers, R, T, lm.n_heads, lm.head_dim, dtype=rm.dtype, device=rm.device)
    inj = injection_points(rm, R, T)
    tok = lm.base.get_submodule(lm.family.embed)(setup.input_ids)  # [T, d], as hook_embed reads it
    if lm.family.pos_embed is not None:
        pos_emb = lm.base.get_submodule(lm.family.pos_embed)(torch.arange(T, device=rm.device))
    for p, comps in rows.comps.items():
        for r, c in enumerate(comps, start=1):
            if c.kind == "embedding":
                inj["embed"][r, p] = tok[p]
            elif c.kind == "position":
                inj["embed"][r, p] = pos_emb[p]
            elif c.kind == "feature":
                a = setup.active[c.dictionary]
                for t in rm.spliced:  # a CLT latent writes to every later layer
                    for j, W in t.sources:
                        if j == c.dictionary:
                            inj[t.hook_name_out][r, p] += a.act[c.entry] * W[a.idx[c.entry]]
            elif c.kind == "error":
                inj[rm.spliced[c.dictionary].hook_name_out][r, p] = setup.errors[c.dictionary][p]
            else:  # an earlier head's output: its clean mixed values at this position
                z[c.layer, r, p, c.head] = z_clean[c.layer][0, p, c.head]
    return inj, list(z)


@torch.no_grad()
def _clean_z(rm: ReplacementModel, setup: Setup) -> list[Tensor]:
    seen: dict[str, Tensor] = {}

    def observe(name: str, x: Tensor) -> Tensor:
        seen[name] = x
        return x

    rm.frozen(setup, observe=observe)
    return [seen[z_site(L)] for L in range(rm.lm.n_layers)]


@torch.no_grad()
def component_qk(
    rm: ReplacementModel, setup: Setup, layers: Sequence[int], positions: Sequence[int]
) -> tuple[_Rows, dict[int, tuple[Tensor, Tensor, Tensor, Tensor]]]:
    """Each component's query and key vectors at `positions` for every layer in `layers`:
    layer -> (Q [R, H, P, hd], K [R, H, P, hd], Q_bias [H, P, hd], K_bias [H, P, hd]).

    One plain forward pass of the attention-cut model with every source off: row 0 carries nothing
    (its queries and keys are the bias), row r + 1 adds component r at each position; the cut model
    is affine, so a component's Q and K are its row's minus row 0's."""
    lm, fz = rm.lm, setup.freeze
    below = max(layers) + 1
    rows = _Rows({p: _components(rm, setup, p, below) for p in positions})
    inj, z_t = _injections(rm, setup, rows, _clean_z(rm, setup))
    R, P = rows.n, torch.tensor(list(positions), device=rm.device)
    cut = {z_site(L): t for L, t in enumerate(z_t)}
    pre = {f"blocks.{L}.hook_resid_pre": L for L in layers}
    resid: dict[int, Tensor] = {}

    def observe(name: str, x: Tensor) -> Tensor:
        if name in cut:  # attention cut: only the head components flow through it
            return cut[name]
        if name in pre:
            resid[pre[name]] = x
        return x

    rm.frozen(setup, R + 1, inject=inj, observe=observe, **sources_off(setup))
    out = {}
    for L in layers:
        q, k, _, _ = lm.queries_keys(L, lm.attn_in(L, resid[L], "frozen", fz), "frozen", fz)
        q, k = q[:, :, P], k[:, :, P]
        out[L] = (q[1:] - q[:1], k[1:] - k[:1], q[0], k[0])
    return rows, out


def _reaching(rm: ReplacementModel, comps: list[Component], layer: int) -> list[int]:
    """Rows of the components written before `layer`'s attention."""
    site = [None if c.dictionary is None else rm.spliced[c.dictionary].hook_name_out for c in comps]
    return [i for i, c in enumerate(comps) if c.reaches(layer, site[i])]


def check_pair(rm: ReplacementModel, setup: Setup, layer: int, head: int, query: int, key: int) -> None:
    lm, T = rm.lm, setup.n_pos
    if not 0 <= layer < lm.n_layers:
        raise MonosemanticError(f"layer {layer} is out of range; the model has layers 0..{lm.n_layers - 1}")
    if not 0 <= head < lm.n_heads:
        raise MonosemanticError(f"head {head} is out of range; layer {layer} has heads 0..{lm.n_heads - 1}")
    if not (0 <= query < T and 0 <= key < T):
        raise MonosemanticError(f"positions must be in 0..{T - 1}, not query {query}, key {key}")
    if not bool(lm.attention_mask(layer, T, torch.device("cpu"))[query, key]):
        raise MonosemanticError(
            f"layer {layer} cannot attend from position {query} to {key} (causal mask or sliding window); "
            "pick a key at or before the query"
        )


def qk_terms(rm: ReplacementModel, setup: Setup, pairs: Sequence[tuple[int, int, int, int]]) -> list[QKTerms]:
    """QK attribution of each (layer, head, query, key) on the prompt of `setup` (one pass for all)."""
    if not pairs:
        return []
    for pair in pairs:
        check_pair(rm, setup, *pair)
    layers = sorted({p[0] for p in pairs})
    positions = sorted({p[2] for p in pairs} | {p[3] for p in pairs})
    col = {p: i for i, p in enumerate(positions)}
    rows, qk = component_qk(rm, setup, layers, positions)
    lm = rm.lm
    out = []
    for L, h, q, k in pairs:
        Q, K, Qb, Kb = qk[L]
        iq, ik = (_reaching(rm, rows.comps[p], L) for p in (q, k))
        cq = [rows.comps[q][i] for i in iq] + [Component("bias", "bias")]
        ck = [rows.comps[k][i] for i in ik] + [Component("bias", "bias")]
        Qv = torch.cat([Q[iq, h, col[q]], Qb[h, col[q]][None]])  # [n_q, hd]
        Kv = torch.cat([K[ik, h, col[k]], Kb[h, col[k]][None]])
        terms = (Qv @ Kv.T) * lm.score_scale(L)
        raw = float(terms.sum())
        cap = lm.attn_softcap
        capped = float(cap * torch.tanh(torch.tensor(raw / cap))) if cap is not None else None
        pattern = float(setup.freeze.patterns[L][0, h, q, k])
        out.append(QKTerms(L, h, q, k, raw, capped, pattern, cq, ck, terms.double().cpu()))
    return out
