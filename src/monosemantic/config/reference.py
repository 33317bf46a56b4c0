"""The README's config reference, generated from the pydantic models so it can never drift."""

from __future__ import annotations

from pydantic import BaseModel
from pydantic_core import PydanticUndefined

from .dictionary import DictionaryConfig, registered_configs
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


def _section_table(model: type[BaseModel]) -> list[str]:
    lines = ["| key | default | meaning |", "|---|---|---|"]
    for name, field in model.model_fields.items():
        doc = (field.description or "").replace("|", "\\|")
        lines.append(f"| `{name}` | {_default(field)} | {doc} |")
    return lines


def config_reference() -> str:
    """Markdown tables of every section's keys, defaults and meanings."""
    out: list[str] = []
    for name in SECTION_ORDER:
        field = Config.model_fields[name]
        ann = field.annotation
        model = (
            DictionaryConfig
            if name == "dictionary"
            else next(
                a
                for a in (ann, *getattr(ann, "__args__", ()))
                if isinstance(a, type) and issubclass(a, BaseModel)
            )
        )
        title = "[dictionary] / [[dictionaries]]" if name == "dictionary" else f"[{name}]"
        out += [f"**{title}**", "", *_section_table(model), ""]
        if name == "dictionary":
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
        lines.append(f"| `{key}` | {', '.join(archs)} | {_default(field)} | {doc} |")
    return lines
