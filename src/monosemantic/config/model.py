"""[model]: the subject transformer."""

from __future__ import annotations

from pathlib import Path
from typing import Any, ClassVar, Literal

from pydantic import Field, field_validator

from monosemantic.utils.torch_utils import check_device_name

from .base import Dtype, Section

STRATEGIES = ("auto", "balanced", "balanced_low_0", "sequential")


def _device(name: str) -> None:
    try:
        check_device_name(name)
    except ValueError:
        raise ValueError(
            f"{name!r} is neither a device (cpu, cuda, cuda:N, mps) nor {', '.join(STRATEGIES)}"
        ) from None


class ModelConfig(Section):
    INHERITED: ClassVar[tuple[str, ...]] = ("device", "dtype")

    name: str = Field(
        "storyworld",
        description="HF Hub id (EleutherAI/pythia-70m), a local save_pretrained folder, "
        "or 'storyworld' for the LM shipped inside the package.",
    )
    revision: str | None = Field(None, description="Hub revision (branch, tag or commit).")
    dtype: Dtype | None = Field(None, description="Compute dtype of the model; defaults to the root dtype.")
    device: str | None = Field(
        None, description="cpu, cuda, cuda:1, mps or auto; defaults to the root device."
    )
    device_map: str | dict[str, Any] | None = Field(
        None,
        description="Split the model over devices with accelerate: auto, balanced, balanced_low_0, "
        "sequential, or a {module: device} table. Overrides device.",
    )

    @field_validator("device_map")
    @classmethod
    def _placements(cls, value: str | dict[str, Any] | None) -> str | dict[str, Any] | None:
        """A strategy or device name, or a {module: device} table of GPU indices and device names."""
        if isinstance(value, str):
            if value not in STRATEGIES:
                _device(value)
            return value
        for module, where in (value or {}).items():
            if (
                isinstance(where, bool)
                or not isinstance(where, int | str)
                or (isinstance(where, int) and where < 0)
            ):
                raise ValueError(
                    f"{module} = {where!r}: give a GPU index (0, 1, ...) or cpu, disk, cuda:N, mps"
                )
            if isinstance(where, str) and where != "disk":
                _device(where)
        return value

    max_memory: dict[str, str] | None = Field(
        None, description='Memory per device for device_map, e.g. {"0" = "20GiB", "cpu" = "60GiB"}.'
    )
    offload_folder: Path | None = Field(
        None, description="Where accelerate puts weights that fit on no device (disk offload)."
    )
    quantization: Literal["8bit", "4bit"] | None = Field(
        None, description="Load the weights in 8 or 4 bits with bitsandbytes (CUDA only)."
    )
    allow_foreign_model: bool = Field(
        False,
        description="Let evaluate, analyze, steer and circuit use a dictionary whose cfg.json names another "
        "model or tokenizer than the one they run (refused by default); widths must still match.",
    )
    token_env: str | None = Field(
        None,
        description="Environment variable holding the hub token for gated models (default HF_TOKEN); "
        "the token itself is never written anywhere.",
    )
