"""Device and dtype resolution, so configs can say "auto" and "bf16"."""

from __future__ import annotations

import random

import numpy as np
import torch

DTYPES: dict[str, torch.dtype] = {
    "float32": torch.float32,
    "float16": torch.float16,
    "bfloat16": torch.bfloat16,
}
DTYPE_ALIASES = {
    "fp32": "float32",
    "fp16": "float16",
    "bf16": "bfloat16",
    "half": "float16",
    "float": "float32",
}


def canonical_dtype(name: str) -> str:
    """Map fp32/fp16/bf16 and friends to the torch spelling used in files (`float32`, ...)."""
    name = DTYPE_ALIASES.get(name.lower(), name.lower())
    if name not in DTYPES:
        raise ValueError(f"unknown dtype {name!r}; use one of {', '.join(DTYPES)} (or fp32, fp16, bf16)")
    return name


def torch_dtype(name: str | torch.dtype) -> torch.dtype:
    if isinstance(name, torch.dtype):
        return name
    return DTYPES[canonical_dtype(name)]


def dtype_name(dtype: torch.dtype) -> str:
    return str(dtype).removeprefix("torch.")


DEVICE_TYPES = ("auto", "cpu", "cuda", "mps")


def check_device_name(name: str) -> str:
    """`name` if it is auto, cpu, mps, cuda or cuda:N; ValueError naming the valid forms otherwise."""
    kind, _, index = name.partition(":")
    if kind not in DEVICE_TYPES or (index and (kind != "cuda" or not index.isdigit())):
        raise ValueError(f"unknown device {name!r}; use auto, cpu, cuda, cuda:N or mps")
    return name


def _mps_available() -> bool:
    return getattr(torch.backends, "mps", None) is not None and torch.backends.mps.is_available()


def resolve_device(device: str | None) -> torch.device:
    """`auto` means CUDA when present, then MPS, then CPU. Asking for a device this machine lacks
    is one clear error, not torch's assertion from deep inside the first `.to()`."""
    if device in (None, "auto"):
        if torch.cuda.is_available():
            return torch.device("cuda")
        if _mps_available():
            return torch.device("mps")
        return torch.device("cpu")
    from .errors import ConfigError

    try:
        dev = torch.device(check_device_name(str(device)))
    except (ValueError, RuntimeError) as e:
        raise ConfigError(str(e)) from None
    if dev.type == "cuda":
        if not torch.cuda.is_available():
            raise ConfigError(
                f'device {device!r}: CUDA is not available on this machine; use device = "cpu" (or "auto")'
            )
        if dev.index is not None and dev.index >= torch.cuda.device_count():
            raise ConfigError(
                f"device {device!r}: this machine has {torch.cuda.device_count()} CUDA device(s); "
                "use cuda:0 or another present one"
            )
    if dev.type == "mps" and not _mps_available():
        raise ConfigError(f'device {device!r}: MPS is not available on this machine; use device = "cpu"')
    return dev


def seed_everything(seed: int) -> torch.Generator:
    random.seed(seed)
    np.random.seed(seed % (2**32))
    torch.manual_seed(seed)
    return torch.Generator().manual_seed(seed)
