"""[dictionary] / [[dictionaries]]: what to train. `[dictionary]` also supplies defaults to each sweep entry.

This section holds the keys every dictionary has. Each architecture adds its own keys in a subclass
of `DictionaryConfig` that lives beside its `Dictionary` class and is registered with it (SAELens's
pattern: `JumpReLUConfig` in `dictionaries/jumprelu.py`). A section is validated against its
architecture's class, so a key of another architecture is refused in one line that names the key
and the architecture; nothing is dropped.

The config stage comes before the dictionaries stage, so it keeps the registry the architectures
fill. The first lookup of a name that is not registered yet imports the built-in architectures
by module name (`BUILTIN`): the one place where this stage reaches a later one, as a plugin
registry does; `DictionaryConfig(architecture=...)` and `model_validate` return the subclass.
"""

from __future__ import annotations

import difflib
import importlib
from typing import Annotated, Any, ClassVar

from pydantic import BeforeValidator, Field, SerializeAsAny, model_validator

from monosemantic.utils.progress import console

from .base import Section
from .site import Site, SiteError

BUILTIN = "monosemantic.dictionaries.registry"  # importing it registers every built-in architecture
DEFAULT_ARCHITECTURE = "topk"

_CONFIGS: dict[str, type[DictionaryConfig]] = {}


