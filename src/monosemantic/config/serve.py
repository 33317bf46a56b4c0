"""[serve]: the web viewer, its live endpoints and their limits."""

from __future__ import annotations

from pathlib import Path
from typing import ClassVar

from pydantic import Field

from .base import Section
from .ranges import Seconds


class ServeConfig(Section):
    INHERITED: ClassVar[tuple[str, ...]] = ("device",)

    db: Path | None = Field(None, description="Feature store; default [analyze].out/features.db.")
    host: str = Field("127.0.0.1", description="Bind address; any non-loopback host needs serve.token.")
    port: int = Field(8765, gt=0, lt=65536, description="Port to listen on.")
    token: str | None = Field(
        None, min_length=16, description="Bearer token every request must carry (required off localhost)."
    )
    device: str | None = Field(
        None, description="Device of the live model and dictionaries (default: root device)."
    )
    queue_size: int = Field(
        4, ge=1, le=1000, description="Live jobs waiting beyond the running one; more get 429."
    )
    max_text_chars: int = Field(
        2000, ge=1, le=100_000, description="Longest text or prompt a live request may send."
    )
    max_new_tokens: int = Field(
        64, ge=1, le=4096, description="Most tokens one steering request may generate."
    )
    job_timeout_s: Seconds = Field(
        120.0, description="How long a request waits for its activations or steering."
    )
    busy_timeout_s: float = Field(
        0.5,
        gt=0,
        le=60,
        description="How long a read waits on a store another process locks before answering 503.",
    )
