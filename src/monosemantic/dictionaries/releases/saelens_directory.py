"""SAELens pretrained releases: `release:sae_id` -> the Hugging Face folder holding that SAE.

SAELens names its published dictionaries by release and SAE id (`gpt2-small-res-jb` and
`blocks.8.hook_resid_pre`) in `pretrained_saes.yaml`, which ships inside the `sae-lens` package.
`load_dictionary("gpt2-small-res-jb:blocks.8.hook_resid_pre")` reads that directory (without
importing SAELens) and fetches `repo_id/path` from the hub. Releases stored in a layout we read
(SAELens' own, dictionary_learning's, and those `resolve.SAELENS_LAYOUTS` lists: Gemma Scope 2,
Llama Scope, Qwen Scope, circuit-tracer's per-layer files, Gemma Scope transcoders) resolve;
the others raise a clear error instead of loading wrong weights.
"""

from __future__ import annotations

import difflib
import importlib.util
from functools import lru_cache
from pathlib import Path
from typing import Any

from monosemantic.utils.errors import MonosemanticError

# `conversion_func` values whose files `load_dictionary` reads as they are.
READABLE = (None, "dictionary_learning_1")


def directory_file() -> Path | None:
    """`pretrained_saes.yaml` of the installed sae-lens package, or None."""
    spec = importlib.util.find_spec("sae_lens")
    if spec is None or not spec.submodule_search_locations:
        return None
    path = Path(next(iter(spec.submodule_search_locations))) / "pretrained_saes.yaml"
    return path if path.is_file() else None


@lru_cache(maxsize=4)
def _directory(path: Path) -> dict[str, Any]:
    import yaml

    return yaml.safe_load(path.read_text(encoding="utf-8")) or {}


def _nearest(word: str, options: list[str]) -> str:
    close = difflib.get_close_matches(word, options, n=3, cutoff=0.5)
    return f" (did you mean {', '.join(close)}?)" if close else ""


def resolve_release(
    spec: str, directory: Path | None = None, layouts: Any = READABLE
) -> tuple[str, dict[str, Any]]:
    """`release:sae_id` -> (`org/repo/path` for the hub, the release's entry). `directory`
    defaults to the installed sae-lens package's `pretrained_saes.yaml`; `layouts` holds the
    `conversion_func` values whose files we read."""
    release, sep, sae_id = spec.partition(":")
    if not sep or not release or not sae_id:
        raise MonosemanticError(
            f"{spec!r} is not a release id; write RELEASE:SAE_ID, e.g. gpt2-small-res-jb:blocks.8.hook_resid_pre"
        )
    directory = directory or directory_file()
    if directory is None:
        raise MonosemanticError(
            f"{spec} names a SAELens release; resolving it needs SAELens' directory of releases "
            "(pip install sae-lens), or give the hub folder itself as org/repo/path"
        )
    releases = _directory(directory)
    entry = releases.get(release)
    if entry is None:
        raise MonosemanticError(f"no SAELens release {release!r}{_nearest(release, list(releases))}")
    saes = {s["id"]: s for s in entry.get("saes", [])}
    sae = saes.get(sae_id)
    if sae is None:
        raise MonosemanticError(f"release {release} has no SAE {sae_id!r}{_nearest(sae_id, list(saes))}")
    convert = entry.get("conversion_func")
    if convert not in layouts:
        raise MonosemanticError(
            f"release {release} is stored in a layout SAELens converts with {convert!r}, which monosemantic "
            "does not read; load it with sae_lens (SAE.from_pretrained) and save_model() it to a folder, "
            "then load that folder"
        )
    return f"{entry['repo_id']}/{sae['path']}", entry
