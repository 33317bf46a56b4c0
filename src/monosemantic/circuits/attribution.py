"""Attribution graphs: exact direct effects between features on the linearised replacement model.

Nodes are active features (dictionary, position, latent), one error node per (dictionary, position),
one embedding node per position, and the targets. The edge s -> t is the change of t's linear value
(a feature's pre-activation, or a demeaned logit) per unit of s in the frozen model, computed for a
batch of targets at once: one forward pass with `batch_size` copies of the prompt, then one backward
pass per batch, each row seeded with its target's direction; a source's edge is the gradient at its
injection point dotted with its vector (activation x decoder row, error, or embedding).

Rows are computed for the targets first, then for features in order of their influence on the
targets so far (the circuit-tracer schedule), at most `max_feature_nodes` of them: memory is rows x
columns, never all features x all features.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import torch
from torch import Tensor

from monosemantic.config.ranges import Count, Probability, check_argument
from monosemantic.training.attribution_memory import batch_row_bytes
from monosemantic.utils.memory import check_memory, fitting
from monosemantic.utils.progress import console, progress_bar

from .clt_layers import CLTLayer
from .expert_nodes import ExpertSplit, expert_columns, expert_splits, expert_table
from .moe import routes_meta
from .position_blocks import PositionBlocks
from .pruning import influence_from_rows
from .replacement import ReplacementModel, Setup
from .targets import Direction, Target, select_targets

if TYPE_CHECKING:
    from transformers import PreTrainedModel

    from monosemantic.dictionaries.base import Dictionary
    from monosemantic.lm.model import SubjectModel


@dataclass
class Graph:
    """An unpruned attribution graph. Node order: [features, errors, embeddings, logit targets].

    `adjacency[t, s]` is the direct effect of node s on node t; rows of unselected features are
    absent (their columns are dropped), as in circuit-tracer.
    """

    prompt: str
    input_ids: Tensor
    tokens: list[str]
    features: Tensor  # [n_feat, 4] long: (dictionary, layer, pos, latent)
    activations: Tensor  # [n_feat]
    errors: Tensor  # [n_err, 3] long: (dictionary, layer, pos)
    adjacency: Tensor  # [N, N]
    target_weights: Tensor  # [N]: where the graph's influence comes from
    targets: list[Target]
    dictionaries: list[dict]  # name, hook_name, hook_name_out, layer, slot, offset, transcoder
    n_layers: int
    total_active_features: int
    logits: Tensor  # [vocab], the model's logits at the last position
    meta: dict = field(default_factory=dict)
    # circuit.expert_nodes: each MoE-layer error node split by selected expert (see expert_nodes.py);
    # `adjacency` keeps the merged error nodes, these hold the parts: nodes [n_x, 4] long (dictionary,
    # layer, pos, expert), their routing weights [n_x], and their direct effects [N, n_x]
    experts: Tensor | None = None
    expert_weights: Tensor | None = None
    expert_adjacency: Tensor | None = None

    @property
    def n_pos(self) -> int:
        return len(self.tokens)

    @property
    def n_features(self) -> int:
        return int(self.features.shape[0])

    @property
    def n_errors(self) -> int:
        return int(self.errors.shape[0])

    @property
    def n_logits(self) -> int:
        return sum(t.kind != "feature" for t in self.targets)

    def slices(self) -> dict[str, slice]:
        f, e, p = self.n_features, self.n_errors, self.n_pos
        return {
            "features": slice(0, f),
            "errors": slice(f, f + e),
            "embeddings": slice(f + e, f + e + p),
            "logits": slice(f + e + p, f + e + p + self.n_logits),
        }

    def target_nodes(self) -> Tensor:
        return (self.target_weights != 0).nonzero().flatten()


class _Rows:
    """One batched frozen forward pass, then one backward pass per batch of target rows.

    `read_sites`: sites whose values row specs ("site", name, pos, vector) read (direction targets);
    `splits`: mixture-of-experts blocks whose experts are graph nodes (`expert_nodes`).
    """

    def __init__(
        self,
        rm: ReplacementModel,
        setup: Setup,
        batch: int,
        read_sites: Sequence[str] = (),
        splits: Sequence[ExpertSplit] = (),
    ) -> None:
        self.rm, self.setup, self.batch, self.splits = rm, setup, batch, list(splits)
        self.read: dict[str, Tensor] = {}

        def observe(name: str, x: Tensor) -> Tensor:
            if name in read_sites:
                self.read[name] = x
            return x

        T = setup.n_pos
        self.inj = {"embed": torch.zeros(batch, T, rm.lm.d_model, dtype=rm.dtype, device=rm.device)}
        for s in rm.spliced:
            self.inj[s.hook_name_out] = torch.zeros(
                batch, T, int(s.dic.cfg.d_out), dtype=rm.dtype, device=rm.device
            )
        for t in self.inj.values():
            t.requires_grad_(True)
        with torch.enable_grad():
            self.resid, self.inputs = rm.frozen(setup, batch=batch, inject=self.inj, observe=observe)
        # writes[j]: (output dictionary i, activation x decoder row [n_j, d_out]) for each output the
        # latents of dictionary j write to (one for single-site dictionaries, every later layer for a CLT)
        self.blocks = [PositionBlocks(a.pos, T) for a in setup.active]
        self.writes: list[list[tuple[int, Tensor]]] = [[] for _ in rm.spliced]
        for i, s in enumerate(rm.spliced):
            for j, W in s.sources:
                a = setup.active[j]
                self.writes[j].append((i, self.blocks[j].layout(a.act[:, None] * W[a.idx])))

    def grads(self, specs: Sequence[tuple]) -> dict[str, Tensor]:
        """specs (see `seed_rows`) -> the gradient of each row's target at every injection point
        ("embed" and each output site), [batch, T, d]."""
        outs, grads = seed_rows(specs, self.resid, self.inputs, self.read)
        keys = list(self.inj)
        with torch.enable_grad():
            gs = torch.autograd.grad(
                outs, [self.inj[k] for k in keys], grads, retain_graph=True, allow_unused=True
            )
        return {
            k: (g if g is not None else torch.zeros_like(self.inj[k])) for k, g in zip(keys, gs, strict=False)
        }

    def compute(self, specs: Sequence[tuple]) -> Tensor:
        """Rows [n, n_cols] of direct effects: gradients dotted with each source's vector (then the
        expert nodes' columns, when the errors are split by expert)."""
        rm, st = self.rm, self.setup
        n = len(specs)
        G = self.grads(specs)
        parts = []
        for j, writes in enumerate(self.writes):  # feature columns: gradient at each output . vector
            grads = [G[rm.spliced[i].hook_name_out][:n] for i, _ in writes]
            parts.append(self.blocks[j].contract(grads, [v for _, v in writes]))
        for i, s in enumerate(rm.spliced):  # error columns
            parts.append(torch.einsum("btd,td->bt", G[s.hook_name_out][:n], st.errors[i]))
        parts.append(torch.einsum("btd,td->bt", G["embed"][:n], st.embed))
        if self.splits:
            parts.append(expert_columns(G, rm, self.splits, n))
        return torch.cat(parts, 1).detach()


