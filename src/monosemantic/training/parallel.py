"""`[train].parallel`: how a run's work is split over the ranks torchrun starts.

- "data": every rank draws the same global batch from its own copy of the stream and trains on
  a disjoint slice of its rows; gradients are summed (weighted by slice size) so every rank takes
  the single-process optimiser step. Statistics that need the whole batch (scale, b_dec init,
  firing counts, dead latents, AuxK, the L0 controller, metrics) see the global batch.
- "features": every rank holds a contiguous slice of each dictionary's latents (encoder columns,
  decoder rows, their Adam moments and counters); `dictionaries.sharding` makes TopK/BatchTopK
  select globally and sums the partial reconstructions.
- "dictionaries": the run's dictionaries are dealt round-robin to the ranks; each rank feeds its
  own from the shared stream.

`feature_shards` < world size composes data x features on a 2-D DeviceMesh ("data", "features").
One process is the case world size 1 of the same code: every collective is then the identity.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any

import torch
import torch.distributed as dist
from torch import Tensor

from monosemantic.config.train import TrainConfig
from monosemantic.dictionaries import Dictionary
from monosemantic.dictionaries.base import LossOutput
from monosemantic.dictionaries.sharding import Sharding
from monosemantic.utils import distributed as D
from monosemantic.utils.errors import ConfigError

from .dead import DeadLatentTracker
from .metrics import batch_metrics
from .slots import Slot, make_optimizer


class NullLog:
    """The metrics log of a rank that does not write it (another rank writes the same rows)."""

    def truncate_after(self, step: int) -> None: ...
    def reset(self) -> None: ...
    def write(self, row: dict[str, Any]) -> None: ...


@dataclass
class Parallel:
    mode: str
    world: int
    rank: int
    data_size: int
    data_rank: int
    feature_size: int
    feature_rank: int
    data_group: dist.ProcessGroup | None = None
    feature_group: dist.ProcessGroup | None = None
    full_meta: dict[str, Any] = dataclasses.field(default_factory=dict)  # slot name -> unsharded cfg

    @classmethod
    def from_config(cls, tcfg: TrainConfig, device: torch.device) -> Parallel:
        world, rank = D.world_size(), D.rank()
        shards = tcfg.feature_shards or (world if tcfg.parallel == "features" else 1)
        if shards > 1 and tcfg.parallel != "features":
            raise ConfigError(
                f"train.feature_shards={shards} needs train.parallel='features' (data x features); "
                f"it is {tcfg.parallel!r}"
            )
        if world % shards:
            raise ConfigError(
                f"train.feature_shards={shards} does not divide the world size {world}; "
                f"choose a divisor of {world}"
            )
        if tcfg.parallel == "dictionaries":  # each rank trains whole dictionaries on whole batches
            return cls(tcfg.parallel, world, rank, 1, 0, 1, 0)
        par = cls(tcfg.parallel, world, rank, world // shards, rank // shards, shards, rank % shards)
        if world > 1 and tcfg.parallel == "features":
            from torch.distributed.device_mesh import init_device_mesh

            mesh = init_device_mesh(
                device.type, (world // shards, shards), mesh_dim_names=("data", "features")
            )
            par.data_group, par.feature_group = mesh.get_group("data"), mesh.get_group("features")
        return par

    # ---- who does what ------------------------------------------------------------------------
    @property
    def state_suffix(self) -> str:
        """Per-rank trainer-state files when latents are split; one shared file otherwise."""
        return f"-shard{self.feature_rank}of{self.feature_size}" if self.feature_size > 1 else ""

    def writes_slot_state(self) -> bool:
        return self.mode == "dictionaries" or self.data_rank == 0

    def writes_exports(self) -> bool:
        return self.mode == "dictionaries" or self.rank == 0

    def layout(self) -> dict[str, Any]:
        return {"mode": self.mode, "world": self.world, "feature_shards": self.feature_size}

    # ---- building the slots -------------------------------------------------------------------
    def place(self, slots: list[Slot], tcfg: TrainConfig) -> list[Slot]:
        """This rank's slots: all (data), a latent slice of each (features), or a share (dictionaries)."""
        if self.mode == "dictionaries":
            if len(slots) < self.world:
                raise ConfigError(
                    f"train.parallel='dictionaries' spreads {len(slots)} dictionaries over {self.world} "
                    "ranks; use at most as many ranks as dictionaries, or parallel='data'"
                )
            return [s for i, s in enumerate(slots) if i % self.world == self.rank]
        if self.rank != 0:
            slots = [dataclasses.replace(s, log=NullLog()) for s in slots]
        if self.mode == "features":
            return [self._shard(s, tcfg) for s in slots]
        if self.data_size > 1:
            for s in slots:
                s.dic.sharding = self._sharding(s.dic, 0, s.dic.d_sae)
        return slots

    def _sharding(self, dic: Dictionary, offset: int, d_sae: int) -> Sharding:
        return Sharding(
            latents=self.feature_group,
            rows=self.data_group,
            both=None,  # the world: data x features spans it
            offset=offset,
            width=dic.d_sae,
            d_sae=d_sae,
            split_latents=self.feature_size > 1,
            split_rows=self.data_size > 1,
        )

    def _shard(self, slot: Slot, tcfg: TrainConfig) -> Slot:
        full = slot.dic
        if not full.shardable:
            raise ConfigError(
                f"train.parallel='features' shards TopK and BatchTopK dictionaries, not "
                f"{full.architecture!r} ({slot.name}); use parallel='data' or 'dictionaries'"
            )
        if tcfg.dead_latents == "resample":
            raise ConfigError(
                "train.parallel='features' supports dead_latents='auxk' or 'none', not 'resample'"
            )
        lo, hi = D.split_range(full.d_sae, self.feature_size, self.feature_rank)
        if hi <= lo:
            raise ConfigError(f"d_sae={full.d_sae} of {slot.name} is smaller than train.feature_shards")
        meta = dataclasses.replace(full.cfg, d_sae=hi - lo)
        with torch.random.fork_rng(devices=[]):  # its random init is overwritten: leave the RNG as is
            dic = type(full)(meta).to(full.device)
        dic.load_state_dict(self._slice(full.state_dict(), full.latent_state(), lo, hi))
        dic.sharding = self._sharding(dic, lo, full.d_sae)
        self.full_meta[slot.name] = full.cfg
        return dataclasses.replace(
            slot,
            dic=dic,
            optimizer=make_optimizer(dic, tcfg.lr, tuple(tcfg.adam_betas)),
            tracker=DeadLatentTracker(dic.d_sae, tcfg.dead_after_tokens, full.device),
        )

    @staticmethod
    def _slice(state: dict[str, Tensor], axes: dict[str, int], lo: int, hi: int) -> dict[str, Tensor]:
        """Latents lo:hi of every tensor indexed by latent (`axes`: the architecture's own)."""
        out = {}
        for name, t in state.items():
            axis = axes.get(name)
            out[name] = t.narrow(axis, lo, hi - lo).clone() if axis is not None and t.ndim > axis else t
        return out

    # ---- the step -----------------------------------------------------------------------------
    def rows(self, x: Tensor) -> Tensor:
        """This rank's rows of a global batch."""
        lo, hi = D.split_range(x.shape[0], self.data_size, self.data_rank)
        return x[lo:hi]

    def sync_grads(self, dic: Dictionary, n_local: int, n_global: int) -> None:
        """Sum the gradients of the row slices, weighted so the result is the global-batch mean's."""
        if self.data_size == 1:
            return
        grads = [p.grad for p in dic.parameters() if p.grad is not None]
        flat = torch.cat([g.reshape(-1) for g in grads]).mul_(n_local / n_global)
        D.all_reduce(flat, "sum", self.data_group)
        for g, part in zip(grads, flat.split([g.numel() for g in grads]), strict=True):
            g.copy_(part.view_as(g))

    def global_counts(self, counts: Tensor) -> Tensor:
        """Firing counts of this rank's latents over the global batch."""
        return D.all_reduce(counts.clone(), "sum", self.data_group) if self.data_size > 1 else counts

    def all_latents(self, t: Tensor) -> Tensor:
        """A per-latent vector of the whole dictionary (concatenated slices)."""
        if self.feature_size == 1:
            return t
        return torch.cat(D.all_gather_varlen(t, self.feature_group))

    def metrics(
        self, out: LossOutput, y: Tensor, counts: Tensor, dead: Tensor, n_local: int
    ) -> dict[str, float]:
        """`batch_metrics` of the global batch and the whole dictionary, on every rank."""
        if self.data_size > 1:
            w = n_local / y.shape[0]
            parts = (
                torch.stack([out.loss.detach().float(), *(v.detach().float() for v in out.terms.values())])
                * w
            )
            D.all_reduce(parts, "sum", self.data_group)
            x_hat = torch.cat(D.all_gather_varlen(out.x_hat.detach(), self.data_group))
            terms = dict(zip(out.terms, parts[1:], strict=True))
            out = LossOutput(parts[0], x_hat, f=out._f, terms=terms, codes=out.codes)
        return batch_metrics(out, y, self.all_latents(counts), self.all_latents(dead))

    def full_x_hat(self, out: LossOutput) -> Tensor:
        if self.data_size == 1:
            return out.x_hat.detach()
        return torch.cat(D.all_gather_varlen(out.x_hat.detach(), self.data_group))

    # ---- saving -------------------------------------------------------------------------------
    def export_view(self, slot: Slot) -> tuple[Dictionary, Tensor] | None:
        """The whole dictionary and its density, on the rank that writes it (None elsewhere).

        Latent slices are gathered (every rank of a feature group takes part)."""
        if self.feature_size == 1:
            return (slot.dic, slot.tracker.density()) if self.writes_exports() else None
        if self.data_rank != 0:
            return None
        axes = slot.dic.latent_state()
        state = {
            name: torch.cat(
                D.all_gather_varlen(t.movedim(axes[name], 0).contiguous(), self.feature_group)
            ).movedim(0, axes[name])
            if name in axes and t.ndim > axes[name]
            else t
            for name, t in slot.dic.state_dict().items()
        }
        density = self.all_latents(slot.tracker.density())
        if self.rank != 0:
            return None
        with torch.random.fork_rng(devices=[]):
            full = type(slot.dic)(self.full_meta[slot.name]).to(slot.dic.device)
        full.load_state_dict(state)
        return full, density
