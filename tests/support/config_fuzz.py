"""The config fuzzer's cases, generated from the config models themselves.

`fields()` walks every pydantic model a config can hold: the root `Config`, its sections and their
sub-tables (`evaluate.probe_datasets`), the per-architecture config classes registered with the
dictionary registry (subclasses of `DictionaryConfig`, and an architecture's `Options`), so a field
added anywhere is fuzzed without a line here. `values(field)` gives the bad and edge values for its
type and declared range: 0, negatives, huge, inf, NaN, wrong types, null, empty, each declared
bound and its neighbours, every choice of a Literal, both booleans, and for paths a FIFO, a symlink
loop, a read-only location, a file where a folder goes and a folder where a file goes. Each value
is a TOML literal for `--set KEY=VALUE` (`null` unsets, as in a Python dict).
`READERS` says which verbs read each section.
"""

from __future__ import annotations

import math
import shutil
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Annotated, Any, Literal

import annotated_types as at
from pydantic import BaseModel
from pydantic.fields import FieldInfo

from monosemantic.config import Config
from monosemantic.config.ranges import INT64

VERBS = ("harvest", "train", "lm train", "plan", "evaluate", "compare", "blind", "unblind", "analyze",
         "explain", "export", "steer", "circuit", "serve", "demo")  # fmt: skip
ALL = VERBS
# Which verbs read each section (directly or as a default: analyze reads train.out when
# analyze.dictionary is unset). Root keys (device, dtype, seed) reach every verb.
READERS: dict[str, tuple[str, ...]] = {
    "": ALL,
    "model": ("harvest", "train", "plan", "evaluate", "analyze", "steer", "circuit", "serve", "demo"),
    "data": ("harvest", "train", "lm train", "plan", "evaluate", "analyze", "demo"),
    "sites": ("harvest", "train", "plan", "demo"),
    "harvest": ("harvest", "train", "plan", "evaluate", "analyze", "circuit", "demo"),
    "lm": ("lm train",),
    "dictionary": ("train", "plan", "demo"),
    "train": ("train", "plan", "evaluate", "analyze", "steer", "circuit", "demo"),
    "evaluate": ("evaluate", "compare", "blind", "unblind", "demo"),
    "compare": ("compare", "blind", "unblind"),
    "plan": ("plan",),
    "analyze": ("analyze", "explain", "export", "steer", "circuit", "serve", "demo"),
    "explain": ("explain", "demo"),
    "export": ("export", "demo"),
    "steer": ("steer",),
    "circuit": ("circuit", "serve"),
    "serve": ("serve",),
}
# Extra command-line arguments a verb needs besides the config.
VERB_ARGS = {"steer": ["--feature", "0", "--prompt", "Lily the cat"]}


@dataclass(frozen=True)
class Field:
    """A leaf field: its `--set` key, the overrides it needs to apply (an architecture), its type."""

    name: str  # what it is called in reports: section.key (evaluate.probe_datasets.max_rows)
    key: str  # what --set assigns (evaluate.probe_datasets for a list of tables)
    annotation: Any
    metadata: tuple[Any, ...]
    section: str
    setup: tuple[str, ...] = ()
    wrap: str = ""  # a list-of-tables field's value around VALUE: '[{path = "x", max_rows = VALUE}]'


@dataclass(frozen=True)
class Value:
    label: str
    literal: str  # TOML literal for --set
    path_kind: str | None = None  # a filesystem fixture the literal names
    run: bool = True  # worth a real verb run when the config loads (not 2^63-1 tokens)


@dataclass
class Paths:
    """Filesystem fixtures for path fields (made by the test): each maps a label to a path."""

    entries: dict[str, Path] = field(default_factory=dict)

    def reset(self) -> None:
        """Undo what a run that was allowed to write there wrote (an export into the empty folder)."""
        shutil.rmtree(self.entries["missing"].parent, ignore_errors=True)
        for child in self.entries["folder"].iterdir():
            shutil.rmtree(child) if child.is_dir() and not child.is_symlink() else child.unlink()
        for lock in self.entries["folder"].parent.glob(".*.lock"):
            lock.unlink()