def row_bytes(rm: ReplacementModel, n_pos: int, n_cols: int = 0) -> int:
    """Bytes one row of a backward batch holds on the model's device (the estimate `plan` prints,
    `training.attribution_memory`), plus the row of direct effects it yields."""
    itemsize = torch.empty(0, dtype=rm.dtype).element_size()
    lm = rm.lm
    return batch_row_bytes(n_pos, lm.d_model, lm.n_layers, len(rm.spliced), itemsize) + itemsize * n_cols


def edge_dtype(rm: ReplacementModel) -> torch.dtype:
    """The edge matrix's dtype: float64 for a float64 model (exactness checks), else float32."""
    return torch.float64 if rm.dtype == torch.float64 else torch.float32


def _check_limits(max_logit_prob: float, *counts: int) -> float:
    """The public arguments checked like config values (`attribute`'s keyword names, in order)."""
    names = ("max_n_logits", "max_feature_nodes", "batch_size", "update_interval")
    for name, value in zip(names, counts, strict=True):
        check_argument(name, value, Count)
    return check_argument("max_logit_prob", max_logit_prob, Probability)


def _prompt_ids(rm: ReplacementModel, prompt: str | Tensor | Sequence[int]) -> Tensor:
    """The prompt's token ids, after checking that the frozen activations of one backward row over
    the whole prompt fit (a long prompt on a large model fails here, in one line, not in the allocator)."""
    ids = rm.tokenize(prompt)
    check_memory(
        row_bytes(rm, ids.numel()),
        f"the frozen activations of a {ids.numel()}-token prompt",
        "shorten the prompt",
        rm.device,
    )
    return ids


