"""monosemantic: sparse dictionary learning on language models, and circuit discovery with it.

Every CLI verb is a thin wrapper over a function here taking the same `Config` object, so
notebooks and shells run the same code. Imports are lazy: `import monosemantic` stays fast.
The verbs are functions (`monosemantic.train`) and the stages are noun packages
(`monosemantic.training`), so a name never means both.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:  # editors resolve the lazy names (circuit-tracer's pattern)
    from monosemantic.activations.cache import ActivationCache
    from monosemantic.activations.harvest import harvest
    from monosemantic.analysis.run import analyze
    from monosemantic.circuits.attribution import attribute
    from monosemantic.circuits.run import circuit
    from monosemantic.circuits.show import show
    from monosemantic.circuits.splice import SpliceCache, SpliceModel
    from monosemantic.config import Config, load_config
    from monosemantic.dictionaries.io import load_dictionary
    from monosemantic.evaluation.blind import blind, unblind
    from monosemantic.evaluation.compare import compare
    from monosemantic.evaluation.run import evaluate
    from monosemantic.explanation.run import explain
    from monosemantic.exports.run import export
    from monosemantic.lm.model import load_model
    from monosemantic.lm.training import train_lm
    from monosemantic.steering.run import steer
    from monosemantic.training.plan import plan
    from monosemantic.training.trainer import train

__version__ = "0.1.0"

_EXPORTS = {
    "Config": "monosemantic.config",
    "load_config": "monosemantic.config",
    "load_model": "monosemantic.lm.model",
    "train_lm": "monosemantic.lm.training",
    "harvest": "monosemantic.activations.harvest",
    "ActivationCache": "monosemantic.activations.cache",
    "load_dictionary": "monosemantic.dictionaries.io",
    "train": "monosemantic.training.trainer",
    "evaluate": "monosemantic.evaluation.run",
    "compare": "monosemantic.evaluation.compare",
    "blind": "monosemantic.evaluation.blind",
    "unblind": "monosemantic.evaluation.blind",
    "analyze": "monosemantic.analysis.run",
    "explain": "monosemantic.explanation.run",
    "export": "monosemantic.exports.run",
    "steer": "monosemantic.steering.run",
    "attribute": "monosemantic.circuits.attribution",
    "circuit": "monosemantic.circuits.run",
    "SpliceModel": "monosemantic.circuits.splice",
    "SpliceCache": "monosemantic.circuits.splice",
    "show": "monosemantic.circuits.show",
    "plan": "monosemantic.training.plan",
}

__all__ = [
    "ActivationCache",
    "Config",
    "SpliceCache",
    "SpliceModel",
    "analyze",
    "attribute",
    "blind",
    "circuit",
    "compare",
    "evaluate",
    "explain",
    "export",
    "harvest",
    "load_config",
    "load_dictionary",
    "load_model",
    "plan",
    "show",
    "steer",
    "train",
    "train_lm",
    "unblind",
]  # what `from monosemantic import *` and editors see; equals the lazy table


def __getattr__(name: str) -> Any:
    if name in _EXPORTS:
        return getattr(importlib.import_module(_EXPORTS[name]), name)
    raise AttributeError(f"module 'monosemantic' has no attribute {name!r}")
