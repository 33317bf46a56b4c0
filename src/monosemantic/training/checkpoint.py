"""Atomic checkpoints and exact resume.

Layout: each dictionary folder holds the SAELens checkpoint (`cfg.json`, `sae_weights.safetensors`,
`sparsity.safetensors`) plus `trainer_state/step-NNNNNNNNN.pt` (its parameters in the scaled
training space, Adam moments, dead-latent counters, controller). The run's shared state (step,
RNG states, stream position, scales, batches not yet trained on) is `train.out/trainer_state/run.pt`.

Commit protocol: per-dictionary files for step s are written first, then `run.pt` naming step s
is renamed into place, then older step files are removed. A kill at any moment leaves `run.pt`
pointing at a complete, consistent set of files.
"""

from __future__ import annotations

import copy
import random
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import torch

from monosemantic.dictionaries.base import Dictionary
from monosemantic.dictionaries.io import save_dictionary
from monosemantic.utils import distributed as D
from monosemantic.utils.errors import MonosemanticError
from monosemantic.utils.files import atomic_path
from monosemantic.utils.readers import load_torch

STATE_DIR = "trainer_state"
RUN_STATE = "run.pt"


def _step_file(folder: Path, step: int, suffix: str = "") -> Path:
    """`suffix` names a rank's latent slice when a dictionary is split over ranks."""
    return folder / STATE_DIR / f"step-{step:09d}{suffix}.pt"


def _save(obj: Any, path: Path) -> None:
    with atomic_path(path) as tmp:
        torch.save(obj, tmp)


def rng_state() -> dict[str, Any]:
    state = {"torch": torch.get_rng_state(), "python": random.getstate(), "numpy": np.random.get_state()}
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict[str, Any]) -> None:
    torch.set_rng_state(state["torch"])
    random.setstate(state["python"])
    np.random.set_state(state["numpy"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def save_state(
    run_dir: Path,
    step: int,
    shared: dict[str, Any],
    per_dict: list[tuple[Path, dict[str, Any]]],
    suffix: str = "",
    write_shared: bool = True,
) -> None:
    """Write one consistent resume point for every dictionary of the run (see module docstring).

    Under torchrun each rank passes the dictionaries (or latent slices) it writes; `run.pt` is
    written by one rank only after every rank's files are in place."""
    for folder, state in per_dict:
        _save(state, _step_file(folder, step, suffix))
    D.barrier()
    if write_shared:
        _save({**shared, "step": step}, run_dir / STATE_DIR / RUN_STATE)
    D.barrier()
    current = f"step-{step:09d}"
    for folder, _ in per_dict:
        for old in (folder / STATE_DIR).glob(f"step-*{suffix}.pt"):
            if not old.name.startswith(current):
                old.unlink(missing_ok=True)


def load_state(
    run_dir: Path,
    folders: list[Path],
    device: torch.device,
    suffix: str = "",
    check: Callable[[dict], None] | None = None,
) -> tuple[dict, list[dict]] | None:
    """The last committed resume point, or None for a fresh run; `check` vets the shared state
    before any per-dictionary file is opened."""
    path = run_dir / STATE_DIR / RUN_STATE
    if not path.exists():
        return None
    fix = f"delete {run_dir} to start over"
    shared = load_torch(path, "training state", fix, weights_only=False)
    if check is not None:
        check(shared)
    step = shared["step"]
    per_dict = []
    for folder in folders:
        file = _step_file(folder, step, suffix)
        if not file.exists():
            raise MonosemanticError(
                f"{file} is missing, so the run in {run_dir} cannot resume; delete {run_dir} to start over"
            )
        per_dict.append(load_torch(file, "training state", fix, map_location=device, weights_only=False))
    return shared, per_dict


@torch.no_grad()
def export_dictionary(
    dic: Dictionary,
    folder: Path,
    metadata: dict[str, Any],
    scale_in: float,
    scale_out: float,
    density: torch.Tensor,
) -> None:
    """Write the SAELens layout for raw (unscaled) activations: the scale is folded into a copy."""
    export = copy.deepcopy(dic).float().cpu()
    export.fold_activation_scale(scale_in, scale_out if export.is_transcoder else None)
    if not export.unit_norm_decoder:  # free decoder rows: save unit rows, magnitudes in the latents
        export.fold_decoder_norm()
    log_density = torch.log10(density.double().clamp_min(1e-10)).float().cpu()
    save_dictionary(export, folder, metadata, log10_density=log_density)