def _memory_plan(
    rm: ReplacementModel,
    n_feat: int,
    n_pos: int,
    n_cols: int,
    n_targets: int,
    max_nodes: int,
    batch_size: int,
) -> int:
    """Refuse a graph whose matrix cannot fit; take smaller backward batches when a batch cannot."""
    rows = n_targets + min(max_nodes, n_feat) + 1
    edge_bytes = torch.empty(0, dtype=edge_dtype(rm)).element_size()
    matrix, per_row = edge_bytes * rows * n_cols, row_bytes(rm, n_pos, n_cols)
    check_memory(
        matrix,
        f"the attribution matrix ({rows:,} rows x {n_cols:,} sources: circuit.max_feature_nodes={max_nodes}, "
        f"{n_feat:,} active features on {n_pos} prompt tokens)",
        "lower circuit.max_feature_nodes or shorten the prompt",
    )
    batch_size = min(batch_size, rows)  # a batch never holds more rows than the graph has
    fit = fitting(per_row, device=rm.device)
    if fit is None or fit >= batch_size:
        return batch_size
    if fit < 1:
        check_memory(
            per_row, f"one backward pass over {n_pos} prompt tokens", "shorten the prompt", rm.device
        )
    console.print(
        f"[yellow]note:[/] circuit.batch_size={batch_size} does not fit in memory on {rm.device}: "
        f"batches of {fit} rows instead (same graph, more passes)",
        highlight=False,
    )
    return max(1, fit)


def target_spec(rm: ReplacementModel, t: Target) -> tuple:
    """A non-feature target as a row spec: ("logit", vector) on the final normalised residual at the
    last position, or ("site", name, pos, vector) for a direction read at a site."""
    if t.kind == "direction":
        return ("site", t.site, t.pos, t.vector)
    W_U = rm.lm.W_U
    if t.kind == "logit_diff":
        return ("logit", W_U[:, t.token_id] - W_U[:, t.contrast_id])
    return ("logit", W_U[:, t.token_id] - W_U.mean(-1))


def seed_rows(
    specs: Sequence[tuple], resid: Tensor, inputs: Sequence[Tensor], read: dict[str, Tensor]
) -> tuple[list[Tensor], list[Tensor]]:
    """(outputs, their gradient seeds) whose backward pass gives row b the gradient of specs[b]:
    ("logit", vector) on the final residual `resid` at the last position, ("feature", dictionary,
    pos, encoder direction) on that dictionary's input (pos a slice and the direction [T, d_in] for a
    Lorsa head, which reads every position), ("site", name, pos, vector) on `read[name]`."""
    seeds: dict[int, tuple[Tensor, Tensor]] = {}  # id(output) -> (output, seed)

    def seed(out: Tensor, b: int, p: int, vec: Tensor) -> None:
        if id(out) not in seeds:
            seeds[id(out)] = (out, torch.zeros_like(out))
        seeds[id(out)][1][b, p] = vec

    for b, spec in enumerate(specs):
        if spec[0] == "logit":
            seed(resid, b, -1, spec[1])
        elif spec[0] == "site":
            seed(read[spec[1]], b, spec[2], spec[3])
        else:
            seed(inputs[spec[1]], b, spec[2], spec[3])
    return [o for o, _ in seeds.values()], [g for _, g in seeds.values()]


