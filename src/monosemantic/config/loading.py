"""TOML loading, `--set a.b=c` overrides, and one-line error messages naming the nearest valid key."""

from __future__ import annotations

import difflib
from pathlib import Path
from typing import Any

import tomllib
from pydantic import BaseModel, ValidationError

from monosemantic.utils.errors import ConfigError

from .dictionary import DictionaryConfig, registered_configs
from .root import Config


def parse_value(text: str) -> Any:
    """A TOML literal (`3e-4`, `true`, `[1, 2]`, `"x"`), or the bare string when it is not one."""
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


def _model_at(loc: tuple[Any, ...]) -> type[BaseModel] | None:
    """The pydantic model class that owns the field at `loc` (skipping list indices)."""
    model: type[BaseModel] = Config
    for part in loc[:-1]:
        if isinstance(part, int):
            continue
        field = model.model_fields.get(str(part))
        if field is None:
            return None
        ann = field.annotation
        candidates = [ann, *getattr(ann, "__args__", ())]
        for c in list(candidates):
            candidates.extend(getattr(c, "__args__", ()))
        nxt = next((c for c in candidates if isinstance(c, type) and issubclass(c, BaseModel)), None)
        if nxt is None:
            return None
        model = nxt
    return model


def _describe(err: dict[str, Any]) -> str:
    loc = tuple(p for p in err["loc"] if not (isinstance(p, str) and p.startswith("function-")))
    where = ".".join(str(p) for p in loc) or "config"
    if err["type"] == "extra_forbidden":
        owner = _model_at(loc)
        valid = sorted(owner.model_fields) if owner else []
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
    return (
        f"{where}: {msg} (got {err.get('input')!r})"
        if "input" in err and not isinstance(err["input"], dict)
        else f"{where}: {msg}"
    )


def validation_message(error: ValidationError) -> str:
    """A pydantic error as one line: each problem named with its key, joined by '; '."""
    return "invalid config: " + "; ".join(_describe(err) for err in error.errors())


def validate_config(data: dict[str, Any]) -> Config:
    try:
        return Config.model_validate(data)
    except ValidationError as e:
        raise ConfigError(validation_message(e)) from None


def read_toml(path: str | Path) -> dict[str, Any]:
    path = Path(path)
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
