"""circuits stage: replacement model, attribution graphs, pruning, faithfulness, interventions.

`attribute(model, dictionaries, prompt)` builds a graph; `prune`, `graph_scores` and
`ablation_faithfulness` judge it; `circuit(cfg)` (the CLI verb) writes graph.json, scores.json and
a static viewer. Submodules are imported lazily so `import monosemantic.circuits` stays cheap.
"""

from __future__ import annotations

import importlib
from typing import Any

_EXPORTS = {
    "ReplacementModel": "replacement",
    "attribute": "attribution",
    "Graph": "attribution",
    "prune": "pruning",
    "graph_scores": "faithfulness",
    "ablation_faithfulness": "faithfulness",
    "contrastive": "contrastive",
    "ablation_discovery": "ablation_discovery",
    "contrastive_graph": "contrastive_graph",
    "ablation_graph": "ablation_graph",
    "Intervention": "interventions",
    "intervene": "interventions",
    "generate": "interventions",
    "graph_to_json": "graph_json",
    "write_viewer": "viewer",
    "circuit": "run",
}

__all__ = sorted(_EXPORTS)


def __getattr__(name: str) -> Any:
    if name in _EXPORTS:
        return getattr(importlib.import_module(f"{__name__}.{_EXPORTS[name]}"), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
