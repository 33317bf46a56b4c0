"""`Site`: a hook-site string parsed once into its parts (layers, hook, model of a pair).

The site mini-language, everywhere a site is named (configs, cfg.json, the activation stream):

- `blocks.3.hook_resid_post`, `blocks.0.ln2.hook_normalized`, `blocks.1.attn.hook_z`: one block
  site (layer 3, hook `hook_resid_post`); `hook_embed`, `ln_final.hook_normalized`, or any other
  name without a `blocks.N.` prefix (a tensor file's stream name): one site outside the blocks.
- `blocks.*.mlp.hook_in`: that hook in every layer (expanded against the cache or `layers`);
  `blocks.{0,1,3}.mlp.hook_in`: those layers, read concatenated (the stream key of a multi-site
  dictionary).
- `b:blocks.2.hook_resid_post`: model B's site in a model-diffing pair (`a:` is model A, the
  default); `{a,b}:blocks.2.hook_resid_post`: that site of both models, concatenated A then B.

Which hook names exist is the model's business (`lm/families.py`): a `Site` parses structure only;
the cache (`ActivationCache.check_sites`) and the model (`SubjectModel.check_sites`) refuse a
concrete name they lack, naming the nearest ones, before any long computation.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

from monosemantic.utils.errors import ConfigError

MODEL_B = "b:"  # prefix of model B's sites in a paired stream

_BLOCKS = re.compile(r"^blocks\.(\*|\d+|\{[0-9, ]*\})\.(\S+)$")
_PREFIX = re.compile(r"^(\{a,b\}|a|b):(.+)$")


class SiteError(ConfigError, ValueError):
    """A site string that does not parse or is not available (one line saying what is wrong); a
    ValueError too, so pydantic reports it against the config key."""


@dataclass(frozen=True)
class Site:
    """A parsed site. `layers` is None for `blocks.*` (not yet expanded), () outside the blocks;
    `models` is ("a",), ("b",) or ("a", "b") for a pair."""

    hook: str
    layers: tuple[int, ...] | None = ()
    models: tuple[str, ...] = ("a",)
    block: bool = True  # a `blocks.N.` site (False: `hook_embed`, a tensor file's stream name, ...)
    listed: bool = False  # written as a layer list `blocks.{..}` (a stream key), even of one layer

    # ---- parsing ------------------------------------------------------------------------------
    @classmethod
    def parse(cls, text: str | Site) -> Site:
        if isinstance(text, Site):
            return text
        if not isinstance(text, str) or not text.strip() or text != text.strip():
            raise SiteError(f"site {text!r} is not a site name like blocks.3.hook_resid_post")
        models: tuple[str, ...] = ("a",)
        rest = text
        if (p := _PREFIX.match(text)) is not None:
            models = ("a", "b") if p.group(1) == "{a,b}" else (p.group(1),)
            rest = p.group(2)
        m = _BLOCKS.match(rest)
        if m is None:
            if "*" in rest or "{" in rest or rest.startswith("blocks."):
                raise SiteError(
                    f"site {text!r}: write one layer (blocks.3.hook_X), every layer (blocks.*.hook_X) "
                    "or a list (blocks.{0,1}.hook_X), followed by the hook name"
                )
            if models == ("a", "b"):
                raise SiteError(
                    f"site {text!r}: a model pair names one block site, like {{a,b}}:blocks.2.hook_X"
                )
            return cls(rest, (), models, block=False)
        spec, hook = m.group(1), m.group(2)
        if "*" in hook or "{" in hook or hook.startswith("blocks."):
            raise SiteError(f"site {text!r}: the hook name after the layer cannot hold a glob")
        if spec == "*":
            layers = None
        elif spec.startswith("{"):
            items = [v.strip() for v in spec[1:-1].split(",")]
            if not items or not all(v.isdigit() for v in items):
                raise SiteError(f"site {text!r}: list layers as blocks.{{0,1,2}}.{hook}")
            layers = tuple(int(v) for v in items)
            if len(set(layers)) != len(layers):
                raise SiteError(f"site {text!r} lists a layer twice")
        else:
            layers = (int(spec),)
        if len(models) > 1 and (layers is None or len(layers) != 1):
            raise SiteError(f"site {text!r}: a model pair names one layer, like {{a,b}}:blocks.2.{hook}")
        return cls(hook, layers, models, listed=spec.startswith("{"))

    # ---- structure ----------------------------------------------------------------------------
    @property
    def is_glob(self) -> bool:
        """`blocks.*.hook_X`: every layer, not yet expanded."""
        return self.layers is None

    @property
    def is_pair(self) -> bool:
        return len(self.models) > 1

    @property
    def is_group(self) -> bool:
        """Several sites read concatenated (a glob, a layer list, a model pair), or a glob."""
        return self.layers is None or self.listed or len(self.layers) * len(self.models) > 1

    @property
    def layer(self) -> int | None:
        """The layer of one concrete site (None outside the blocks)."""
        if self.is_group:
            raise SiteError(f"{self} names several sites; it has no single layer")
        return self.layers[0] if self.layers else None

    @property
    def model(self) -> str:
        if self.is_pair:
            raise SiteError(f"{self} names a site of two models")
        return self.models[0]

    def sites(self) -> list[Site]:
        """The concrete sites, in the order their activations are concatenated (layers ascending as
        listed; for a pair model A's, then model B's)."""
        if self.layers is None:
            raise SiteError(f"{self} is a glob; expand it over layers first (`with_layers`)")
        if not self.block:
            return [self]
        return [Site(self.hook, (layer,), (m,)) for m in self.models for layer in self.layers]

    def layer_list(self) -> list[int]:
        """One layer per concrete site (a pair lists its layer twice)."""
        return [s.layers[0] for s in self.sites()] if self.block else []

    def with_layers(self, layers: Iterable[int]) -> Site:
        """A glob over `layers` (`blocks.*.hook_X` -> `blocks.{0,1}.hook_X`); other sites as they are."""
        if self.layers is not None:
            return self
        layers = tuple(int(v) for v in layers)
        if not layers:
            raise SiteError(f"{self}: no layers to expand over")
        return Site(self.hook, layers, self.models, listed=True)

    def expand(self, available: Iterable[str | Site] = ()) -> Site:
        """A glob over every layer of `available` that has its hook (layer order); else itself."""
        if self.layers is not None:
            return self
        found = sorted(
            {
                s.layers[0]
                for s in map(Site.parse, available)
                if s.block and s.hook == self.hook and s.models == self.models and s.layers and not s.is_group
            }
        )
        if not found:
            raise SiteError(
                f"site {self}: no blocks.N.{self.hook} among the available sites; harvest them "
                "([sites].names) or list dictionary.layers"
            )
        return self.with_layers(found)

    def in_model(self, model: str) -> Site:
        """This site of model `model` ("a" or "b")."""
        return Site(self.hook, self.layers, (model,), self.block, self.listed)

    # ---- names --------------------------------------------------------------------------------
    def __str__(self) -> str:
        prefix = {("a",): "", ("b",): MODEL_B, ("a", "b"): "{a,b}:"}[self.models]
        if not self.block:
            return prefix + self.hook
        if self.layers is None:
            spec = "*"
        elif len(self.layers) == 1 and not self.listed:
            spec = str(self.layers[0])
        else:
            spec = "{" + ",".join(map(str, self.layers)) + "}"
        return f"{prefix}blocks.{spec}.{self.hook}"

    @property
    def name(self) -> str:
        return str(self)

    @property
    def label(self) -> str:
        """A folder-safe spelling (`blocks.all.mlp.hook_in` for a glob)."""
        return str(self).replace("*", "all")


def site_groups(keys: Iterable[str]) -> dict[str, list[str]]:
    """Each key that names a site group -> its concrete sites, in concatenation order (what a
    stream serves concatenated for a multi-site dictionary)."""
    parsed = {k: Site.parse(k) for k in keys}
    return {k: [str(s) for s in site.sites()] for k, site in parsed.items() if site.is_group}


def concrete_sites(keys: Iterable[str]) -> list[str]:
    """The concrete sites behind `keys` (groups expanded), each once, in order."""
    keys = list(keys)
    groups = site_groups(keys)
    return list(dict.fromkeys(c for k in keys for c in groups.get(k, [k])))


def site_group(names: Sequence[str | Site]) -> Site:
    """The site group that lists `names` (one hook over several layers, or one site of both models):
    the inverse of `Site.sites()`."""
    sites = [Site.parse(n) for n in names]
    if not sites or any(s.is_group or not s.block for s in sites) or len({s.hook for s in sites}) > 1:
        raise SiteError(f"{[str(s) for s in sites]} are not one hook over several layers")
    layers = tuple(s.layers[0] for s in sites)
    models = tuple(s.models[0] for s in sites)
    if models == ("a", "b") and layers[0] == layers[1]:
        return Site(sites[0].hook, layers[:1], models)
    if set(models) != {"a"}:
        raise SiteError(f"{[str(s) for s in sites]}: list one model's sites, or one site of models a and b")
    return Site(sites[0].hook, layers, ("a",), listed=True)


def parse_site(text: str | Site) -> Site:
    """`Site.parse`, raising `SiteError` (a ValueError) with one line on a malformed name."""
    return Site.parse(text)


def site_key(layers: Sequence[int], hook: str) -> str:
    """The stream key of `hook` over `layers`: `blocks.{0,1}.hook_X`, braces even for one layer."""
    return "blocks.{" + ",".join(map(str, layers)) + "}." + hook
