"""corpus stage: text sources (storyworld, local files, HF datasets) -> packed token windows.

storyworld stories carry the concepts that produced each word (`concepts.CONCEPTS`), so
windows over it come with per-token ground-truth labels.
"""

from __future__ import annotations

import importlib
from typing import Any

_EXPORTS = {
    "Story": "storyworld",
    "ConceptSpan": "storyworld",
    "generate_stories": "storyworld",
    "Concept": "concepts",
    "CONCEPTS": "concepts",
    "concept_index": "concepts",
    "label_tokens": "concepts",
    "iter_texts": "sources",
    "TokenWindows": "windows",
    "Window": "windows",
    "special_token_mask": "windows",
    "special_token_ids": "windows",
}

__all__ = sorted(_EXPORTS)


def __getattr__(name: str) -> Any:
    if name in _EXPORTS:
        return getattr(importlib.import_module(f"{__name__}.{_EXPORTS[name]}"), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
