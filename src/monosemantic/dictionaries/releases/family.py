"""Which model family a release was trained on, and the one check that a loaded model matches it.

A release names its model by hub id (`google/gemma-3-1b-pt`, `Qwen/Qwen3-1.7B-Base`,
`gpt2-small`); `family_of_model` maps it to the family table's name (`lm/families.py`). Every
release reader records it as `metadata.model_family`. `check_family` refuses a dictionary whose
family is not the loaded model's: a Gemma 3 transcoder's `mlp.hook_in` is another tensor in a
Llama, so the numbers would mean nothing. `model.allow_foreign_model` (a name or tokenizer
difference, e.g. a base model's release on its instruction-tuned sibling) does not lift it.
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from monosemantic.utils.errors import ConfigError

# (pattern on the lower-cased model name, family), first match wins; None: no supported family.
_MODEL_FAMILIES: tuple[tuple[str, str | None], ...] = (
    (r"gemma-?3", "gemma3"),
    (r"gemma-?2", "gemma2"),
    (r"gemma", "gemma"),
    (r"qwen3\.5|qwen3-next", None),  # hybrid Gated DeltaNet layers: no family entry
    (r"qwen3.*-a\d+(\.\d+)?b", "qwen3_moe"),
    (r"qwen3", "qwen3"),
    (r"qwen2|qwen-?1\.5", "llama"),
    (r"mixtral", "mixtral"),
    (r"gpt-oss", "gpt_oss"),
    (r"olmo-?2", "olmo2"),
    (r"phi-?3", "phi3"),
    (r"llama|mistral|deepseek-r1-distill-llama", "llama"),
    (r"pythia|gpt-neox", "gpt_neox"),
    (r"(^|/)gpt2", "gpt2"),
)


def family_of_model(name: str | None) -> str | None:
    """The family (a `lm.families.FAMILY` key) of a model named by hub id, or None if unknown."""
    if not name:
        return None
    text = str(name).lower()
    for pattern, family in _MODEL_FAMILIES:
        if re.search(pattern, text):
            return family
    return None


def unsupported_model(name: str | None) -> bool:
    """True for models we recognise but cannot run (no family entry), e.g. Qwen 3.5."""
    text = str(name or "").lower()
    return any(re.search(p, text) and f is None for p, f in _MODEL_FAMILIES[:4])


def check_family(metadata: Mapping[str, Any], family: str | None, model: str | None, where: str) -> None:
    """Refuse (one line) a dictionary recorded as trained on another model family than `family`,
    the loaded model's. Dictionaries that record no family (ours record their model by name,
    which `dictionaries.provenance` compares) pass."""
    theirs = metadata.get("model_family")
    if not theirs or not family or theirs == family:
        return
    trained = metadata.get("model_name") or "another model"
    raise ConfigError(
        f"{where} was trained on {trained} (family {theirs}), but the model here, {model or 'the loaded model'}, "
        f"is family {family}; its sites are other tensors there. Load it with a {theirs} model "
        "(model.allow_foreign_model does not lift this)"
    )


def loaded_model_family(model: Any) -> tuple[str | None, str | None]:
    """(family, name) of the model a dictionary is about to be used with: our `SubjectModel`, a
    `transformers` model (its `config.model_type`), or a hub id / local folder (its `config.json`'s
    `model_type` when the folder has one, else the name's family)."""
    from monosemantic.lm.families import MODEL_TYPES

    if isinstance(getattr(model, "family", None), str):
        return model.family, getattr(model, "name", None)
    config = getattr(model, "config", None)
    if config is not None and getattr(config, "model_type", None):
        return MODEL_TYPES.get(config.model_type), getattr(config, "_name_or_path", None)
    if isinstance(model, str | Path):
        cfg_file = Path(model).expanduser() / "config.json"
        if cfg_file.is_file():
            try:
                model_type = json.loads(cfg_file.read_text(encoding="utf-8")).get("model_type")
            except (OSError, ValueError):
                model_type = None
            if model_type:
                return MODEL_TYPES.get(str(model_type)), str(model)
        return family_of_model(str(model)), str(model)
    raise ConfigError(
        f"model={type(model).__name__}: give the loaded model (monosemantic's or a transformers model) "
        "or its hub id / local folder"
    )


def check_model_family(metadata: Mapping[str, Any], model: Any, where: str) -> None:
    """`check_family` against a loaded model in any form `loaded_model_family` takes."""
    family, name = loaded_model_family(model)
    check_family(metadata, family, name, where)


def manifest_family(manifest: Mapping[str, Any]) -> str | None:
    """The family of the model an activation cache was harvested from (its `model_type`)."""
    from monosemantic.lm.families import MODEL_TYPES

    return MODEL_TYPES.get(str(manifest.get("model_type") or ""))
