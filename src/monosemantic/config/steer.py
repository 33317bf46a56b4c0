"""[steer]: generation with a feature edited, measured over samples. Every key is also a
`monosemantic steer` option (`--feature`, `--prompt`, `--value`, ...), which overrides it."""

from __future__ import annotations

import math
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, ClassVar, Literal

from pydantic import Field, field_validator

from monosemantic.utils.errors import MonosemanticError

from .base import Section
from .ranges import INT64, Count, Seed

VALUE_LIMIT = 1e6  # a steering value (raw, or a multiple of the max activation) beyond this is a typo
SteeringNumber = Annotated[float, Field(ge=-VALUE_LIMIT, le=VALUE_LIMIT, allow_inf_nan=False)]

_MULTIPLE = re.compile(r"^\s*([-+]?(?:\d+\.?\d*|\.\d+)(?:e[-+]?\d+)?)\s*[x×]\s*$", re.IGNORECASE)


@dataclass(frozen=True)
class Value:
    """A steering value as given: raw, or `multiple` times the feature's max activation."""

    text: str
    raw: float | None = None
    multiple: float | None = None

    def resolve(self, max_activation: float | None) -> float:
        """The raw value; a multiple needs the feature's max activation."""
        if self.multiple is None:
            return float(self.raw)  # type: ignore[arg-type]
        if max_activation is None or not math.isfinite(max_activation) or max_activation <= 0:
            raise MonosemanticError(
                f"--value {self.text} is in units of the feature's max activation, which this feature "
                "has none of (it never fired in the analysed tokens, or no feature store was found: "
                "run `monosemantic analyze`); give a raw value such as --value 10"
            )
        return self.multiple * max_activation


def parse_value(text: str | float | int) -> Value:
    """`10`, `-2.5` (raw) or `4x` (4 times the feature's max activation); anything else is one line."""
    if isinstance(text, (int, float)) and not isinstance(text, bool):
        return Value(f"{text:g}", raw=_bounded(float(text), f"{text:g}"))
    s = str(text).strip()
    if (m := _MULTIPLE.match(s)) is not None:
        return Value(s, multiple=_bounded(float(m.group(1)), s))
    try:
        number = float(s)
    except ValueError:
        raise MonosemanticError(
            f"--value {s!r} is not a number; give a raw value (10, -2.5) or a multiple of the "
            "feature's max activation (4x)"
        ) from None
    return Value(s, raw=_bounded(number, s))


def _bounded(number: float, text: str) -> float:
    if not (math.isfinite(number) and abs(number) <= VALUE_LIMIT):
        raise MonosemanticError(
            f"--value {text} must be a finite number in [-{VALUE_LIMIT:g}, {VALUE_LIMIT:g}] (raw or a multiple: 4x)"
        )
    return number


def parse_values(items: list[str | float] | tuple[str | float, ...]) -> list[Value]:
    """Each item may hold several values separated by commas (`2x,4x,8x`)."""
    out = []
    for item in items:
        parts = str(item).split(",") if isinstance(item, str) else [item]
        out += [parse_value(p) for p in parts if str(p).strip()]
    if not out:
        raise MonosemanticError("no steering value; give --value 10 or --value 4x (repeatable)")
    return out


class SteerConfig(Section):
    INHERITED: ClassVar[tuple[str, ...]] = ("device", "seed")

    dictionary: Path | None = Field(
        None,
        description="Checkpoint to steer with; default the single one under [analyze].dictionary / [train].out.",
    )
    db: Path | None = Field(
        None,
        description="Feature store giving each feature's max activation (for `4x` values) and top tokens; "
        "default [analyze].out/features.db.",
    )
    feature: int | None = Field(None, ge=0, le=INT64, description="Feature index to steer with (--feature).")
    prompt: str | None = Field(None, min_length=1, description="Text to continue (--prompt).")
    values: list[str | SteeringNumber] = Field(
        default_factory=lambda: ["4x"],
        min_length=1,
        description="Steering values (--value, repeatable): raw numbers, or `4x` = 4 times the feature's "
        "max activation over the analysed tokens; each is one row of the evaluation beside the plain text.",
    )
    mode: Literal["add", "set", "clamp", "scale", "ablate"] = Field(
        "add", description="add | set (clamp is its older name) | scale | ablate, as circuit interventions."
    )
    samples: Count = Field(1, le=4096, description="Generations per value (and plain), as one batch.")
    max_new_tokens: int = Field(
        40, gt=0, le=100_000, description="Tokens generated per sample after the prompt."
    )
    temperature: float = Field(
        0.7, ge=0, le=100, allow_inf_nan=False, description="Sampling temperature; 0 = greedy."
    )
    top_p: float = Field(
        0.9, gt=0, le=1, description="Nucleus sampling: the fewest tokens reaching this mass."
    )
    words: list[str] = Field(
        default_factory=list,
        description="Count these words (whole words, any case) instead of the feature's top activating tokens.",
    )
    out: Path | None = Field(
        None, description="Folder for the evaluation's JSON and plot; default [analyze].out/steer."
    )
    plot: bool = Field(True, description="Write the concept rate and fluency against the value as a PNG.")
    device: str | None = None
    seed: Seed | None = None

    @field_validator("values")
    @classmethod
    def _values(cls, values: list[str | float]) -> list[str | float]:
        try:
            parse_values(values)
        except MonosemanticError as e:
            raise ValueError(str(e)) from None
        return values