class DictionaryConfig(Section):
    """The keys every dictionary has; `architecture` picks the subclass that adds its own."""

    # Keys of this section that an architecture does not take (a CLT has no skip path): setting
    # one is refused in one line naming it and the architecture.
    REFUSED: ClassVar[frozenset[str]] = frozenset()

    architecture: str = Field(
        DEFAULT_ARCHITECTURE,
        description="A registered architecture: relu | topk | batchtopk | jumprelu | gated | matryoshka; "
        "clt (cross-layer transcoder) | crosscoder (acausal, one latent space over several sites) with "
        "`activation`; fitted baselines pca | ica | random (d_sae/2 directions) | neurons (an MLP's own "
        "units, mlp_in -> mlp_out), where k is optional: keep each token's k largest",
    )
    d_sae: int | None = Field(
        None, gt=0, description="Number of latents (per layer for a clt); or give `expansion`."
    )
    expansion: int | None = Field(None, gt=0, description="d_sae = expansion x d_in (per layer for a clt).")
    decoder_init_norm: float | None = Field(
        None,
        gt=0,
        description="Initial decoder row norm. Default 0.1 where rows are free (jumprelu, decoder-norm-weighted "
        "L1), else 1.",
    )
    site: str | None = Field(None, description="Input hook site; default the first of [sites].names.")
    site_out: str | None = Field(None, description="Output hook site: set it to make a transcoder.")
    layers: list[int] | None = Field(
        None,
        description="Layers a `blocks.*` site expands over (default every layer the cache holds): "
        '`architecture = "clt"` with `site = "blocks.*.mlp.hook_in"` and `site_out = "blocks.*.hook_mlp_out"`, '
        '`architecture = "crosscoder"` with `site = "blocks.*.hook_resid_post"`.',
    )
    skip: bool = Field(False, description="Skip transcoder: add a linear W_skip path from input to output.")
    target_l0: float | None = Field(None, gt=0, description="Tune the sparsity coefficient to reach this L0.")
    name: str | None = Field(None, description="Sub-folder name in a sweep; default built from what differs.")

    # ---- the architecture's class ---------------------------------------------------------------
    def __new__(cls, *args: Any, **data: Any) -> DictionaryConfig:
        """`DictionaryConfig(architecture="jumprelu", ...)` builds a `JumpReLUConfig`."""
        if cls is DictionaryConfig:
            data = legacy_multi_site(data)
            cls = architecture_config(str(data.get("architecture", DEFAULT_ARCHITECTURE)))
        return super().__new__(cls)

    def __init__(self, **data: Any) -> None:
        """Python callers may pass None for a key the architecture lacks (`k=None` to a relu): unset."""
        data = legacy_multi_site(data)
        super().__init__(**{k: v for k, v in data.items() if v is not None or k in type(self).model_fields})

    @classmethod
    def model_validate(cls, obj: Any, **kwargs: Any) -> DictionaryConfig:  # type: ignore[override]
        if cls is DictionaryConfig and isinstance(obj, dict):
            return dictionary_section(obj)
        return super().model_validate(obj, **kwargs)

    @classmethod
    def applicable(cls, data: dict[str, Any]) -> set[str]:
        """The keys this architecture takes, given the section (a CLT's depend on its activation)."""
        return set(cls.model_fields) - cls.REFUSED

    @classmethod
    def from_saved(cls, values: dict[str, Any]) -> DictionaryConfig:
        """The settings recorded in a cfg.json (every architecture's keys, as older versions wrote
        them): only the keys that apply, None meaning the default."""
        keep = cls.applicable(values)
        data = {k: v for k, v in values.items() if k in keep and v is not None and k in cls.model_fields}
        return cls.model_validate({**data, "architecture": values["architecture"]})

    def name_parts(self) -> list[str]:
        """What names the architecture in a sweep folder (`topk-k32`): its name, plus what it
        needs to be told apart (k, where the architecture has it)."""
        return [self.architecture]

    @property
    def input_site(self) -> Site | None:
        return Site.parse(self.site) if self.site is not None else None

    @property
    def output_site(self) -> Site | None:
        return Site.parse(self.site_out) if self.site_out is not None else None

    # ---- checks ------------------------------------------------------------------------------
    @model_validator(mode="after")
    def _check(self) -> DictionaryConfig:
        self._own_name()
        if self.d_sae is not None and self.expansion is not None:
            raise ValueError("give either d_sae or expansion, not both")
        refused = sorted(k for k in self.model_fields_set & self.REFUSED if self.differs(k))
        if refused:
            raise ValueError(f"{refused[0]} does not apply to architecture {self.architecture!r}; remove it")
        try:
            sites = [Site.parse(s) for s in (self.site, self.site_out) if s is not None]
        except SiteError as e:
            raise ValueError(str(e)) from None
        if self.layers is not None and not any(s.is_glob for s in sites):
            raise ValueError("layers only applies to a layer-glob site like blocks.*.mlp.hook_in")
        if self.skip and self.site_out is None:
            raise ValueError("skip = true needs site_out (a skip transcoder maps site -> site_out)")
        self.check_sites(*sites)
        return self

    def fill(self, **values: Any) -> None:
        """Defaults the architecture computes from shapes when it is built (aux_k, decoder_init_norm):
        set as they are, not as user settings (no re-validation, not in `model_fields_set`)."""
        for key, value in values.items():
            if key not in type(self).model_fields:
                raise AttributeError(f"{type(self).__name__} has no key {key!r}")
            object.__setattr__(self, key, value)

    def differs(self, key: str) -> bool:
        """Whether `key` holds something other than its default (setting a default is harmless)."""
        return getattr(self, key) != type(self).model_fields[key].get_default(call_default_factory=True)

    def _own_name(self) -> None:
        """`architecture` names this class's registration (filled in when a subclass is built directly)."""
        names = [n for n, c in _CONFIGS.items() if c is type(self)]
        if not names or self.architecture in names:
            return
        if "architecture" in self.model_fields_set or len(names) > 1:
            raise ValueError(
                f"architecture {self.architecture!r} is not {type(self).__name__}'s ({', '.join(names)})"
            )
        object.__setattr__(self, "architecture", names[0])

    def check_sites(self, *sites: Site) -> None:
        """Single-site architectures read one site: a glob or a model pair belongs to a clt or crosscoder."""
        group = next((s for s in sites if s.is_group), None)
        if group is not None:
            raise ValueError(
                f'site {str(group)!r} names several sites; set architecture = "clt" (with site_out) or '
                f'"crosscoder" (without) to read them with one dictionary, or give one site'
            )


def register_config(name: str, cls: type[DictionaryConfig]) -> None:
    """Make `cls` the config class of architecture `name` (called by `register_dictionary`)."""
    if not (isinstance(cls, type) and issubclass(cls, DictionaryConfig)):
        raise TypeError(f"the config of architecture {name!r} must subclass DictionaryConfig")
    _CONFIGS[name] = cls


