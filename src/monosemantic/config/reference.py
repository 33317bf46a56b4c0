"""The configuration reference, generated from the pydantic models so it can never drift.

Every section of `Config` (and every nested model, such as `[[evaluate.probe_datasets]]`) becomes a
table of its keys with type, default, valid range and description; `docs/configuration.md` holds
the result (`python -m monosemantic.manual` rewrites it, and a test compares it with the models).
"""

from __future__ import annotations

import json
import types
import typing
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import annotated_types as at
from pydantic import BaseModel
from pydantic.fields import FieldInfo
from pydantic_core import PydanticUndefined

from .base import Section
from .dictionary import DictionaryConfig, registered_configs
from .root import Config

_BOUNDS = ((at.Gt, "gt", "> {}"), (at.Ge, "ge", "≥ {}"), (at.Lt, "lt", "< {}"), (at.Le, "le", "≤ {}"))
_NAMES = {int: "int", float: "float", str: "string", bool: "bool", Path: "path", Any: "any"}


def _models_in(annotation: Any) -> list[type[BaseModel]]:
    """The pydantic models an annotation holds (`X`, `X | None`, `list[X]`)."""
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return [annotation]
    return [m for arg in typing.get_args(annotation) for m in _models_in(arg)]


def _is_dtype(metadata: Any) -> bool:
    return any(getattr(getattr(m, "func", None), "__name__", "") == "_dtype" for m in metadata)


def type_name(annotation: Any) -> str:
    """A reader's name for a field's type: `int`, `path`, `list of string`, `"a" | "b"`."""
    if annotation in _NAMES:
        return _NAMES[annotation]
    origin, args = typing.get_origin(annotation), typing.get_args(annotation)
    if origin is typing.Annotated:
        return "dtype" if _is_dtype(args[1:]) else type_name(args[0])
    if origin is typing.Literal:
        return " \\| ".join(f'"{a}"' if isinstance(a, str) else str(a) for a in args)
    if origin in (typing.Union, types.UnionType):
        names = [type_name(a) for a in args if a is not type(None)]
        return " or ".join(dict.fromkeys(names))
    if origin in (list, tuple):
        inner = [type_name(a) for a in args if a is not Ellipsis]
        if origin is tuple and len(inner) > 1:
            return f"[{', '.join(inner)}]"
        return f"list of {inner[0]}" if inner else "list"
    if origin is dict:
        return f"table of {type_name(args[1])}" if args else "table"
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return "table"
    return getattr(annotation, "__name__", str(annotation))


def default_text(field: FieldInfo) -> str:
    if field.default_factory is not None:
        value = field.default_factory()  # type: ignore[call-arg]
    elif field.default is PydanticUndefined:
        return "required"
    else:
        value = field.default
    if value is None:
        return "unset"
    if isinstance(value, BaseModel):
        return "see below"
    if isinstance(value, str):
        return f'`"{value}"`'
    if isinstance(value, bool):
        return f"`{str(value).lower()}`"
    if isinstance(value, list | tuple | dict):
        return f"`{json.dumps(list(value) if isinstance(value, tuple) else value)}`"
    return f"`{value}`"


def range_text(field: FieldInfo) -> str:
    """The valid range pydantic checks (`> 0`, `≥ 0, < 1`, length bounds)."""
    parts: list[str] = []
    for item in field.metadata:
        for cls, attr, fmt in _BOUNDS:
            if isinstance(item, cls):
                parts.append(fmt.format(getattr(item, attr)))
        if isinstance(item, at.MinLen):
            parts.append(f"length ≥ {item.min_length}")
        if isinstance(item, at.MaxLen):
            parts.append(f"length ≤ {item.max_length}")
        if isinstance(item, at.MultipleOf):
            parts.append(f"multiple of {item.multiple_of}")
    return ", ".join(parts)


def description(model: type[BaseModel], name: str, field: FieldInfo) -> str:
    """The field's description; a section's inherited device/dtype/seed says where it defaults from."""
    if field.description:
        return field.description
    if issubclass(model, Section) and name in model.INHERITED:
        return f"Default: the root `{name}`."
    return ""


def model_table(model: type[BaseModel]) -> list[str]:
    """One Markdown table: key, type, default, range, meaning."""
    lines = ["| key | type | default | range | meaning |", "|---|---|---|---|---|"]
    for name, field in model.model_fields.items():
        doc = description(model, name, field).replace("|", "\\|").replace("\n", " ")
        lines.append(
            f"| `{name}` | {'dtype' if _is_dtype(field.metadata) else type_name(field.annotation)} | {default_text(field)} | {range_text(field)} | {doc} |"
        )
    return lines


def sections() -> Iterator[tuple[str, type[BaseModel]]]:
    """(TOML heading, model) for the root keys, every section of `Config` in declaration order, and
    every model nested in a section (a table or an array of tables), right after its section."""
    yield "root keys", Config
    seen: set[type[BaseModel]] = {Config}
    for name, field in Config.model_fields.items():
        for model in _models_in(field.annotation):
            if model in seen:
                continue
            seen.add(model)
            if name == "dictionaries":
                continue  # the same model as [dictionary]
            yield ("[dictionary] / [[dictionaries]]" if name == "dictionary" else f"[{name}]"), model
            yield from _nested(name, model, seen)


def _nested(
    prefix: str, model: type[BaseModel], seen: set[type[BaseModel]]
) -> Iterator[tuple[str, type[BaseModel]]]:
    for key, field in model.model_fields.items():
        for sub in _models_in(field.annotation):
            if sub in seen:
                continue
            seen.add(sub)
            many = typing.get_origin(field.annotation) is list
            yield (f"[[{prefix}.{key}]]" if many else f"[{prefix}.{key}]"), sub
            yield from _nested(f"{prefix}.{key}", sub, seen)


def config_reference() -> str:
    """Markdown: one heading and table per section, in the order of `Config`."""
    out: list[str] = []
    for heading, model in sections():
        if model is Config:
            table = [
                line
                for line in model_table(model)
                if not any(
                    f"| `{n}` |" in line for n, f in model.model_fields.items() if _models_in(f.annotation)
                )
            ]
        else:
            table = model_table(model)
        doc = (
            (model.__doc__ or "").strip() if model is not Config and model.__doc__ != Section.__doc__ else ""
        )
        out += [f"### {heading}", "", *([doc, ""] if doc else []), *table, ""]
        if heading.startswith("[dictionary]"):
            out += [*_architecture_table(), ""]
    return "\n".join(out).rstrip() + "\n"


def _architecture_table() -> list[str]:
    """The keys each built-in architecture adds to `[dictionary]` (its config class's own)."""
    builtin = {n: c for n, c in registered_configs().items() if c.__module__.startswith("monosemantic.")}
    keys: dict[str, tuple[list[str], object]] = {}
    for arch, cls in sorted(builtin.items()):
        for key, field in cls.model_fields.items():
            if key not in DictionaryConfig.model_fields:
                keys.setdefault(key, ([], field))[0].append(arch)
    lines = [
        "Keys of one architecture or a few (a key another architecture owns is refused, naming both):",
        "",
        "| key | architectures | default | meaning |",
        "|---|---|---|---|",
    ]
    for key, (archs, field) in keys.items():
        doc = (field.description or "").replace("|", "\\|")
        lines.append(f"| `{key}` | {', '.join(archs)} | {default_text(field)} | {doc} |")
    return lines
