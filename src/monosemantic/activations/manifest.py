"""The activation cache's `manifest.json`: what was harvested, how, and which shards are complete.

The manifest is the cache's only source of truth. A shard file exists on disk before it is listed
here, so a reader that trusts the manifest never sees a partial shard, and a killed harvest resumes
after the last listed one. Fields that decide the cache's contents are compared on resume
(`mismatch`), so a rerun with a different config cannot silently append incompatible shards.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from monosemantic.utils.errors import DataError
from monosemantic.utils.files import write_json_atomic
from monosemantic.utils.readers import read_json

FORMAT_VERSION = 1
MANIFEST = "manifest.json"

# Top-level fields that must agree between an existing cache and the config that resumes it.
RESUME_KEYS = ("model", "revision", "tokenizer", "dtype", "context_size", "prepend_bos", "data")
# Fields under "harvest" that change the shard layout or the numbers in it.
RESUME_HARVEST_KEYS = ("model_dtype", "shard_sequences", "target_sequences")


def shard_name(index: int) -> str:
    return f"shard-{index:05d}.safetensors"


def manifest_path(cache_dir: str | Path) -> Path:
    return Path(cache_dir) / MANIFEST


def read_manifest(cache_dir: str | Path) -> dict[str, Any]:
    """Load and sanity-check a manifest; every failure is one line naming the folder and the fix."""
    cache_dir = Path(cache_dir)
    if not cache_dir.exists():
        raise DataError(
            f"activation cache {str(cache_dir)!r} does not exist; run `monosemantic harvest CONFIG` "
            "to create it, or point data.activations at an existing cache"
        )
    if not cache_dir.is_dir():
        raise DataError(f"activation cache {str(cache_dir)!r} is a file, not a cache directory")
    path = manifest_path(cache_dir)
    if not path.is_file():
        raise DataError(
            f"{str(cache_dir)!r} has no {MANIFEST}, so it is not an activation cache; "
            "run `monosemantic harvest CONFIG` with harvest.out pointing at it"
        )
    manifest = read_json(path, "cache manifest", "delete the cache and harvest again")
    version = manifest.get("format_version") if isinstance(manifest, dict) else None
    if version != FORMAT_VERSION:
        raise DataError(
            f"{path}: format_version {version!r} is not supported (this version reads {FORMAT_VERSION}); "
            "harvest the cache again"
        )
    for key in ("sites", "context_size", "shards", "dtype"):
        if key not in manifest:
            raise DataError(f"{path} lacks the field {key!r}; delete the cache and harvest again")
    return manifest


def write_manifest(cache_dir: str | Path, manifest: dict[str, Any]) -> None:
    """Rewrite the whole manifest atomically (temp file + rename)."""
    write_json_atomic(manifest_path(cache_dir), manifest)


def mismatch(existing: dict[str, Any], wanted: dict[str, Any]) -> str | None:
    """Describe the first field where an existing cache differs from the one a config asks for."""
    if existing.get("hook_names") != wanted.get("hook_names"):
        return (
            "the cache predates TransformerLens-exact hook names (its blocks.L.hook_mlp_in is today's "
            "blocks.L.mlp.hook_in); finish it into a new harvest.out"
        )
    pairs = [(k, existing.get(k), wanted.get(k)) for k in RESUME_KEYS]
    pairs.append(("sites", list(existing.get("sites", {})), list(wanted.get("sites", {}))))
    old_s, new_s = existing.get("eval_sequences") or {}, wanted.get("eval_sequences") or {}
    pairs += [(f"eval_sequences.{k}", old_s.get(k), new_s.get(k)) for k in ("seed", "fraction")]
    old_h, new_h = existing.get("harvest", {}), wanted.get("harvest", {})
    pairs += [(f"harvest.{k}", old_h.get(k), new_h.get(k)) for k in RESUME_HARVEST_KEYS]
    for key, old, new in pairs:
        if old != new:
            return f"{key} is {old!r} in the cache but {new!r} in the config"
    return None
