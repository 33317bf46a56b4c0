"""[serve]: the web viewer."""

from __future__ import annotations

from pathlib import Path

from pydantic import Field

from .base import Section


class ServeConfig(Section):
    db: Path | None = Field(None, description="Feature store; default [analyze].out/features.db.")
    host: str = "127.0.0.1"
    port: int = Field(8765, gt=0, lt=65536)
