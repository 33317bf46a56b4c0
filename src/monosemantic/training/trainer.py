"""The trainer: one activation stream feeds every dictionary of a run, with exact resume.

`train(cfg)` is the whole public surface. All mutable state lives in one `Trainer` object (no
globals). Under torchrun, `self.par` (train/parallel.py) splits rows, latents or dictionaries over
the ranks; in one process it is world size 1 and every hook is the identity.
"""

from __future__ import annotations

import contextlib
import json
import math
import time
from pathlib import Path
from typing import Any

import torch

from monosemantic.config import Config, ConfigLike, as_config
from monosemantic.dictionaries.base import TrainStepState, dictionary_class
from monosemantic.utils import distributed as D
from monosemantic.utils.disk import check_free_space, disk_full_guard
from monosemantic.utils.errors import ConfigError, DataError, MonosemanticError
from monosemantic.utils.files import check_output
from monosemantic.utils.format import percent
from monosemantic.utils.lock import output_lock
from monosemantic.utils.progress import console, progress_bar
from monosemantic.utils.torch_utils import resolve_device, seed_everything, torch_dtype

from . import checkpoint
from .dead import resample_dead
from .init import decoder_bias_init
from .l0_control import landing
from .logging import WandbLogger, require_wandb
from .metrics import latent_counts
from .parallel import Parallel
from .schedules import lr_factor, sparsity_factor
from .slots import Slot, build_slots, resolve_sites
from .stream import metadata_for, open_stream, scale_summary, sequence_level, site_scale

# Train-config fields that do not change the trained weights, so they may differ on resume.
# The parallel layout is checked on its own (`restore`): data-parallel state is the same on any
# number of ranks, so only the latent sharding must match.
COSMETIC = {
    "out",
    "log_every",
    "checkpoint_every",
    "wandb",
    "wandb_project",
    "device",
    "parallel",
    "feature_shards",
}


# A reconstruction this many times worse than predicting the mean is divergence, not slow training
# (a fresh dictionary starts near FVU 1; lr = 1e6 reaches 1e20 and more within a few steps).
DIVERGED_FVU = 1e3

# The mean input norm of runs whose dictionaries are all scale-free (one-site TopK / BatchTopK):
# `Trainer.input_norm` says why 2.
SCALE_FREE_INPUT_NORM = 2.0