def registered_configs() -> dict[str, type[DictionaryConfig]]:
    """Every architecture's config class by name (the built-in ones loaded first)."""
    _load_builtins()
    return dict(_CONFIGS)


def _load_builtins() -> None:
    importlib.import_module(BUILTIN)


def architecture_config(name: str) -> type[DictionaryConfig]:
    """The config class of architecture `name`, or one line naming the registered ones."""
    if name not in _CONFIGS:
        _load_builtins()
    if name not in _CONFIGS:
        close = difflib.get_close_matches(name, list(_CONFIGS), n=1, cutoff=0.6)
        hint = f" (did you mean {close[0]!r}?)" if close else ""
        raise ValueError(
            f"dictionary.architecture {name!r} is unknown{hint}; use one of {', '.join(sorted(_CONFIGS))}"
        )
    return _CONFIGS[name]


# ---- the section as written -----------------------------------------------------------------------
MULTI_SITE_ACTIVATIONS = ("relu", "jumprelu", "topk", "batchtopk")
_noted: set[str] = set()


def legacy_multi_site(data: dict[str, Any]) -> dict[str, Any]:
    """The spelling before `architecture = "clt"`: an activation name with a layer-glob site meant
    a CLT (with site_out) or a crosscoder (without). Accepted, with a one-line note of the new one."""
    arch = data.get("architecture", DEFAULT_ARCHITECTURE)
    site = data.get("site")
    if arch not in MULTI_SITE_ACTIVATIONS or not isinstance(site, str):
        return data
    try:
        if not Site.parse(site).is_group:
            return data
    except SiteError:
        return data
    out = data.get("site_out")
    kind = "clt" if out is not None and out != site else "crosscoder"
    new = f'architecture = "{kind}", activation = "{arch}"'
    if new + site not in _noted:
        _noted.add(new + site)
        console.print(
            f"[yellow]note:[/] dictionary with site {site!r} and architecture {arch!r} is read as {new}; "
            "write that instead",
            highlight=False,
        )
    return {**data, "architecture": kind, "activation": arch}


def dictionary_section(value: Any) -> Any:
    """A `[dictionary]` table as its architecture's config class (pydantic then reports the
    class's own errors with their keys)."""
    if not isinstance(value, dict):
        return value
    data = legacy_multi_site(value)
    name = data.get("architecture", DEFAULT_ARCHITECTURE)
    if not isinstance(name, str):
        raise ValueError(f"architecture must be a name, got {name!r}")
    cls = architecture_config(name)
    others = {k for c in _CONFIGS.values() for k in c.model_fields}
    for key in data:  # the class's own validators word the refusal of keys it has but does not take
        if key not in cls.model_fields and key in others:
            owners = sorted(n for n, c in _CONFIGS.items() if key in c.model_fields)
            where = f" (it is a setting of {', '.join(owners[:4])})" if owners else ""
            raise ValueError(f"{key} does not apply to architecture {name!r}{where}; remove it")
    return cls.model_validate(data)


def sweep_entry(defaults: dict[str, Any], entry: dict[str, Any]) -> dict[str, Any]:
    """A sweep entry with `[dictionary]`'s defaults, each default kept only where the entry's
    architecture takes that key (a `k` default does not reach a relu entry); a default no
    architecture knows stays, so its typo is reported."""
    merged = {**defaults, **entry}
    try:
        cls = architecture_config(str(legacy_multi_site(merged).get("architecture", DEFAULT_ARCHITECTURE)))
    except ValueError:
        return merged
    takes = cls.applicable(legacy_multi_site(merged))
    known = {k for c in _CONFIGS.values() for k in c.model_fields}
    return {k: v for k, v in merged.items() if k in entry or k in takes or k not in known}


# The type of a `[dictionary]` field: validated as its architecture's class, dumped with its keys.
DictionarySection = Annotated[SerializeAsAny[DictionaryConfig], BeforeValidator(dictionary_section)]