def attribute(
    model: ReplacementModel | SubjectModel | PreTrainedModel,
    dictionaries: Sequence[Dictionary] | None = None,
    prompt: str | Tensor | Sequence[int] = "",
    *,
    names: Sequence[str] | None = None,
    target: str = "top_logits",
    target_token: str | None = None,
    contrast_token: str | None = None,
    target_feature: str | None = None,
    target_direction: Direction | None = None,
    max_logit_prob: float = 0.95,
    max_n_logits: int = 10,
    max_feature_nodes: int = 4096,
    batch_size: int = 64,
    update_interval: int = 4,
    show_progress: bool = True,
    expert_nodes: bool = False,
) -> Graph:
    """Attribution graph of `prompt`. `model` is a ReplacementModel, or a SubjectModel/HF model
    with `dictionaries` (loaded Dictionary objects) to splice in. `expert_nodes`: also split each
    error node of a transcoder over a mixture-of-experts block by selected expert."""
    p_max = _check_limits(max_logit_prob, max_n_logits, max_feature_nodes, batch_size, update_interval)
    rm = model if isinstance(model, ReplacementModel) else ReplacementModel(model, dictionaries or [], names)
    setup = rm.setup(_prompt_ids(rm, prompt))
    splits = expert_splits(rm, setup) if expert_nodes else []
    targets = select_targets(
        rm, setup, target, target_token, contrast_token, target_feature, p_max, max_n_logits,
        target_direction,
    )  # fmt: skip
    feat_dict, feat_pos, feat_idx = _active_table(setup)
    n_feat, T, n_dict = len(feat_dict), setup.n_pos, len(rm.spliced)
    n_cols = n_feat + n_dict * T + T
    feat_depth = torch.tensor([s.layer for s in rm.spliced], dtype=torch.long)[feat_dict]

    def feature_spec(j: int) -> tuple:
        return rm.feature_spec(setup, int(feat_dict[j]), int(feat_pos[j]), int(feat_idx[j]))

    batch_size = _memory_plan(rm, n_feat, T, n_cols, len(targets), max_feature_nodes, batch_size)
    rows = _Rows(rm, setup, batch_size, [t.site for t in targets if t.kind == "direction"], splits)
    logit_targets = [t for t in targets if t.kind != "feature"]
    n_logit = len(logit_targets)
    max_nodes = min(max_feature_nodes, n_feat)
    feature_target = next((t.feature for t in targets if t.kind == "feature"), None)
    cap = n_logit + max_nodes + (1 if feature_target is not None else 0)
    buf = _RowBuffer(torch.zeros(cap, n_cols, dtype=edge_dtype(rm)), torch.zeros(cap, dtype=torch.long))
    if splits:  # the expert nodes' columns, kept apart: the schedule ranks on the merged graph
        buf.xedge = torch.zeros(cap, sum(x.n_nodes for x in splits), dtype=buf.edge.dtype)
    weights_rows = []
    specs = [target_spec(rm, t) for t in logit_targets]
    for c in range(0, len(specs), batch_size):
        block = rows.compute(specs[c : c + batch_size])
        buf.add(block, torch.arange(c, c + len(block)) + n_cols)  # logit rows: nodes n_cols + k
    weights_rows += [t.weight for t in logit_targets]
    visited = torch.zeros(n_feat, dtype=torch.bool)
    if feature_target is not None:
        buf.add(rows.compute([feature_spec(feature_target)]), torch.tensor([feature_target]))
        visited[feature_target] = True
        weights_rows.append(1.0)
    targets_w = torch.tensor(weights_rows, dtype=torch.float32)
    with progress_bar(transient=True) as bar:
        task = bar.add_task(
            "attribution", total=max_nodes, info=f"{n_feat} active", unit="row", visible=show_progress
        )
        schedule = _Schedule(targets_w, buf.n, n_cols, max_nodes, update_interval * batch_size)
        for idx in schedule.batches(buf, visited, feat_depth, batch_size):
            buf.add(rows.compute([feature_spec(int(j)) for j in idx]), idx)
            visited[idx] = True
            bar.update(task, advance=len(idx))
    del rows
    edge, row_node = buf.edge[: buf.n], buf.row_node[: buf.n]
    table = (feat_dict, feat_pos, feat_idx)
    graph, rows_at = _assemble(rm, setup, prompt, targets, edge, row_node, visited, n_feat, n_cols, *table)
    if splits:  # rows in the graph's node order
        graph.experts, graph.expert_weights = expert_table(splits, setup.n_pos)
        graph.expert_adjacency = torch.zeros(
            len(graph.target_weights), buf.xedge.shape[1], dtype=buf.edge.dtype
        )
        graph.expert_adjacency[rows_at] = buf.xedge[: buf.n]
    return graph


def _active_table(setup: Setup) -> tuple[Tensor, Tensor, Tensor]:
    """(dictionary, position, latent) of every active feature, in the setup's order, on the CPU."""
    counts = [len(a.pos) for a in setup.active]
    if not sum(counts):
        return (torch.zeros(0, dtype=torch.long),) * 3
    feat_dict = torch.cat([torch.full((c,), i, dtype=torch.long) for i, c in enumerate(counts)])
    feat_pos = torch.cat([a.pos.cpu() for a in setup.active])
    feat_idx = torch.cat([a.idx.cpu() for a in setup.active])
    return feat_dict, feat_pos, feat_idx


@dataclass
class _RowBuffer:
    """The attribution rows computed so far: `edge[:n]` [rows, n_cols] and each row's node."""

    edge: Tensor
    row_node: Tensor
    n: int = 0
    xedge: Tensor | None = None  # expert nodes' columns [rows, n_x] (circuit.expert_nodes)

    def add(self, block: Tensor, nodes: Tensor) -> None:
        block, w = block.to(self.edge.dtype).cpu(), self.edge.shape[1]
        self.edge[self.n : self.n + len(block)] = block[:, :w]
        if self.xedge is not None:
            self.xedge[self.n : self.n + len(block)] = block[:, w:]
        self.row_node[self.n : self.n + len(block)] = nodes
        self.n += len(block)


