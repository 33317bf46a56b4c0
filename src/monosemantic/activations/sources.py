"""Where training activations come from: a cache directory, a tensor file, or the model, live.

Every source yields *chunks*, `dict[site, Tensor[n_tokens, d]]` in float32 with special-token
positions already dropped, in a fixed order, looping over its data in epochs. Its position is a small
dict (`state_dict`) from which it restarts at exactly the next chunk, which is what makes a shuffled
stream resumable (`buffer.py`).
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch

from monosemantic.config.data import DataConfig
from monosemantic.corpus.chat import role_mask
from monosemantic.corpus.windows import special_token_ids
from monosemantic.utils import distributed as D
from monosemantic.utils.errors import DataError
from monosemantic.utils.readers import first_line, load_safetensors

from . import split
from .cache import ActivationCache

if TYPE_CHECKING:
    from monosemantic.lm.model import SubjectModel


def capture(
    model: SubjectModel, tokens: torch.Tensor, sites: Sequence[str], stop_at: int | None
) -> dict[str, torch.Tensor]:
    """Activations `[B, T, d]` of `sites` for a batch of token windows, from one forward pass
    (harvest and the live source share it); per-head sites (`attn.hook_z`, ...) are flattened to
    heads x head_dim, as SAELens does."""
    mask = torch.ones_like(tokens)  # windows are never padded; saying so silences HF's padding warning
    with torch.inference_mode():
        acts = model.run(tokens, mask, capture=list(sites), stop_at_layer=stop_at).activations
    return {s: a.flatten(2) for s, a in acts.items()}


def all_finite(x: torch.Tensor) -> bool:
    """One float32 reduction instead of an elementwise pass: a NaN or inf anywhere makes the sum
    non-finite; only then (or on overflow of the sum itself) is every element checked."""
    return bool(torch.isfinite(x.sum(dtype=torch.float32))) or bool(torch.isfinite(x).all())


def check_finite(chunk: dict[str, torch.Tensor], where: str) -> None:
    for site, x in chunk.items():
        if not all_finite(x):
            raise DataError(
                f"NaN or inf activations at {site} in {where}; the model or data produced non-finite "
                "values (try model.dtype = 'float32', or harvest again)"
            )


class Source(ABC):
    """A resumable, epoch-looping producer of activation chunks."""

    sites: list[str]
    widths: dict[str, int]
    epoch: int = 0

    @abstractmethod
    def next_chunk(self) -> dict[str, torch.Tensor]:
        """The next chunk in order; wraps to a new epoch at the end of the data."""

    @abstractmethod
    def state_dict(self) -> dict[str, Any]:
        """The position of the next chunk (small, JSON-able)."""

    @abstractmethod
    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Restart so that the next chunk is the one after the saved position."""

    @property
    def tokens_per_epoch(self) -> int | None:
        return None


