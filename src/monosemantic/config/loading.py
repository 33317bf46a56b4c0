"""TOML loading, `--set a.b=c` overrides, and one-line error messages naming the nearest valid key."""

from __future__ import annotations

import copy
import difflib
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import tomllib
from pydantic import BaseModel, ValidationError
from pydantic.fields import FieldInfo

from monosemantic.utils.errors import ConfigError
from monosemantic.utils.paths import path_problem

from .dictionary import DictionaryConfig, registered_configs
from .ranges import describe_range, leaf_number, submodels
from .root import Config


def parse_value(text: str) -> Any:
    """A TOML literal (`3e-4`, `true`, `[1, 2]`, `"x"`), `null` (None: unset an optional key, as a
    Python dict would), or the bare string when it is not one (`"null"` quoted is the string)."""
    if text == "null":
        return None
    try:
        return tomllib.loads(f"v = {text}")["v"]
    except tomllib.TOMLDecodeError:
        return text


def apply_override(data: dict[str, Any], assignment: str) -> None:
    """Apply `a.b.c=value` to nested dicts (numeric parts index into lists, e.g. dictionaries.0.k=32)."""
    if "=" not in assignment:
        raise ConfigError(f"override {assignment!r} must look like section.key=value (e.g. train.lr=1e-3)")
    path, _, raw = assignment.partition("=")
    keys = [k for k in path.strip().split(".") if k]
    if not keys:
        raise ConfigError(f"override {assignment!r} has no key before '='")
    node: Any = data
    for i, key in enumerate(keys[:-1]):
        if isinstance(node, list):
            if not key.isdigit() or int(key) >= len(node):
                raise ConfigError(
                    f"override {assignment!r}: {'.'.join(keys[: i + 1])} is not a valid list index"
                )
            node = node[int(key)]
        else:
            node = node.setdefault(key, {})
            if not isinstance(node, dict | list):
                raise ConfigError(
                    f"override {assignment!r}: {'.'.join(keys[: i + 1])} is a value, not a section"
                )
    last = keys[-1]
    if isinstance(node, list):
        if not last.isdigit() or int(last) >= len(node):
            raise ConfigError(f"override {assignment!r}: {last} is not a valid list index")
        node[int(last)] = parse_value(raw.strip())
    else:
        node[last] = parse_value(raw.strip())


def _walk(loc: tuple[Any, ...]) -> tuple[type[BaseModel], FieldInfo | None]:
    """(the config model that owns the field an error's `loc` ends at, that field): list and tuple
    indices are skipped, and the walk stops at the first field holding no config model (later parts
    index into its value); the field is None where `loc` names no field (an unknown key: the model
    is then the one it was given in)."""
    model: type[BaseModel] = Config
    for part in loc:
        if isinstance(part, int):
            continue
        field = model.model_fields.get(str(part))
        if field is None:
            return model, None
        nxt = submodels(field.annotation)
        if not nxt:
            return model, field
        model = nxt[0]
    return model, None


# pydantic error types that mean "not a number in the field's range"
NUMBER_ERRORS = {
    "greater_than", "greater_than_equal", "less_than", "less_than_equal", "finite_number",
    "int_parsing", "int_parsing_size", "int_from_float", "int_type", "float_parsing", "float_type",
    "value_error",
}  # fmt: skip


def _range_message(err: dict[str, Any], loc: tuple[Any, ...], where: str) -> str | None:
    """`train.lr must be a finite number > 0 (got -1)` for a number out of its declared range."""
    _, field = _walk(loc)
    leaf = leaf_number(field.annotation, field.metadata) if field is not None else None
    if leaf is None or err["type"] not in NUMBER_ERRORS:
        return None
    if err["type"] == "value_error" and "true or false" not in err["msg"]:
        return None
    return f"{where} must be {describe_range(*leaf)} (got {_shown(err.get('input'))})"


def _shown(value: Any) -> str:
    if isinstance(value, Path):
        return repr(str(value))
    if isinstance(value, bool):
        return str(value).lower()
    return "null" if value is None else repr(value)


