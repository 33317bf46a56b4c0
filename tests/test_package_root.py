"""The package root: verbs are functions, stages are modules, and neither hides the other."""

from __future__ import annotations

import importlib
import types

import monosemantic
from monosemantic.cli import verbs


def test_every_export_resolves_and_stages_stay_modules():
    for name in monosemantic.__all__:
        assert getattr(monosemantic, name) is not None, name
    for stage in ("training", "evaluation", "analysis", "explanation", "exports", "steering", "server"):
        module = importlib.import_module(f"monosemantic.{stage}")
        assert isinstance(module, types.ModuleType)
        assert getattr(monosemantic, stage) is module  # bound by the import, never shadowed
    assert sorted(monosemantic.__all__) == sorted(monosemantic._EXPORTS)
    # after every stage is imported, every CLI verb is still a function at the root (the verb list
    # comes from the typer app; `serve` and `demo` run a server and a script, not a function)
    for verb in verbs():
        if verb in ("serve", "demo"):
            continue
        name = {"lm train": "train_lm"}.get(verb, verb)
        assert name in monosemantic.__all__, f"CLI verb {verb!r} has no monosemantic.{name}"
        assert callable(getattr(monosemantic, name)) and not isinstance(
            getattr(monosemantic, name), types.ModuleType
        )
