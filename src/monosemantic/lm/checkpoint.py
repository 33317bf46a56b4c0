"""Atomic training checkpoints for `lm train`: everything needed to continue bit-for-bit.

One file, `state.pt`, replaced atomically: model, optimizer and scheduler state, the step, the
torch RNG state and the number of data windows consumed (the data position), plus the [lm]
settings that shape the model so a rerun with different ones fails loudly instead of mixing runs.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch

from monosemantic.utils.errors import ConfigError
from monosemantic.utils.files import atomic_path
from monosemantic.utils.readers import load_torch

STATE_FILE = "state.pt"
# [lm] fields that must match for a resume to make sense.
SHAPE_KEYS = (
    "init_from",  # first: a fine-tune and a from-scratch run differ in it before anything else
    "architecture",
    "vocab_size",
    "n_layers",
    "d_model",
    "n_heads",
    "d_mlp",
    "context_size",
    "batch_size",
)


def save_state(state_dir: Path, **state: Any) -> Path:
    path = Path(state_dir) / STATE_FILE
    with atomic_path(path) as tmp:
        torch.save({**state, "rng": torch.get_rng_state()}, tmp)
    return path


def load_state(state_dir: Path, shape: dict[str, Any]) -> dict[str, Any] | None:
    """The latest checkpoint, or None when there is none; raises if it belongs to another setup."""
    path = Path(state_dir) / STATE_FILE
    if not path.exists():
        return None
    state = load_torch(path, "LM checkpoint", f"delete {state_dir} to start over", weights_only=False)
    saved = state.get("shape", {})
    diff = [k for k in SHAPE_KEYS if saved.get(k) != shape.get(k)]
    if diff:
        k = diff[0]
        raise ConfigError(
            f"{path} was written with lm.{k}={saved.get(k)!r}, not {shape.get(k)!r}; "
            "delete that folder or choose another lm.out / lm.state_dir"
        )
    torch.set_rng_state(state["rng"])
    return state