class Trainer:
    def __init__(self, cfg: Config, stream: Any = None, model: Any = None) -> None:
        self.cfg, self.tcfg = cfg, cfg.train
        check_output(self.tcfg.out, "train.out")
        if self.tcfg.wandb:
            require_wandb()
        self.device = resolve_device(self.tcfg.device)
        self.compute_dtype = torch_dtype(self.tcfg.dtype or "float32")
        self.out = Path(self.tcfg.out)
        pairs = resolve_sites(cfg, available=list(stream.sites) if hasattr(stream, "sites") else None)
        self.sites = list(dict.fromkeys(s for pair in pairs for s in pair))
        sequences = sequence_level(cfg)
        self.stream = stream if stream is not None else open_stream(cfg, self.sites, model, sequences)
        self.seq_len: int | None = getattr(self.stream, "seq_len", None) if sequences else None
        if sequences and self.seq_len is None:
            raise DataError("a sequence-level dictionary (lorsa) needs a stream of whole windows (seq_len)")
        self.widths = {s: self.stream.d_in(s) for s in self.sites}
        metadata_for(cfg, self.sites[0], None)  # read at every export: a bad cache path fails now
        seed_everything(self.tcfg.seed if self.tcfg.seed is not None else cfg.seed)
        self.par = Parallel.from_config(self.tcfg, self.device)
        every = build_slots(cfg, self.widths, self.device, pairs)
        self.folders = [s.folder for s in every]  # of the whole run, whichever rank trains them
        self.slots: list[Slot] = self.par.place(every, self.tcfg)
        self.total_steps = math.ceil(self.tcfg.tokens / self.tcfg.batch_size)
        self.step = 0
        self.scales: dict[str, float | torch.Tensor] = {s: 1.0 for s in self.sites}  # tensor: per layer
        self.pending: list[dict[str, torch.Tensor]] = []  # drawn for init, not yet trained on
        self.wall_time = 0.0
        self.complete = False
        self.last: list[dict[str, float]] = [{} for _ in self.slots]
        self.wandb: WandbLogger | None = None

    # ---- state ------------------------------------------------------------------------------
    def fingerprint(self) -> str:
        train = self.tcfg.model_dump(mode="json", exclude=COSMETIC)
        dicts = [d.model_dump(mode="json") for d in self.cfg.all_dictionaries()]
        return json.dumps({"train": train, "dictionaries": dicts, "widths": self.widths}, sort_keys=True)

    def save(self) -> None:
        shared = {
            "fingerprint": self.fingerprint(),
            "rng": checkpoint.rng_state(),
            "stream": self.stream.state_dict(),
            "scales": self.scales,
            "pending": self.pending,
            "wall_time": self.wall_time,
            "complete": self.complete,
            "last": self.last,
            "layout": self.par.layout(),
        }
        per_dict = [(s.folder, s.state_dict()) for s in self.slots] if self.par.writes_slot_state() else []
        checkpoint.save_state(self.out, self.step, shared, per_dict, self.par.state_suffix, D.is_main())

    def restore(self) -> bool:
        """Load the last resume point; True when there was one."""
        loaded = checkpoint.load_state(
            self.out, [s.folder for s in self.slots], self.device, self.par.state_suffix, self._check_resume
        )
        if loaded is None:
            return False
        shared, per_dict = loaded
        self.step, self.scales, self.pending = shared["step"], shared["scales"], shared["pending"]
        self.scales = {k: v.to(self.device) if torch.is_tensor(v) else v for k, v in self.scales.items()}
        self.wall_time, self.complete, self.last = shared["wall_time"], shared["complete"], shared["last"]
        self.stream.load_state_dict(shared["stream"])
        checkpoint.set_rng_state(shared["rng"])
        for slot, state in zip(self.slots, per_dict, strict=True):
            slot.load_state_dict(state)
            slot.log.truncate_after(self.step)
        return True

    def _check_resume(self, shared: dict[str, Any]) -> None:
        if shared["fingerprint"] != self.fingerprint():
            raise ConfigError(
                f"{self.out} holds a run with a different config (dictionaries, train settings or "
                f"activation widths); set train.out to a new folder or delete {self.out} to start over"
            )
        saved = shared.get("layout", {"mode": "data", "world": 1, "feature_shards": 1})
        if saved["feature_shards"] != self.par.feature_size:
            raise ConfigError(
                f"{self.out} was trained with each dictionary split over {saved['feature_shards']} ranks "
                f"(parallel={saved['mode']!r}, world size {saved['world']}); resume with the same "
                f"torchrun --nproc-per-node and train.feature_shards, or set a new train.out"
            )

    # ---- data -------------------------------------------------------------------------------
    def next_batch(self) -> dict[str, torch.Tensor]:
        if self.pending:
            return self.pending.pop(0)
        try:
            batch = next(self.stream)
        except StopIteration:
            raise DataError(
                f"the activation source ran out after {self.step} steps ({self.step * self.tcfg.batch_size:,} "
                f"tokens) of {self.total_steps}; lower train.tokens or provide more activations"
            ) from None
        return self._check(batch)

    def _check(self, batch: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        if len(batch) == 1 and not all(s in batch for s in self.sites):
            (only,) = batch.values()  # a tensor file: its one stream serves every site named
            batch = dict.fromkeys(self.sites, only)
        lo, hi = self.step * self.tcfg.batch_size, (self.step + 1) * self.tcfg.batch_size
        for site in self.sites:
            x = batch.get(site)
            if x is None:
                raise DataError(f"the activation source has no site {site!r}; it has {', '.join(batch)}")
            if x.shape[-1] != self.widths[site]:
                raise DataError(
                    f"batch {self.step} of site {site} has width {x.shape[-1]} but the source declared "
                    f"{self.widths[site]}; check that every shard holds the same site"
                )
            if x.device.type == "cpu" and not torch.isfinite(x).all():
                raise DataError(
                    f"batch {self.step} (tokens {lo:,}-{hi:,}) of site {site} contains NaN or inf; "
                    f"regenerate the activations or drop the bad rows"
                )
        return {s: batch[s].to(self.device, non_blocking=True) for s in self.sites}

    @torch.no_grad()
    def initialize(self) -> None:
        """Scale estimate and b_dec init on the first batches (kept in `pending` and trained on)."""
        n = max(1, min(self.total_steps, math.ceil(self.tcfg.init_tokens / self.tcfg.batch_size)))
        self.pending = [self.next_batch() for _ in range(n)]
        stacked = {s: torch.cat([b[s] for b in self.pending]).float() for s in self.sites}
        if (norm := self.input_norm()) != "raw":
            self.scales = {
                s: site_scale(s, stacked[s], None if norm == "sqrt(d)" else norm) for s in self.sites
            }
        for slot in self.slots:
            y = stacked[slot.hook_name_out] * self.scales[slot.hook_name_out]
            slot.dic.initialize_b_dec(decoder_bias_init(y, self.tcfg.b_dec_init).to(self.device))
            if slot.dic.unit_norm_decoder:
                slot.dic.set_decoder_norm_to_unit_norm()
            slot.dic.initialize_from_data(
                stacked[slot.hook_name] * self.scales[slot.hook_name], slot.cfg.target_l0, y=y
            )
            if slot.dic.fitted:  # baselines: one fit on these tokens, no SGD
                model_name = metadata_for(self.cfg, slot.hook_name, None).get("model_name")
                x = stacked[slot.hook_name] * self.scales[slot.hook_name]
                slot.dic.fit(x, y, self.scales[slot.hook_name], self.scales[slot.hook_name_out], model_name)
            slot.log.reset()

    def input_norm(self) -> float | str:
        """The mean norm the inputs are scaled to: "sqrt(d)" with `train.normalize_activations =
        true`, "raw" (unscaled) with false; when unset, SCALE_FREE_INPUT_NORM if every dictionary
        is a one-site TopK or BatchTopK (`Dictionary.scale_free`), else "sqrt(d)" (L1 coefficients
        and JumpReLU bandwidths assume that scale; a multi-site dictionary needs its per-site
        scales, and Matryoshka converges slower otherwise: tests/training/test_recovery.py).

        Why 2 for the TopK family: they have no scale-dependent hyper-parameter, but for Adam the
        input scale is the biases' learning rate relative to the weights' (weights are scale-free,
        biases move ~lr whatever the input norm). On planted toy directions and on two LMs, mean
        norm 2 beat both raw inputs and sqrt(d): +10 and +13 of 256 directions on the generators
        with spread magnitudes (paired over seeds, ties elsewhere), 6 to 10% lower FVU on the
        shipped LM and the Python-documentation LM (raw mean norm 27); at sqrt(d) the full-size
        toy lost directions (benchmarks/bench_toy_recovery.py, docs: Benchmarks).
        """
        if self.tcfg.normalize_activations is not None:
            return "sqrt(d)" if self.tcfg.normalize_activations else "raw"
        return SCALE_FREE_INPUT_NORM if self._every_dictionary("scale_free") else "sqrt(d)"

    def lr_decay(self) -> str:
        """`train.lr_decay`, or when unset: "none" if every dictionary is a one-site TopK or BatchTopK
        (`Dictionary.constant_lr`), else "linear".

        On planted toy directions (benchmarks/bench_toy_recovery.py, 5 seeds, 6 generators) the
        linear decay over the last 20% was the one default of ours that cost recovery against a
        plain constant-LR TopK trainer: 1 to 4 of 256 directions on every generator.
        """
        if self.tcfg.lr_decay is not None:
            return self.tcfg.lr_decay
        return "none" if self._every_dictionary("constant_lr") else "linear"

    def _every_dictionary(self, trait: str) -> bool:
        """Whether every dictionary's kind declares `trait` (a `Dictionary` class flag)."""
        return all(getattr(dictionary_class(d.architecture), trait) for d in self.cfg.all_dictionaries())

    # ---- the step ---------------------------------------------------------------------------
    def autocast(self) -> contextlib.AbstractContextManager:
        if self.compute_dtype == torch.float32:
            return contextlib.nullcontext()
        return torch.autocast(self.device.type, dtype=self.compute_dtype)

    def train_step(self, batch: dict[str, torch.Tensor]) -> None:
        lr = self.tcfg.lr * lr_factor(
            self.step,
            self.total_steps,
            self.tcfg.lr_warmup_steps,
            self.lr_decay(),
            self.tcfg.lr_decay_start,
        )
        warm = sparsity_factor(self.step, self.tcfg.sparsity_warmup_steps)
        log_now = (self.step + 1) % self.tcfg.log_every == 0 or self.step + 1 == self.total_steps
        for i, slot in enumerate(self.slots):
            x_all = batch[slot.hook_name] * self.scales[slot.hook_name]
            y_all = (
                x_all
                if slot.hook_name_out == slot.hook_name
                else batch[slot.hook_name_out] * self.scales[slot.hook_name_out]
            )
            x, y = self.par.rows(x_all), self.par.rows(y_all)  # this rank's rows of the global batch
            n_all = x_all.shape[0]
            coefficient = None
            if slot.coefficient is not None:
                coefficient = slot.coefficient
                if slot.controller is not None:
                    coefficient = (slot.controller.multiplier() * slot.coefficient).float()
            dead = slot.tracker.dead_mask() if self.tcfg.dead_latents == "auxk" else None
            state = TrainStepState(
                sparsity_scale=warm, sparsity_coefficient=coefficient, dead_mask=dead, seq_len=self.seq_len
            )
            with self.autocast():
                out = slot.dic.training_loss(x, y, state)
            fitted = slot.dic.fitted  # a fitted baseline only observes the stream
            if not fitted:
                slot.optimizer.zero_grad(set_to_none=True)
                out.loss.backward()
                self.par.sync_grads(slot.dic, x.shape[0], n_all)
                if slot.dic.unit_norm_decoder:  # rows are unit: `initialize` and every step renormalise
                    slot.dic.remove_gradient_parallel_to_decoder_directions(rows_are_unit=True)
                for group in slot.optimizer.param_groups:
                    group["lr"] = lr
                slot.optimizer.step()
                if slot.dic.unit_norm_decoder:
                    slot.dic.set_decoder_norm_to_unit_norm()
            counts = self.par.global_counts(latent_counts(out))
            slot.tracker.update(counts, n_all)
            if slot.controller is not None:
                slot.controller.update(self.par.all_latents(counts).sum() / n_all)
            if self._resample_now() and not fitted:
                dead_now = slot.tracker.dead_mask()
                x_hat_all = self.par.full_x_hat(out)
                slot.resampled += resample_dead(slot.dic, slot.optimizer, dead_now, x_all, y_all, x_hat_all)
                slot.tracker.since_fired[dead_now] = 0  # give the new directions a full window
            if log_now:
                row = {"step": self.step + 1, "tokens": (self.step + 1) * self.tcfg.batch_size, "lr": lr}
                row |= self.par.metrics(out, y_all, counts, slot.tracker.dead_mask(), x.shape[0])
                row["near_dead_fraction"] = float(
                    self.par.all_latents(slot.tracker.near_dead_mask()).float().mean()
                )
                # one row has no variance to explain: its FVU is no sign of divergence
                if not math.isfinite(row["loss"]) or (n_all > 1 and not row["fvu"] <= DIVERGED_FVU):
                    raise MonosemanticError(
                        f"dictionary {slot.name} diverged at step {self.step + 1} (loss {row['loss']:.4g}, "
                        f"FVU {row['fvu']:.4g}); "
                        f"lower train.lr or add train.lr_warmup_steps, then delete {self.out} and rerun"
                    )
                if self.tcfg.dead_latents == "resample":
                    row["resampled"], slot.resampled = slot.resampled, 0
                if coefficient is not None:
                    row["coefficient"] = float(coefficient) * warm
                slot.log.write(row)
                self.last[i] = row
                if self.wandb is not None and D.is_main():
                    self.wandb.log(i, row)
            del out  # free this dictionary's activations before the next one's forward pass
        self.step += 1
        if self.step == self.total_steps // 2 and self.total_steps >= 4:
            for slot in self.slots:  # report densities of the trained dictionary, not of its youth
                slot.tracker.reset_density()

    def _resample_now(self) -> bool:
        """Resampling runs once per dead window, and stops when LR decay starts (it needs time to settle)."""
        if self.tcfg.dead_latents != "resample":
            return False
        window = max(1, self.tcfg.dead_after_tokens // self.tcfg.batch_size)
        return (self.step + 1) % window == 0 and self.step + 1 < self.tcfg.lr_decay_start * self.total_steps

    def checkpoint_bytes(self) -> int:
        """What one resume point of this rank's dictionaries takes on disk: the exported weights
        and densities, and the trainer state (weights and two Adam moments)."""
        params = sum(p.numel() for s in self.slots for p in s.dic.parameters())
        return 4 * params * 4 + 4 * sum(s.dic.cfg.d_sae for s in self.slots)

    # ---- the loop ---------------------------------------------------------------------------
    def run(self) -> list[Path]:
        folders = self.folders
        check_free_space(self.out, self.checkpoint_bytes(), "train.out")
        if self.restore():
            if self.complete:
                console.print(f"training in {self.out} is already complete ({self.step} steps)")
                return folders
            console.print(f"resuming {self.out} at step {self.step} of {self.total_steps}")
        else:
            self.initialize()
        if self.tcfg.wandb and D.is_main():
            configs = [
                {**self.tcfg.model_dump(mode="json"), **s.cfg.model_dump(mode="json")} for s in self.slots
            ]
            self.wandb = WandbLogger(
                self.tcfg.wandb_project, str(self.out), [s.name for s in self.slots], configs
            )
        bs = self.tcfg.batch_size
        with progress_bar() as bar:
            task = bar.add_task(
                "train", total=self.total_steps * bs, completed=self.step * bs, unit="tok", info=""
            )
            while self.step < self.total_steps:
                t0 = time.perf_counter()
                self.train_step(self.next_batch())
                self.wall_time += time.perf_counter() - t0
                bar.update(task, completed=self.step * bs, info=self._info())
                if self.step % self.tcfg.checkpoint_every == 0 or self.step == self.total_steps:
                    self.complete = self.step == self.total_steps
                    self.export()
                    self.save()
        if self.wandb is not None:
            self.wandb.finish()
        if D.is_main():
            for line in filter(None, (self._landing(i) for i in range(len(self.slots)))):
                console.print(f"[yellow]warning:[/] {line}", highlight=False)
        return folders

    def _info(self) -> str:
        """The progress line's metrics: one dictionary's, or for a sweep a summary of every
        dictionary at the last logged step (L0 range, the worst FVU and the most dead, by name)."""
        rows = [(slot.name, row) for slot, row in zip(self.slots, self.last, strict=True) if row]
        if not rows:
            return ""
        if len(rows) == 1:
            row = rows[0][1]
            return f"loss {row['loss']:.4g} L0 {row['l0']:.1f} FVU {row['fvu']:.3f} dead {percent(row['dead_fraction'])}"
        l0 = [row["l0"] for _, row in rows]
        worst = max(rows, key=lambda r: r[1]["fvu"])
        dead = max(rows, key=lambda r: r[1]["dead_fraction"])
        return (
            f"{len(rows)} dicts at step {min(row['step'] for _, row in rows)}: L0 {min(l0):.1f}-{max(l0):.1f}, "
            f"worst FVU {worst[1]['fvu']:.3f} ({worst[0]}), most dead {percent(dead[1]['dead_fraction'])} ({dead[0]})"
        )

    def _landing(self, i: int) -> str | None:
        """The end-of-run check of dictionary i (`l0_control.landing`): None when it landed."""
        slot, row = self.slots[i], self.last[i]
        if slot.dic.fitted or not row or not self.complete:
            return None
        l0 = float(slot.controller.l0_ema) if slot.controller is not None else row["l0"]
        target = slot.cfg.target_l0
        return landing(
            slot.name, target, l0, row["dead_fraction"], self.tcfg.dead_after_tokens, slot.cfg.architecture
        )

    def export(self) -> None:
        """Write every dictionary in the SAELens layout (scale folded in), with run metadata."""
        for i, slot in enumerate(self.slots):
            summary = {
                "tokens": self.step * self.tcfg.batch_size,
                "steps": self.step,
                "complete": self.step == self.total_steps,
                "wall_time_s": round(self.wall_time, 3),
                "activation_scale": scale_summary(self.scales[slot.hook_name], slot.hook_name),
                "final_metrics": self.last[i],
                "landing": self._landing(i) or "ok",
                "train": self.tcfg.model_dump(mode="json"),
                "dictionary": slot.cfg.model_dump(mode="json"),
            }
            meta = metadata_for(
                self.cfg, slot.hook_name, slot.hook_name_out if slot.hook_name_out != slot.hook_name else None
            )
            meta["training"] = summary
            if slot.seed is not None:  # train.seeds: evaluate and compare aggregate over the group
                meta["seed"], meta["seed_group"] = slot.seed, slot.group
            view = self.par.export_view(slot)  # gathers latent slices: every rank calls it
            if view is not None:
                dic, density = view
                checkpoint.export_dictionary(
                    dic,
                    slot.folder,
                    meta,
                    self.scales[slot.hook_name],
                    self.scales[slot.hook_name_out],
                    density,
                )


def train(cfg: ConfigLike, stream: Any = None, model: Any = None) -> list[Path]:
    """Train every dictionary of `cfg` on one activation stream; returns their checkpoint folders.

    `stream` (optional) is any iterator of `{site: Tensor[B, d]}` with `d_in(site)`,
    `state_dict()` and `load_state_dict()`; by default it is built from `[data]`.
    """
    cfg = as_config(cfg)
    with D.session(cfg.train.device), output_lock(cfg.train.out, "train.out"):
        trainer = Trainer(cfg, stream=stream, model=model)
        with disk_full_guard(trainer.out, "train.out", needed=trainer.checkpoint_bytes):
            return trainer.run()