def _unwrap(annotation: Any, metadata: list[Any]) -> tuple[Any, list[Any], bool]:
    """(base annotation, constraints, optional) with Optional and Annotated peeled off."""
    optional = False
    while True:
        origin = typing.get_origin(annotation)
        if origin is Annotated:
            base, *extra = typing.get_args(annotation)
            metadata = [
                *metadata,
                *[x for e in extra for x in ([e, *e.metadata] if isinstance(e, FieldInfo) else [e])],
            ]
            annotation = base
            continue
        args = typing.get_args(annotation)
        if origin in (typing.Union, getattr(__import__("types"), "UnionType", None)) and type(None) in args:
            rest = [a for a in args if a is not type(None)]
            optional = True
            annotation = rest[0] if len(rest) == 1 else typing.Union[tuple(rest)]  # noqa: UP007
            continue
        return annotation, metadata, optional


def _models(annotation: Any) -> list[type[BaseModel]]:
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return [annotation]
    return [m for a in typing.get_args(annotation) for m in _models(a)]


def _subclasses(cls: type) -> list[type]:
    out = []
    for sub in cls.__subclasses__():
        out += [sub, *_subclasses(sub)]
    return out


def _architecture_models() -> list[tuple[str, type[BaseModel], str]]:
    """(architecture, model, key prefix) for every per-architecture config class of the package:
    `DictionaryConfig` subclasses (named in the config stage's registry) and `Options` models."""
    import monosemantic.config.dictionary as dictionary_config
    import monosemantic.dictionaries.registry  # noqa: F401  (registers every architecture)
    from monosemantic.dictionaries.base import _REGISTRY

    found = []
    names = {cls: name for name, cls in getattr(dictionary_config, "_CONFIGS", {}).items()}
    for sub in _subclasses(dictionary_config.DictionaryConfig):
        if not sub.__module__.startswith("monosemantic."):
            continue
        if sub not in names:  # a shared base (MultiSiteConfig): fuzzed through the classes built on it
            assert any(s in names for s in _subclasses(sub)), f"{sub.__name__}: no architecture names it"
            continue
        found.append((names[sub], sub, "dictionary."))
    for name, cls in sorted(_REGISTRY.items()):
        if not cls.__module__.startswith("monosemantic."):
            continue  # test architectures registered by other tests
        for attr in vars(cls).values():
            if isinstance(attr, type) and issubclass(attr, BaseModel):
                found.append((name, attr, "dictionary.options."))
    return found


def fields() -> list[Field]:
    """Every leaf field of every config model (see the module docstring)."""
    out: list[Field] = []

    def walk(
        model: type[BaseModel], prefix: str, section: str, setup: tuple[str, ...], skip: set[str]
    ) -> None:
        for name, info in model.model_fields.items():
            if name in skip:
                continue
            base, meta, _ = _unwrap(info.annotation, list(info.metadata))
            subs = _models(base)
            key = f"{prefix}{name}"
            if subs and typing.get_origin(base) is list:  # a list of tables: fuzz one entry's fields
                for sub in subs:
                    required = {n: f for n, f in sub.model_fields.items() if f.is_required()}
                    for n, f in sub.model_fields.items():
                        base_entry = ", ".join(f'{r} = "x"' for r in required if r != n)
                        wrap = "[{" + (base_entry + ", " if base_entry else "") + n + " = VALUE}]"
                        _, m, _ = _unwrap(f.annotation, list(f.metadata))
                        out.append(
                            Field(f"{key}.{n}", key, f.annotation, tuple(m), section or name, setup, wrap)
                        )
            elif subs:
                for sub in subs:
                    walk(sub, f"{key}.", section or name, setup, set())
            else:
                out.append(Field(key, key, info.annotation, tuple(meta), section, setup))

    walk(Config, "", "", (), {"dictionaries"})  # [[dictionaries]] entries are [dictionary]'s model
    base_fields = set(Config.model_fields["dictionary"].annotation.__args__[0].model_fields)
    for arch, model, prefix in _architecture_models():
        skip = base_fields if prefix == "dictionary." else set()
        walk(model, prefix, "dictionary", (f'dictionary.architecture="{arch}"',), skip)
    return out


def _bounds(meta: tuple[Any, ...]) -> dict[str, float]:
    found: dict[str, float] = {}
    for m in meta:
        for key in ("gt", "ge", "lt", "le"):
            if isinstance(m, getattr(at, key.capitalize())):
                found[key] = getattr(m, key)
    return found