@dataclass
class _Schedule:
    """circuit-tracer's order of feature rows: by influence on the targets given the rows so far,
    re-ranked every `refresh` rows, until `max_nodes` features have rows (all of them, in index
    order, when every active feature gets a row)."""

    target_weights: Tensor
    n_targets: int
    n_cols: int
    max_nodes: int
    refresh: int

    def batches(self, buf: _RowBuffer, visited: Tensor, depth: Tensor, batch_size: int):
        """Yield batches of feature indices; the caller adds their rows and marks them visited."""
        n_feat = len(visited)
        while (n_done := int(visited.sum())) < self.max_nodes:
            if self.max_nodes == n_feat:
                pending = (~visited).nonzero().flatten()
            else:
                infl = influence_from_rows(
                    buf.edge[: buf.n], buf.row_node[: buf.n], self.target_weights, self.n_targets, self.n_cols
                )
                order = infl[:n_feat].argsort(descending=True)
                pending = order[~visited[order]][: min(self.refresh, self.max_nodes - n_done)]
            # the same rows, grouped by layer: a batch's backward pass only runs below its deepest
            # row's layer, so layer-sorted batches skip the upper layers (about half the work)
            pending = pending[torch.argsort(depth[pending], stable=True)]
            for c in range(0, len(pending), batch_size):
                yield pending[c : c + batch_size]


def _assemble(
    rm, setup, prompt, targets, edge, row_node, visited, n_feat, n_cols, feat_dict, feat_pos, feat_idx
) -> tuple[Graph, Tensor]:
    """The graph, and the node index of each computed row."""
    T, n_dict = setup.n_pos, len(rm.spliced)
    selected = visited.nonzero().flatten()
    n_sel = len(selected)
    n_logit = sum(t.kind != "feature" for t in targets)
    N = n_sel + n_dict * T + T + n_logit
    compact = torch.full((n_cols + n_logit,), -1, dtype=torch.long)
    compact[selected] = torch.arange(n_sel)
    compact[n_feat:n_cols] = torch.arange(n_sel, n_sel + n_dict * T + T)
    compact[n_cols:] = torch.arange(N - n_logit, N)
    A = torch.zeros(N, N, dtype=edge.dtype)
    keep_cols = torch.cat([selected, torch.arange(n_feat, n_cols)])
    A[compact[row_node]] = torch.cat(
        [edge[:, keep_cols], torch.zeros(len(edge), n_logit, dtype=edge.dtype)], 1
    )
    weights = torch.zeros(N, dtype=edge.dtype)
    lk = 0
    for t in targets:
        if t.kind == "feature":
            weights[compact[t.feature]] = t.weight
            t.feature = int(compact[t.feature])
        else:
            weights[N - n_logit + lk] = t.weight
            lk += 1
    layers = torch.tensor([s.layer for s in rm.spliced], dtype=torch.long)
    fd = feat_dict[selected]
    features = torch.stack([fd, layers[fd], feat_pos[selected], feat_idx[selected]], 1)
    acts = torch.cat([a.act for a in setup.active]).detach().cpu().float() if n_feat else torch.zeros(0)
    err_d = torch.arange(n_dict).repeat_interleave(T)
    errors = torch.stack([err_d, layers[err_d], torch.arange(T).repeat(n_dict)], 1)
    ids = setup.input_ids.cpu()
    return Graph(
        prompt=prompt if isinstance(prompt, str) else rm.tokenizer.decode(ids) if rm.tokenizer else "",
        input_ids=ids,
        tokens=[rm.token_str(int(t)) for t in ids],
        features=features,
        activations=acts[selected],
        errors=errors,
        adjacency=A,
        target_weights=weights,
        targets=targets,
        dictionaries=dictionary_info(rm),
        n_layers=rm.lm.n_layers,
        total_active_features=n_feat,
        logits=setup.logits[-1].detach().cpu().float(),
        meta=routes_meta(setup.freeze),  # mixtures of experts: the router choices the graph holds
    ), compact[row_node]


def dictionary_info(rm: ReplacementModel) -> list[dict]:
    """What graph.json records about each spliced dictionary."""
    return [
        dict(
            name=s.name,
            hook_name=s.hook_name,
            hook_name_out=s.hook_name_out,
            layer=s.layer,
            slot=s.slot,
            offset=s.offset,
            transcoder=s.transcoder,
            attention=s.attention,
            d_sae=int(s.dic.cfg.d_sae),
            cross_layer=len(s.sources) > 1 or isinstance(s.dic, CLTLayer),
        )
        for s in rm.spliced
    ]
