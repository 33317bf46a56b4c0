"""The base every config section derives from: unknown keys are errors, dtypes are normalised."""

from __future__ import annotations

from typing import Annotated, ClassVar

from pydantic import BaseModel, BeforeValidator, ConfigDict

from monosemantic.utils.torch_utils import canonical_dtype


def _dtype(value: object) -> object:
    return canonical_dtype(value) if isinstance(value, str) else value


# "float32" | "float16" | "bfloat16"; fp32/fp16/bf16 accepted and normalised.
Dtype = Annotated[str, BeforeValidator(_dtype)]


class Section(BaseModel):
    """A TOML section. `extra="forbid"` makes a typo an error that names the nearest valid key."""

    model_config = ConfigDict(extra="forbid", validate_assignment=True, protected_namespaces=())

    # Fields named here are filled from the root config when a section leaves them unset.
    INHERITED: ClassVar[tuple[str, ...]] = ()
