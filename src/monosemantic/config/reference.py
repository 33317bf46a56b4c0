"""The README's config reference, generated from the pydantic models so it can never drift."""

from __future__ import annotations

from pydantic import BaseModel
from pydantic_core import PydanticUndefined

from .ranges import describe_range, leaf_number
from .root import Config

SECTION_ORDER = [
    "model",
    "data",
    "sites",
    "harvest",
    "lm",
    "dictionary",
    "train",
    "evaluate",
    "analyze",
    "explain",
    "export",
    "steer",
    "circuit",
    "serve",
]


def _default(field) -> str:  # type: ignore[no-untyped-def]
    if field.default_factory is not None:
        value = field.default_factory()
    elif field.default is PydanticUndefined:
        return "required"
    else:
        value = field.default
    if value is None:
        return "—"
    return f"`{value!s}`" if not isinstance(value, str) else f'`"{value}"`'


def _valid(field) -> str:  # type: ignore[no-untyped-def]
    """The declared range of a number field (`ranges.py`), as the loader's errors state it."""
    leaf = leaf_number(field.annotation, field.metadata)
    return describe_range(*leaf).replace("|", "\\|") if leaf is not None else ""


def _section_table(model: type[BaseModel]) -> list[str]:
    lines = ["| key | default | valid | meaning |", "|---|---|---|---|"]
    for name, field in model.model_fields.items():
        doc = (field.description or "").replace("|", "\\|")
        lines.append(f"| `{name}` | {_default(field)} | {_valid(field)} | {doc} |")
    return lines


def config_reference() -> str:
    """Markdown tables of every section's keys, defaults and meanings."""
    out: list[str] = []
    for name in SECTION_ORDER:
        field = Config.model_fields[name]
        ann = field.annotation
        model = next(
            a
            for a in (ann, *getattr(ann, "__args__", ()))
            if isinstance(a, type) and issubclass(a, BaseModel)
        )
        title = "[dictionary] / [[dictionaries]]" if name == "dictionary" else f"[{name}]"
        out += [f"**{title}**", "", *_section_table(model), ""]
    return "\n".join(out).rstrip() + "\n"
