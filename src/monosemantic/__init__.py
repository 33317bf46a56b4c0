"""monosemantic: sparse dictionary learning on language models, and circuit discovery with it.

Every CLI verb is a thin wrapper over a function here taking the same `Config` object, so
notebooks and shells run the same code. Imports are lazy: `import monosemantic` stays fast.
"""

from __future__ import annotations

import importlib
import sys
import types
from typing import Any

__version__ = "0.1.0"

_EXPORTS = {
    "Config": "monosemantic.config",
    "load_config": "monosemantic.config",
    "load_model": "monosemantic.lm.model",
    "train_lm": "monosemantic.lm.training",
    "harvest": "monosemantic.activations.harvest",
    "ActivationCache": "monosemantic.activations.cache",
    "load_dictionary": "monosemantic.dictionaries.io",
    "train": "monosemantic.train.trainer",
    "evaluate": "monosemantic.evaluate.run",
    "compare": "monosemantic.evaluate.compare",
    "analyze": "monosemantic.analyze.run",
    "explain": "monosemantic.explain.run",
    "export": "monosemantic.export.run",
    "steer": "monosemantic.steer.run",
    "attribute": "monosemantic.circuits.attribution",
    "circuit": "monosemantic.circuits.run",
    "SpliceModel": "monosemantic.circuits.splice",
    "SpliceCache": "monosemantic.circuits.splice",
    "show": "monosemantic.circuits.show",
    "plan": "monosemantic.train.plan",
}

__all__ = sorted(_EXPORTS)


def __getattr__(name: str) -> Any:
    if name in _EXPORTS:
        return getattr(importlib.import_module(_EXPORTS[name]), name)
    raise AttributeError(f"module 'monosemantic' has no attribute {name!r}")


class _Package(types.ModuleType):
    """The verbs win over stages of the same name: importing `monosemantic.train.trainer` binds the
    subpackage `train` on this module, which would hide the function `monosemantic.train` after
    its first use. (Stages stay importable by their dotted names: `from monosemantic.train import ...`.)"""

    def __getattribute__(self, name: str) -> Any:
        if name in _EXPORTS:
            return getattr(importlib.import_module(_EXPORTS[name]), name)
        return super().__getattribute__(name)


sys.modules[__name__].__class__ = _Package