def _number_values(kind: type, meta: tuple[Any, ...]) -> list[Value]:
    vals = [Value("zero", "0"), Value("negative", "-1"), Value("huge", "1" + "0" * 30), Value("inf", "inf"),
            Value("-inf", "-inf"), Value("nan", "nan"), Value("huge-float", "1e300")]  # fmt: skip
    b = _bounds(meta)
    for key, bound in b.items():
        if kind is int:
            near = [bound - 1, bound, bound + 1]
            vals += [Value(f"{key}{n - bound:+d}", str(int(n)), run=abs(n) < INT64 // 2) for n in near]
        else:
            below, above = math.nextafter(bound, -math.inf), math.nextafter(bound, math.inf)
            vals += [
                Value(f"{key}-eps", repr(below)),
                Value(f"{key}", repr(float(bound))),
                Value(f"{key}+eps", repr(above)),
            ]
    if kind is float:
        vals.append(Value("tiny", "1e-300"))
    return vals


def values(f: Field) -> list[Value]:
    """The fuzz values of one field."""
    base, meta, optional = _unwrap(f.annotation, list(f.metadata))
    meta = tuple(meta) + f.metadata
    common = [Value("null", "null"), Value("wrong-type-table", "{x = 1}")]
    origin = typing.get_origin(base)
    if base in (int, float):
        return [*_number_values(base, meta), Value("wrong-type-str", '"x"'), Value("wrong-type-bool", "true"),
                Value("empty", '""'), Value("list", "[1]"), *common]  # fmt: skip
    if base is bool:
        return [Value("true", "true"), Value("false", "false"), Value("wrong-type-str", '"x"'),
                Value("wrong-type-int", "2"), Value("empty", '""'), *common]  # fmt: skip
    if origin is Literal:
        return [*(Value(f"choice-{c}", f'"{c}"') for c in typing.get_args(base)), Value("unknown", '"x"'),
                Value("empty", '""'), Value("wrong-type-int", "0"), *common]  # fmt: skip
    if base is Path:
        return _path_values() + [Value("wrong-type-int", "0"), *common]
    if origin in (list, tuple):
        inner = typing.get_args(base)[0]
        ib, im, _ = _unwrap(inner, [])
        element = Field(f.name, f.key, inner, tuple(im), f.section)
        items = [v for v in values(element) if v.label not in ("null", "wrong-type-table")]
        listed = [Value(f"[{v.label}]", f"[{v.literal}]", v.path_kind, v.run) for v in items]
        if origin is tuple:  # a pair like adam_betas: each element fuzzed, the other valid
            listed = [Value(f"[{v.label}, ok]", f"[{v.literal}, 0.999]", None, v.run) for v in items]
            listed.append(Value("one-element", "[0.9]"))
        return [Value("empty-list", "[]"), Value("scalar", '"x"'), *listed, *common]
    if origin is dict or base is dict:
        return [Value("empty-table", "{}"), Value("bad-table", '{x = "y"}'), Value("scalar", '"x"'), *common]
    # strings (and str | dict unions): names, sites, devices, prompts, hosts
    return [Value("empty", '""'), Value("word", '"x"'), Value("nul", '"a\\u0000b"'), Value("long", '"' + "a" * 5000 + '"'),
            Value("path-like", '"../x"'), Value("wrong-type-int", "0"), Value("wrong-type-bool", "true"),
            Value("space", '" "'), *common]  # fmt: skip


PATH_KINDS = ("fifo", "loop", "readonly", "file", "folder", "missing", "dangling")


def _path_values() -> list[Value]:
    return [Value(f"path-{k}", '"{path}"', path_kind=k) for k in PATH_KINDS] + [Value("empty", '""')]


def overrides(f: Field, v: Value, paths: Paths) -> list[str]:
    """`--set` assignments applying `v` to `f` (path fixtures filled in)."""
    text = v.literal.replace("{path}", str(paths.entries[v.path_kind])) if v.path_kind else v.literal
    return [*f.setup, f"{f.key}={f.wrap.replace('VALUE', text) if f.wrap else text}"]


def readers(f: Field) -> tuple[str, ...]:
    return READERS[f.section]
