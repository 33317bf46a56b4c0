"""A seeded shuffle buffer over an activation source, and `activation_batches`, the trainer's stream.

Consecutive tokens are highly correlated (same sequence, same document), so training batches are
drawn from a buffer in the manner of SAELens' mixing buffer: fill it to `train.buffer_tokens`
tokens, permute, hand out the first half as batches, keep the second half and refill. All sites share
one permutation, so a transcoder sees matching (input, output) rows.

Epochs: when more tokens are requested than the source holds (a cache, a tensor file, or a live
source limited by `data.max_tokens`), the source starts again from its beginning; `stream.epoch`
counts the passes and a note is printed when the second one starts.

Sequence windows: a kind whose latents attend over positions (Lorsa) needs whole windows, so
`activation_batches(..., sequences=True)` keeps every position (special tokens included: they are
where attention looks) and shuffles whole windows instead of rows; each batch is `batch_size`
rows holding `batch_size / context_size` complete windows, positions in order (`stream.seq_len`).

Resume: `state_dict()` holds the source position, the generator state and the buffer contents (at
most `buffer_tokens` rows per site), so `load_state_dict()` continues with exactly the batches an
uninterrupted stream would have produced, for every kind of source.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch

from monosemantic.config import Config
from monosemantic.config.site import Site
from monosemantic.utils.errors import ConfigError, DataError
from monosemantic.utils.progress import console

from .paired import PairedSource
from .sources import CacheSource, LiveSource, Source, TensorFileSource

if TYPE_CHECKING:
    from monosemantic.lm.model import SubjectModel

Batch = dict[str, torch.Tensor]


def _cat(parts: list[Batch], sites: list[str]) -> Batch:
    if len(parts) == 1:
        return dict(parts[0])
    device = parts[-1][sites[0]].device  # restored buffer rows live on the CPU
    return {s: torch.cat([p[s].to(device) for p in parts]) for s in sites}


class ActivationStream:
    """An endless iterator of `dict[site, Tensor[batch_size, d]]` drawn through a shuffle buffer."""

    def __init__(
        self, source: Source, batch_size: int, buffer_tokens: int, seed: int, seq_len: int | None = None
    ) -> None:
        self.source = source
        self.seq_len = seq_len  # rows come and go as whole windows of seq_len positions
        self.sites = list(source.sites)
        self.batch_size = batch_size
        # At least two batches, so that "yield half" always yields something.
        self.capacity = max(buffer_tokens, 2 * batch_size)
        self.generator = torch.Generator().manual_seed(seed)
        self.kept: Batch | None = None  # rows waiting in the buffer
        self.out: Batch | None = None  # shuffled rows being handed out
        self.out_pos = 0
        self.tokens_yielded = 0
        self._announced_epoch = 0

    def d_in(self, site: str) -> int:
        if site not in self.source.widths:
            raise DataError(f"site {site!r} is not in this stream (it has {', '.join(self.sites)})")
        return self.source.widths[site]

    @property
    def epoch(self) -> int:
        return self.source.epoch

    @property
    def tokens_per_epoch(self) -> int | None:
        return self.source.tokens_per_epoch

    def __iter__(self) -> ActivationStream:
        return self

    def __next__(self) -> Batch:
        if self.out is None or self.out_pos + self.batch_size > self.out[self.sites[0]].shape[0]:
            self._refill()
        assert self.out is not None
        pos, end = self.out_pos, self.out_pos + self.batch_size
        self.out_pos = end
        self.tokens_yielded += self.batch_size
        return {s: self.out[s][pos:end] for s in self.sites}

    def _refill(self) -> None:
        parts: list[Batch] = []
        if self.kept is not None:
            parts.append(self.kept)
        if self.out is not None and self.out_pos < self.out[self.sites[0]].shape[0]:
            parts.append({s: self.out[s][self.out_pos :] for s in self.sites})  # tail shorter than a batch
        have = sum(p[self.sites[0]].shape[0] for p in parts)
        start_have, start_epoch = have, self.source.epoch
        while have < self.capacity:
            if self.source.epoch >= start_epoch + 2 and have == start_have:
                raise DataError(
                    "the activation source yields no rows (every position is a special token?); "
                    "use data.special_tokens = 'include' or other data"
                )
            chunk = self.source.next_chunk()
            if self.source.epoch > self._announced_epoch:
                self._announced_epoch = self.source.epoch
                if self._announced_epoch == 1:
                    console.print(
                        f"[yellow]note:[/] the activation source is exhausted after {self.tokens_per_epoch} "
                        "tokens; starting it again (epoch 2). Give more data to avoid repeating tokens."
                    )
            parts.append(chunk)
            have += chunk[self.sites[0]].shape[0]
        rows = _cat(parts, self.sites)
        T = self.seq_len or 1
        perm = torch.randperm(have // T, generator=self.generator)
        if T > 1:  # whole windows: permute windows, keep each window's positions in order
            perm = (perm[:, None] * T + torch.arange(T)).flatten()
        n_out = max(self.batch_size, (have // 2) // self.batch_size * self.batch_size)
        out_idx, kept_idx = perm[:n_out], perm[n_out:]
        self.out = {s: rows[s].index_select(0, out_idx.to(rows[s].device)) for s in self.sites}
        self.kept = {s: rows[s].index_select(0, kept_idx.to(rows[s].device)) for s in self.sites}
        self.out_pos = 0

    def state_dict(self) -> dict[str, Any]:
        """Everything needed to continue exactly: source position, RNG, and the buffered rows."""
        pending = None
        if self.out is not None:
            pending = {s: self.out[s][self.out_pos :].cpu().clone() for s in self.sites}
        return {
            "source": self.source.state_dict(),
            "generator": self.generator.get_state(),
            "kept": None if self.kept is None else {s: v.cpu().clone() for s, v in self.kept.items()},
            "out": pending,
            "tokens_yielded": self.tokens_yielded,
            "announced_epoch": self._announced_epoch,
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.source.load_state_dict(state["source"])
        self.generator.set_state(state["generator"])
        self.kept = state["kept"]
        self.out, self.out_pos = state["out"], 0
        self.tokens_yielded = int(state["tokens_yielded"])
        self._announced_epoch = int(state.get("announced_epoch", 0))


def _noted(source: CacheSource) -> CacheSource:
    """Training on an unfinished harvest is allowed (it may still be running), never silently."""
    if (note := source.cache.incomplete_note()) is not None:
        console.print(f"[yellow]warning:[/] {note}", highlight=False)
    return source


@dataclass(frozen=True)
class SourceChoice:
    """Where `train` reads activations from: `kind` is "paired" (two models' caches), "cache"
    (data.activations), "tensor file" (data.activations), "harvest cache" (harvest.out) or "live"
    (the model, run on [data]); `path` the cache or file read, if any."""

    kind: str
    path: Path | None = None


def source_choice(cfg: Config, sites: list[str]) -> SourceChoice:
    """The one decision of which source `train` reads (`plan` reports the same)."""
    if any(Site.parse(s).model == "b" for s in sites):  # model B's sites: the data.activations_b cache
        return SourceChoice("paired", Path(cfg.data.activations or cfg.harvest.out))
    if cfg.data.activations is not None:
        path = Path(cfg.data.activations)
        return SourceChoice("cache" if path.is_dir() else "tensor file", path)
    if (Path(cfg.harvest.out) / "manifest.json").is_file():
        return SourceChoice("harvest cache", Path(cfg.harvest.out))
    return SourceChoice("live")


def train_on(cfg: Config, cache: Path | None) -> str:
    """The chat-role policy training follows (`data.train_on`): the config's when it sets one, else
    the one the cache was harvested with (so a cache of assistant tokens trains on them)."""
    if "train_on" in cfg.data.model_fields_set or cache is None or not (cache / "manifest.json").is_file():
        return cfg.data.train_on
    from .manifest import read_manifest

    return str(read_manifest(cache).get("train_on", "all"))


def _source(
    cfg: Config, sites: list[str], batch_size: int, model: SubjectModel | None, keep_all: bool = False
) -> Source:
    """A cache dir or tensor file from data.activations; else the harvest cache; else live
    (`source_choice`). keep_all: every position, special tokens included (whole windows for
    sequence-level kinds)."""
    chunk_tokens = max(batch_size, cfg.train.buffer_tokens // 8)
    exclude = cfg.data.special_tokens == "exclude" and not keep_all

    def roles(cache: Path | None) -> str:  # whole windows keep every chat role's positions too
        return "all" if keep_all else train_on(cfg, cache)

    choice = source_choice(cfg, sites)
    path = choice.path
    if choice.kind == "paired":
        return _paired(cfg, sites, chunk_tokens, exclude)
    if choice.kind in ("cache", "harvest cache"):
        return _noted(CacheSource(path, sites, chunk_tokens, exclude, roles(path)))
    if choice.kind == "tensor file":
        source: Source = TensorFileSource(path, sites, chunk_tokens)
        if model is not None:
            for site in source.sites:
                if int(model.site_width(site)) != source.widths[site]:
                    raise DataError(
                        f"{path} has width {source.widths[site]} but {site} of {model.name} has width "
                        f"{model.site_width(site)}; use activations harvested at that site"
                    )
        return source
    if model is None:
        from monosemantic.lm.big import BigModel
        from monosemantic.lm.model import load_model

        m = cfg.model
        model = load_model(
            m.name, dtype=m.dtype, device=m.device, revision=m.revision, big=BigModel.from_config(m)
        )
    return LiveSource(model, cfg.data, sites, cfg.harvest.batch_size, exclude, roles(None))


def _paired(cfg: Config, sites: list[str], chunk_tokens: int, exclude: bool) -> Source:
    """Model diffing: model A's cache (data.activations, else harvest.out) beside model B's."""
    path_a = cfg.data.activations if cfg.data.activations is not None else cfg.harvest.out
    path_b = cfg.data.activations_b
    if path_b is None or not Path(path_b, "manifest.json").is_file() or not Path(path_a).is_dir():
        raise DataError(
            f"sites {', '.join(sites)} pair two models: set data.activations (model A) and "
            "data.activations_b (model B) to activation caches harvested on the same tokens"
        )
    source = PairedSource(Path(path_a), Path(path_b), sites, chunk_tokens, exclude)
    _noted(source.b)
    return _noted(source)  # type: ignore[arg-type]


def activation_batches(
    cfg: Config,
    sites: list[str],
    batch_size: int,
    model: SubjectModel | None = None,
    seed: int | None = None,
    sequences: bool = False,
) -> ActivationStream:
    """The shuffled float32 training stream for `sites` (see the module docstring for sources);
    `sequences`: whole windows in order, for sequence-level kinds."""
    if not sites:
        raise DataError("no sites requested; set sites.names or dictionary.site")
    if batch_size <= 0:
        raise DataError(f"batch_size must be positive (got {batch_size})")
    source = _source(cfg, list(dict.fromkeys(sites)), batch_size, model, keep_all=sequences)
    seed = cfg.train.seed if seed is None else seed
    seq_len = _window_length(source, cfg, batch_size) if sequences else None
    return ActivationStream(source, batch_size, cfg.train.buffer_tokens, int(seed), seq_len)


def _window_length(source: Source, cfg: Config, batch_size: int) -> int:
    """The window length of a sequence stream, checked against the batch size."""
    if isinstance(source, CacheSource):
        T = source.cache.context_size
    elif isinstance(source, LiveSource):
        T = int(cfg.data.context_size)
    else:
        raise DataError(
            "a sequence-level dictionary (lorsa) needs whole sequence windows: train it from an activation "
            "cache or live from [model], not from a tensor file of token rows or a model pair"
        )
    if batch_size % T:
        raise ConfigError(
            f"train.batch_size ({batch_size}) must be a multiple of the window length {T} for a "
            f"sequence-level dictionary (lorsa); use {max(1, round(batch_size / T)) * T}"
        )
    return T
