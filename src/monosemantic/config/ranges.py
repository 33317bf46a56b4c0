"""Valid ranges of config values: every number a config holds names the range it must lie in.

A field declares its range with one of these types (or its own `Field(ge=..., le=...)`), so a
bad value fails when the config is loaded, in one line naming the key and the range
(`train.lr must be a finite number > 0 (got -0.001)`), never later as a traceback from torch.
Floats are finite everywhere (`Section` forbids inf and NaN) and integers fit in 64 bits.
`tests/test_config_fuzz.py` feeds every field of every section 0, negatives, huge values, inf,
NaN, wrong types, null and empty values, from these declarations.
"""

from __future__ import annotations

import math
import typing
from pathlib import Path
from typing import Annotated, Any

import annotated_types as at
from pydantic import BaseModel, Field
from pydantic.fields import FieldInfo

INT64 = 2**63 - 1  # what torch, numpy and SQLite hold; no count in a config needs more
WEEK_S = 7 * 24 * 3600.0  # the longest timeout: sockets and event loops reject larger ones

Count = Annotated[int, Field(ge=1, le=INT64)]
"""A positive whole number (sizes, steps, tokens)."""
NonNegativeInt = Annotated[int, Field(ge=0, le=INT64)]
"""A whole number >= 0 (warm-up steps, retries, optional extras)."""
Seed = Annotated[int, Field(ge=0, le=INT64)]
"""A random seed."""
PositiveFloat = Annotated[float, Field(gt=0)]
"""A finite number > 0 (learning rates, widths of kernels)."""
NonNegativeFloat = Annotated[float, Field(ge=0)]
"""A finite number >= 0 (penalty coefficients, weight decay, temperature)."""
LearningRate = Annotated[float, Field(gt=0, le=1e6)]
"""A learning rate: > 0, and at most 1e6 (larger ones overflow the optimiser's float32 arithmetic)."""
Fraction = Annotated[float, Field(ge=0, le=1)]
"""A number in [0, 1]."""
Probability = Annotated[float, Field(gt=0, le=1)]
"""A number in (0, 1] (a cumulative share that must keep something)."""
OpenFraction = Annotated[float, Field(gt=0, lt=1)]
"""A number in (0, 1)."""
Beta = Annotated[float, Field(ge=0, lt=1)]
"""An Adam beta: a number in [0, 1)."""
Seconds = Annotated[float, Field(gt=0, le=WEEK_S)]
"""A timeout in seconds, at most a week."""


def _bound(value: float) -> str:
    if value == INT64:
        return "2^63-1"
    return f"{value:g}" if isinstance(value, float) else str(value)


def _constraints(metadata: list[Any]) -> dict[str, float]:
    found: dict[str, float] = {}
    for m in metadata:
        for key in ("gt", "ge", "lt", "le"):
            if isinstance(m, getattr(at, key.capitalize())):
                found[key] = getattr(m, key)
    return found


def describe_range(kind: type, metadata: list[Any]) -> str:
    """`a whole number in [1, 2^63-1]`, `a finite number > 0`, `a number in [0, 1)`, ..."""
    c = _constraints(metadata)
    noun = "a whole number" if kind is int else "a finite number"
    lo = ("(", c["gt"]) if "gt" in c else ("[", c["ge"]) if "ge" in c else None
    hi = (")", c["lt"]) if "lt" in c else ("]", c["le"]) if "le" in c else None
    if lo and hi:
        noun = "a whole number" if kind is int else "a number"
        return f"{noun} in {lo[0]}{_bound(lo[1])}, {_bound(hi[1])}{hi[0]}"
    if lo:
        return f"{noun} {'>' if lo[0] == '(' else '>='} {_bound(lo[1])}"
    if hi:
        return f"{noun} {'<' if hi[0] == ')' else '<='} {_bound(hi[1])}"
    return noun


def leaf_number(annotation: Any, metadata: list[Any]) -> tuple[type, list[Any]] | None:
    """(int or float, its constraints) when `annotation` holds numbers (also inside Optional, lists
    and tuples, whose elements carry the constraints), else None. bool is not a number here."""
    origin = typing.get_origin(annotation)
    if origin is Annotated:
        base, *extra = typing.get_args(annotation)
        extra = [x for e in extra for x in ([e, *e.metadata] if isinstance(e, FieldInfo) else [e])]
        return leaf_number(base, [*metadata, *extra])
    if annotation in (int, float):
        return annotation, metadata
    for arg in typing.get_args(annotation):
        if arg is type(None) or arg is Ellipsis:
            continue
        found = leaf_number(arg, [] if origin in (list, tuple) else metadata)
        if found is not None:
            return found
    return None


def holds_path(annotation: Any) -> bool:
    """True when `annotation` is a Path (also inside Optional and lists)."""
    if annotation is Path:
        return True
    return any(holds_path(a) for a in typing.get_args(annotation))


def submodels(annotation: Any) -> list[type[BaseModel]]:
    """The pydantic models an annotation holds (a section, an Optional one, a list of them)."""
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return [annotation]
    return [m for a in typing.get_args(annotation) for m in submodels(a)]


def is_number(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value)


def check_argument(name: str, value: Any, kind: Any) -> Any:
    """`value` of the Python API argument `name`, checked against a range type of this module
    (`check_argument("k", k, Count)`): the value, or an ArgumentError (a ValueError) naming the
    argument and its range, the same words a config value gets."""
    from pydantic import TypeAdapter, ValidationError

    from monosemantic.utils.errors import ArgumentError

    leaf = leaf_number(kind, [])
    if isinstance(value, bool) and leaf is not None:
        raise ArgumentError(f"{name} must be {describe_range(*leaf)} (got {value})")
    try:
        return TypeAdapter(kind, config={"allow_inf_nan": False}).validate_python(value)
    except ValidationError as e:
        what = describe_range(*leaf) if leaf is not None else e.errors()[0]["msg"].lower()
        raise ArgumentError(f"{name} must be {what} (got {value!r})") from None
