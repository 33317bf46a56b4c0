"""The storyworld LM that ships inside the package (trained by `monosemantic lm train`)."""

from __future__ import annotations

from pathlib import Path

from monosemantic.utils.errors import MonosemanticError

SHIPPED_DIR = Path(__file__).parent / "shipped" / "storyworld-lm"


def shipped_model_path() -> Path:
    """Folder of the shipped storyworld LM (save_pretrained layout + tokenizer + README.md)."""
    if not (SHIPPED_DIR / "config.json").exists():
        raise MonosemanticError(
            f"the shipped storyworld LM is missing from {SHIPPED_DIR}; reinstall monosemantic or "
            "rebuild it with `monosemantic lm train configs/storyworld-lm.toml`"
        )
    return SHIPPED_DIR