def _describe(err: dict[str, Any]) -> str:
    loc = tuple(p for p in err["loc"] if not (isinstance(p, str) and p.startswith("function-")))
    where = ".".join(str(p) for p in loc) or "config"
    if err["type"] == "extra_forbidden":
        owner, _ = _walk(loc)
        valid = sorted(owner.model_fields)
        if owner is DictionaryConfig:  # a [dictionary] table: every architecture's keys
            valid = sorted({k for c in registered_configs().values() for k in c.model_fields})
        close = difflib.get_close_matches(str(loc[-1]), valid, n=1, cutoff=0.5)
        hint = (
            f"; did you mean '{close[0]}'?"
            if close
            else (f"; valid keys: {', '.join(valid)}" if valid else "")
        )
        return f"unknown key '{where}'{hint}"
    msg = err["msg"].removeprefix("Value error, ")
    if not loc:  # a whole-config check names its keys itself
        return msg
    if (ranged := _range_message(err, loc, where)) is not None:
        return ranged
    shown = _shown(err.get("input"))
    if "input" not in err or isinstance(err["input"], dict) or shown in msg:
        return f"{where}: {msg}"
    return f"{where}: {msg} (got {shown})"


def _section_of(title: str) -> tuple[str, ...]:
    """The key of the section whose model is named `title` (an assignment onto a section, as the
    CLI's `--features` does, reports its errors from the section's model, not from Config)."""
    for name, field in Config.model_fields.items():
        if any(m.__name__ == title for m in submodels(field.annotation)):
            return (name,)
    return ()


def validation_message(error: ValidationError) -> str:
    """A pydantic error as one line: each problem named with its key, joined by '; '."""
    prefix = () if error.title == Config.__name__ else _section_of(error.title)
    errors = [{**err, "loc": (*prefix, *err["loc"])} for err in error.errors()]
    return "invalid config: " + "; ".join(_describe(err) for err in errors)


def validate_config(data: dict[str, Any]) -> Config:
    try:
        return Config.model_validate(data)
    except ValidationError as e:
        raise ConfigError(validation_message(e)) from None


def read_toml(path: str | Path) -> dict[str, Any]:
    path = Path(path)
    if (problem := path_problem(path)) is not None:
        raise ConfigError(f"config {str(path)!r} {problem}; pass a TOML file such as configs/demo.toml")
    if path.is_dir():
        raise ConfigError(
            f"config {str(path)!r} is a folder, not a file; pass a TOML file such as configs/demo.toml"
        )
    if not path.is_file():
        raise ConfigError(
            f"config file {str(path)!r} not found; pass the path of a TOML file such as configs/demo.toml"
        )
    try:
        return tomllib.loads(path.read_text(encoding="utf-8"))
    except UnicodeDecodeError as e:
        raise ConfigError(
            f"config file {str(path)!r} is not UTF-8 text (byte {e.start}: {e.reason}); save it as UTF-8 TOML"
        ) from None
    except tomllib.TOMLDecodeError as e:
        raise ConfigError(f"{path}: not valid TOML ({e})") from None


def load_config(path: str | Path | None = None, overrides: list[str] | tuple[str, ...] = ()) -> Config:
    """Read a TOML config (or start from defaults), apply `a.b=c` overrides, validate."""
    data = read_toml(path) if path is not None else {}
    for assignment in overrides:
        apply_override(data, assignment)
    return validate_config(data)


# What the public verbs take (`monosemantic.train(...)`): see `as_config`.
ConfigLike = Config | str | Path | Mapping[str, Any]


def as_config(cfg: Any) -> Config:
    """What every public verb does with its first argument: a `Config` as is, a path to a TOML file
    (str or Path) loaded, a dict of sections validated like a TOML file. Anything else is a
    TypeError naming what is accepted."""
    if isinstance(cfg, Config):
        return cfg
    if isinstance(cfg, str | Path):
        return load_config(cfg)
    if isinstance(cfg, Mapping):
        return validate_config(copy.deepcopy(dict(cfg)))
    raise TypeError(
        f"expected a monosemantic.Config, a path to a TOML config file, or a dict of config sections; "
        f"got {type(cfg).__name__}"
    )
