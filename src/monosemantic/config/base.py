"""The base every config section derives from: unknown keys are errors, dtypes are normalised,
numbers are finite and never booleans, paths are never empty, FIFOs or symlink loops."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any, ClassVar
from urllib.parse import urlsplit

from pydantic import BaseModel, BeforeValidator, ConfigDict, ValidationInfo, field_validator

from monosemantic.utils.paths import path_problem
from monosemantic.utils.torch_utils import canonical_dtype

from .ranges import holds_path, leaf_number


def _dtype(value: object) -> object:
    return canonical_dtype(value) if isinstance(value, str) else value


# "float32" | "float16" | "bfloat16"; fp32/fp16/bf16 accepted and normalised.
Dtype = Annotated[str, BeforeValidator(_dtype)]


def _has_bool(value: Any) -> bool:
    return isinstance(value, bool) or (
        isinstance(value, list | tuple) and any(isinstance(v, bool) for v in value)
    )


def _paths(value: Any) -> list[Path]:
    if isinstance(value, Path):
        return [value]
    return [v for v in value if isinstance(v, Path)] if isinstance(value, list | tuple) else []


def web_url(text: str) -> str:
    """`text` if it is an http(s) URL with a host (an endpoint, an origin), else a ValueError."""
    parts = urlsplit(text)
    if (
        parts.scheme not in ("http", "https")
        or not parts.hostname
        or any(c.isspace() or ord(c) < 32 for c in text)
    ):
        raise ValueError(f"{text[:80]!r} is not an http(s) URL with a host, such as http://localhost:8000/v1")
    return text


class Strict(BaseModel):
    """Checks every config model shares (sections and their sub-tables): a number field takes
    no `true`, `false`, inf or NaN; a path field takes no empty string, FIFO, device or loop."""

    model_config = ConfigDict(
        extra="forbid", validate_assignment=True, protected_namespaces=(), allow_inf_nan=False
    )

    @field_validator("*", mode="before")
    @classmethod
    def _reject_wrong_kinds(cls, value: Any, info: ValidationInfo) -> Any:
        field = cls.model_fields.get(info.field_name or "")
        if field is None:
            return value
        if _has_bool(value) and leaf_number(field.annotation, field.metadata) is not None:
            raise ValueError("must be a number, not true or false")
        if holds_path(field.annotation) and (
            value == "" or (isinstance(value, list | tuple) and "" in value)
        ):
            raise ValueError("is empty; give a path (an empty one would mean the current folder)")
        return value

    @field_validator("*", mode="after")
    @classmethod
    def _usable_paths(cls, value: Any, info: ValidationInfo) -> Any:
        field = cls.model_fields.get(info.field_name or "")
        if field is not None and holds_path(field.annotation):
            for path in _paths(value):
                if (problem := path_problem(path)) is not None:
                    raise ValueError(f"{str(path)!r} {problem}; give a file or folder path")
        return value


class Section(Strict):
    """A TOML section. `extra="forbid"` makes a typo an error that names the nearest valid key."""

    # Fields named here are filled from the root config when a section leaves them unset.
    INHERITED: ClassVar[tuple[str, ...]] = ()
