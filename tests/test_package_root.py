"""The package root: verbs are functions, stages are modules, and neither hides the other."""

from __future__ import annotations

import importlib
import types

import monosemantic


def test_every_export_resolves_and_stages_stay_modules():
    for name in monosemantic.__all__:
        assert getattr(monosemantic, name) is not None, name
    for stage in ("training", "evaluation", "analysis", "explanation", "exports", "steering", "server"):
        module = importlib.import_module(f"monosemantic.{stage}")
        assert isinstance(module, types.ModuleType)
        assert getattr(monosemantic, stage) is module  # bound by the import, never shadowed
    assert sorted(monosemantic.__all__) == sorted(monosemantic._EXPORTS)
    # after every stage is imported, the verbs are still the functions
    for verb in ("train", "evaluate", "analyze", "explain", "export", "steer", "plan", "compare"):
        assert callable(getattr(monosemantic, verb)) and not isinstance(
            getattr(monosemantic, verb), types.ModuleType
        )
