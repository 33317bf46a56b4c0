"""One config line -> the local files of a dictionary (fetched from the hub only when needed).

The forms a line may take (`load_dictionary`, `evaluate.dictionary`, `circuit.dictionaries`, ...):

- a local folder or file;
- `RELEASE:ID`: a release name of ours (`catalog.py`: Gemma Scope 2), else one of SAELens'
  directory when `sae-lens` is installed (`gpt2-small-res-jb:blocks.8.hook_resid_pre`);
- a hub folder or file `org/repo/path/in/repo`, or `org/repo:path/in/repo` (Llamascopium's form);
- any of these with `#layer_N`: layer N of a per-layer transcoder set.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

from monosemantic.utils.errors import MonosemanticError
from monosemantic.utils.progress import console

from .build import ReleaseRef
from .catalog import lookup
from .hub import fetch

_LAYER = re.compile(r"^(?P<spec>.+)#layer_(?P<layer>\d+)$")

# SAELens `conversion_func` -> our layout name (None: SAELens' own layout, read by io.py)
SAELENS_LAYOUTS = {
    None: None,
    "dictionary_learning_1": None,
    "gemma_3": "gemma_scope_2",
    "llama_scope": "llama_scope",
    "qwen_scope": "qwen_scope",
    "gemma_2_transcoder": "gemma_2_transcoder",
    "mwhanna_transcoder": "circuit_tracer_file",
}


@dataclass(frozen=True)
class Located:
    """The local path of what a line names, where it came from, and the layer asked for."""

    local: Path
    ref: ReleaseRef | None
    layer: int | None = None


def split_layer(spec: str) -> tuple[str, int | None]:
    m = _LAYER.match(spec)
    return (m["spec"], int(m["layer"])) if m else (spec, None)


def is_remote(spec: str) -> bool:
    """Whether a line names something to fetch (a release or hub id) rather than a local path."""
    text = split_layer(str(spec))[0]
    if Path(text).expanduser().exists() or text.startswith((".", "/", "~")):
        return False
    return ":" in text or text.count("/") >= 1


def locate(spec: str | Path) -> Located:
    """Where the files of `spec` are on this machine, fetching them first for a remote name."""
    text, layer = split_layer(str(spec))
    path = Path(text).expanduser()
    if path.exists():
        return Located(path, None, layer)
    if text.startswith((".", "/", "~")) or not is_remote(text):
        raise MonosemanticError(
            f"no dictionary at {text}: give a checkpoint folder, a hub folder like org/repo[/sub/folder], "
            "or a release as RELEASE:ID (e.g. gemma-scope-2-1b-pt-res:layer_12_width_16k_l0_medium)"
        )
    ref = _reference(text)
    patterns = None
    if ref.layout and ref.layout.startswith("gemma_scope_2_clt:"):
        patterns = [f"{ref.path}/layer_*_{ref.layout.split(':', 1)[1]}/*"]
    local = fetch(text, str(ref.repo_id), ref.path, patterns=patterns)
    if ref.layout == "circuit_tracer_file":  # a per-layer file named alone: its config.yaml is at the root
        fetch(text, str(ref.repo_id), "config.yaml")
    return Located(local, ref, layer)


def _reference(text: str) -> ReleaseRef:
    left, sep, right = text.partition(":")
    if sep and "/" in left:  # org/repo:path
        return ReleaseRef(text, left, right.strip("/"))
    if sep:
        ref = lookup(left, right, text)
        return ref if ref is not None else _saelens(text)
    parts = text.strip("/").split("/")
    return ReleaseRef(text, "/".join(parts[:2]), "/".join(parts[2:]))


def _saelens(text: str) -> ReleaseRef:
    """A SAELens release id, through the directory in the installed sae-lens package."""
    from .saelens_directory import resolve_release

    hub_path, entry = resolve_release(text, layouts=SAELENS_LAYOUTS)
    parts = hub_path.split("/")
    kwargs = (entry.get("config_overrides") or {}).get("model_from_pretrained_kwargs")
    if kwargs:  # e.g. center_writing_weights: TransformerLens-transformed activations
        console.print(
            f"[yellow]note:[/] {text} was trained on activations of a model loaded with {kwargs}; "
            "monosemantic hooks the untransformed Hugging Face model",
            highlight=False,
        )
    layout = SAELENS_LAYOUTS[entry.get("conversion_func")]
    return ReleaseRef(text, "/".join(parts[:2]), "/".join(parts[2:]), entry.get("model"), layout)
