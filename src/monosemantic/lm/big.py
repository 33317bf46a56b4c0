"""Models bigger than one device: accelerate's device maps, disk offload, 8/4-bit weights, gated repos.

`BigModel.from_config(cfg.model)` turns the `[model]` fields into `from_pretrained` arguments.
Accelerate places each block on a device (or on disk) and moves activations between them, so the
hook sites and `stop_at_layer` work unchanged: a harvest of layer L raises `StopForward` after
block L, and no later block runs or loads its offloaded weights.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from monosemantic.utils.errors import ConfigError
from monosemantic.utils.torch_utils import resolve_device


@dataclass
class BigModel:
    device_map: str | dict[str, Any] | None = None
    max_memory: dict[str, str] | None = None
    offload_folder: Path | None = None
    quantization: str | None = None
    token_env: str | None = None

    @classmethod
    def from_config(cls, m: Any) -> BigModel:
        return cls(
            getattr(m, "device_map", None),
            getattr(m, "max_memory", None),
            getattr(m, "offload_folder", None),
            getattr(m, "quantization", None),
            getattr(m, "token_env", None),
        )

    @property
    def dispatched(self) -> bool:
        """True when accelerate places the weights (the caller must not `.to(device)` the model)."""
        return self.device_map is not None or self.quantization is not None

    def token(self) -> str | None:
        """The hub token from `token_env` (or HF_TOKEN); read at load time, never stored."""
        name = self.token_env or "HF_TOKEN"
        value = os.environ.get(name)
        if self.token_env is not None and not value:
            raise ConfigError(
                f"model.token_env names {name}, but that environment variable is empty or unset"
            )
        return value or None

    def kwargs(self, dtype: torch.dtype) -> dict[str, Any]:
        """Extra `from_pretrained` arguments (empty for a plain one-device load)."""
        out: dict[str, Any] = {}
        if self.quantization is not None:
            out["quantization_config"] = self._quantization(dtype)
        if self.dispatched:
            out["device_map"] = self.device_map or "auto"
            if isinstance(self.device_map, dict):
                check_placements(self.device_map)
        if self.max_memory is not None:
            if self.device_map is None:
                raise ConfigError('model.max_memory needs model.device_map (e.g. device_map = "auto")')
            out["max_memory"] = {int(k) if str(k).isdigit() else k: v for k, v in self.max_memory.items()}
        if self.offload_folder is not None:
            out["offload_folder"] = str(self.offload_folder)
        return out

    def _quantization(self, dtype: torch.dtype) -> Any:
        if not torch.cuda.is_available():
            raise ConfigError(
                f"model.quantization={self.quantization!r} needs a CUDA GPU (bitsandbytes); remove it "
                "or load the model in bfloat16 with device_map"
            )
        try:
            import bitsandbytes  # noqa: F401
        except ImportError:
            raise ConfigError(
                f"model.quantization={self.quantization!r} needs bitsandbytes: "
                "pip install 'monosemantic[quantization]'"
            ) from None
        from transformers import BitsAndBytesConfig

        if self.quantization == "8bit":
            return BitsAndBytesConfig(load_in_8bit=True)
        return BitsAndBytesConfig(load_in_4bit=True, bnb_4bit_compute_dtype=dtype)


def check_placements(device_map: dict[str, Any]) -> None:
    """Every device a `{module: device}` map names exists on this machine (a GPU index, cuda:N,
    mps, cpu or disk), before transformers fails on it from deep inside `from_pretrained`."""
    for module, where in device_map.items():
        if where in ("cpu", "disk"):
            continue
        name = f"cuda:{where}" if isinstance(where, int) else str(where)
        try:
            resolve_device(name)
        except ConfigError as e:
            raise ConfigError(f"model.device_map places {module!r} on {where!r}: {e}") from None


def input_device(hf: torch.nn.Module) -> torch.device:
    """Where token ids go: the embedding's execution device for a dispatched model."""
    device_map = getattr(hf, "hf_device_map", None)
    if device_map:
        first = next(iter(device_map.values()))
        if isinstance(first, int):
            return torch.device("cuda", first)
        return torch.device("cpu" if first == "disk" else first)
    return next(hf.parameters()).device