class CacheSource(Source):
    """Reads shards in order, `chunk_sequences` sequences at a time, verifying each shard once.

    The cache's held-out sequences (`split.py`) are skipped: training never reads them."""

    def __init__(
        self,
        path: str | Path,
        sites: Sequence[str],
        chunk_tokens: int,
        exclude_special: bool = True,
        train_on: str = "all",
    ) -> None:
        self.cache = ActivationCache(path)
        if train_on != "all" and self.cache.roles is None:
            raise DataError(
                f"data.train_on = {train_on!r} keeps one chat role, but cache {self.cache.path} holds no roles "
                '(it was not harvested from chat data); harvest with data.format = "chat" or set data.train_on = "all"'
            )
        self.train_on = train_on
        self.sites = list(dict.fromkeys(sites))
        self.cache.check_sites(self.sites)
        if self.cache.num_shards == 0:
            raise DataError(
                f"activation cache {self.cache.path} has no complete shard yet; run the harvest to the end"
            )
        self.widths = {s: self.cache.sites[s] for s in self.sites}
        self.exclude_special = exclude_special
        self.chunk_sequences = max(1, chunk_tokens // self.cache.context_size)
        self.held_out = split.held_out(self.cache.manifest)
        n_held = 0 if self.held_out is None else len(self.held_out)
        if n_held >= self.cache.n_sequences:
            raise DataError(
                f"every sequence of the activation cache {self.cache.path} is held out for evaluation; "
                "harvest more data (data.max_tokens) or a lower harvest.eval_fraction"
            )
        self.n_training_sequences = self.cache.n_sequences - n_held
        self.epoch, self.shard, self.seq = 0, 0, 0
        self._verified: set[int] = set()
        self._firsts = [0]
        for rec in self.cache.shards:
            self._firsts.append(self._firsts[-1] + int(rec["sequences"]))

    @property
    def tokens_per_epoch(self) -> int:
        return self.n_training_sequences * self.cache.context_size

    def _training_rows(self, shard: int, start: int, stop: int) -> torch.Tensor | None:
        """Rows start:stop of `shard` that training may read (None: all of them)."""
        if self.held_out is None:
            return None
        ids = torch.arange(self._firsts[shard] + start, self._firsts[shard] + stop)
        return ~torch.isin(ids, self.held_out)

    def next_chunk(self) -> dict[str, torch.Tensor]:
        while True:  # a run of held-out sequences only yields no rows: read on
            chunk, rows = self._read_chunk()
            if rows > 0:
                return chunk

    def _read_chunk(self) -> tuple[dict[str, torch.Tensor], int]:
        if self.shard >= self.cache.num_shards:
            self.epoch, self.shard, self.seq = self.epoch + 1, 0, 0
        i, n_in_shard = self.shard, int(self.cache.shards[self.shard]["sequences"])
        stop = min(self.seq + self.chunk_sequences, n_in_shard)
        data = self.cache.load_shard(i, self.sites, verify=i not in self._verified, start=self.seq, stop=stop)
        self._verified.add(i)
        rows = self._training_rows(i, self.seq, stop)
        if rows is not None:
            data = {k: v[rows] for k, v in data.items()}
        keep = None
        if self.exclude_special:
            keep = ~self.cache.special_mask(data["tokens"]).reshape(-1)
        if self.train_on != "all":  # chat data: only the tokens of one role
            by_role = role_mask(data["roles"], self.train_on).reshape(-1)
            keep = by_role if keep is None else keep & by_role
        chunk = {}
        for site in self.sites:
            x = data[site].reshape(-1, self.widths[site])
            chunk[site] = (x[keep] if keep is not None else x).float()
        check_finite(chunk, f"shard {self.cache.shard_path(i).name} of cache {self.cache.path}")
        self.seq = stop
        if self.seq >= n_in_shard:
            self.shard, self.seq = self.shard + 1, 0
        return chunk, int(data["tokens"].shape[0])

    def state_dict(self) -> dict[str, Any]:
        return {"kind": "cache", "epoch": self.epoch, "shard": self.shard, "seq": self.seq}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.epoch, self.shard, self.seq = int(state["epoch"]), int(state["shard"]), int(state["seq"])


def _read_tensor_file(path: Path) -> torch.Tensor:
    """The [N, d] 'activations' tensor of a .safetensors (memory-mapped) or .pt file."""
    if not path.is_file():
        raise DataError(
            f"activation file {str(path)!r} does not exist; set data.activations to a .safetensors/.pt "
            "file or a cache directory"
        )
    if path.suffix == ".safetensors":
        x = load_safetensors(path, ["activations"], what="activation file")["activations"]
    elif path.suffix in (".pt", ".pth"):
        try:
            try:
                obj = torch.load(path, map_location="cpu", weights_only=True, mmap=True)
            except RuntimeError:  # legacy (non-zip) files cannot be memory-mapped
                obj = torch.load(path, map_location="cpu", weights_only=True)
        except Exception as e:  # torch raises many types for a bad pickle/zip
            raise DataError(f"{path} cannot be read as a torch file ({first_line(e)})") from None
        x = obj.get("activations") if isinstance(obj, dict) else obj
        if not isinstance(x, torch.Tensor):
            raise DataError(f"{path} holds no tensor under the key 'activations'")
    else:
        raise DataError(
            f"{path}: unsupported activation file type; use .safetensors or .pt (key 'activations')"
        )
    if x.ndim != 2 or x.shape[0] == 0:
        raise DataError(f"{path}: 'activations' has shape {list(x.shape)}, expected [N, d] with N > 0")
    return x


class TensorFileSource(Source):
    """One [N, d] stream; it serves whichever (single) site the dictionary names."""

    def __init__(self, path: str | Path, sites: Sequence[str], chunk_tokens: int) -> None:
        self.path = Path(path)
        self.sites = list(dict.fromkeys(sites))
        if len(self.sites) != 1:
            raise DataError(
                f"the tensor file {self.path} holds one activation stream but sites "
                f"{', '.join(self.sites)} were requested; harvest a cache to train on several sites"
            )
        self.data = _read_tensor_file(self.path)
        self.widths = {self.sites[0]: int(self.data.shape[1])}
        self.chunk_rows = max(1, chunk_tokens)
        self.epoch, self.row = 0, 0

    @property
    def tokens_per_epoch(self) -> int:
        return int(self.data.shape[0])

    def next_chunk(self) -> dict[str, torch.Tensor]:
        if self.row >= self.data.shape[0]:
            self.epoch, self.row = self.epoch + 1, 0
        start, stop = self.row, min(self.row + self.chunk_rows, self.data.shape[0])
        chunk = {self.sites[0]: self.data[start:stop].float()}
        check_finite(chunk, f"batch {start // self.chunk_rows} (rows {start}:{stop}) of {self.path}")
        self.row = stop
        return chunk

    def state_dict(self) -> dict[str, Any]:
        return {"kind": "file", "epoch": self.epoch, "row": self.row}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.epoch, self.row = int(state["epoch"]), int(state["row"])


class LiveSource(Source):
    """Harvests on the fly: token windows -> one forward pass -> chunk; nothing touches the disk."""

    def __init__(
        self,
        model: SubjectModel,
        data_cfg: DataConfig,
        sites: Sequence[str],
        batch_sequences: int,
        exclude_special: bool = True,
        train_on: str = "all",
    ) -> None:
        self.model, self.data_cfg = model, data_cfg
        self.train_on = train_on
        self.sites = list(dict.fromkeys(sites))
        model.check_sites(self.sites)
        model.check_context(int(data_cfg.context_size))
        self.widths = {s: int(model.site_width(s)) for s in self.sites}
        self.batch_sequences = batch_sequences
        self.stop_at_layer = model.stop_layer(self.sites)
        self._capture = capture
        from monosemantic.corpus.windows import apply_special_tokens

        apply_special_tokens(model.tokenizer, data_cfg)
        self._special = torch.tensor(special_token_ids(model.tokenizer), dtype=torch.int64)
        self.exclude_special = exclude_special
        ctx = int(data_cfg.context_size)
        self.windows_per_epoch = None if data_cfg.max_tokens is None else -(-data_cfg.max_tokens // ctx)
        self.epoch, self.window, self.batch_index = 0, 0, 0
        self._iter: Iterator[Any] | None = None

    @property
    def tokens_per_epoch(self) -> int | None:
        if self.windows_per_epoch is None:
            return None
        return self.windows_per_epoch * int(self.data_cfg.context_size)

    def _windows(self) -> Iterator[Any]:
        from monosemantic.corpus.windows import TokenWindows

        return iter(TokenWindows(self.data_cfg, self.model.tokenizer, skip_windows=self.window))

    def _take(self, n: int) -> list[Any]:
        if self._iter is None:
            self._iter = self._windows()
        return [w for _, w in zip(range(n), self._iter, strict=False)]

    def next_chunk(self) -> dict[str, torch.Tensor]:
        n = self.batch_sequences
        if self.windows_per_epoch is not None:
            n = min(n, self.windows_per_epoch - self.window)
        windows = self._take(n) if n > 0 else []
        if not windows:  # the epoch is over: start again from the first window
            if self.window == 0:
                raise DataError(f"data.text {self.data_cfg.text!r} produced no token windows")
            self.epoch, self.window, self._iter = self.epoch + 1, 0, None
            return self.next_chunk()
        tokens = torch.stack([w.tokens for w in windows]).long()
        acts = self._capture_shared(tokens)
        keep = ~torch.isin(tokens, self._special).reshape(-1) if self.exclude_special else None
        if self.train_on != "all":  # chat data: only the tokens of one role
            by_role = role_mask(torch.stack([w.roles for w in windows]), self.train_on).reshape(-1)
            keep = by_role if keep is None else keep & by_role
        chunk = {}
        for site in self.sites:
            x = acts[site].reshape(-1, self.widths[site])
            chunk[site] = (x[keep.to(x.device)] if keep is not None else x).float()
        first = self.window
        check_finite(chunk, f"live batch {self.batch_index} (windows {first}:{first + len(windows)})")
        self.window += len(windows)
        self.batch_index += 1
        return chunk

    def _capture_shared(self, tokens: torch.Tensor) -> dict[str, torch.Tensor]:
        """Activations of every window; under torchrun each rank runs the model on a disjoint slice
        of the windows and the slices are gathered, so every rank holds the same chunk (all ranks
        draw the same stream in lock-step) for 1/N of the forward cost."""
        lo, hi = D.split_range(len(tokens), D.world_size(), D.rank())
        if hi > lo:
            acts = self._capture(self.model, tokens[lo:hi], self.sites, self.stop_at_layer)
        else:  # fewer windows than ranks: this rank contributes none
            empty = torch.empty(0, tokens.shape[1], device=self.model.device, dtype=self.model.dtype)
            acts = {s: empty.new_empty(0, tokens.shape[1], self.widths[s]) for s in self.sites}
        if D.world_size() == 1:
            return acts
        return {s: torch.cat(D.all_gather_varlen(acts[s].contiguous())) for s in self.sites}

    def state_dict(self) -> dict[str, Any]:
        return {"kind": "live", "epoch": self.epoch, "window": self.window, "batch": self.batch_index}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.epoch, self.window = int(state["epoch"]), int(state["window"])
        self.batch_index, self._iter = int(state["batch"]), None
