"""[serve]: the web viewer, its live endpoints and their limits."""

from __future__ import annotations

import ipaddress
import re
from pathlib import Path
from typing import ClassVar
from urllib.parse import urlsplit

from pydantic import Field, field_validator

from .base import Section
from .ranges import Seconds

HOSTNAME = re.compile(
    r"(?=.{1,253}$)[A-Za-z0-9]([A-Za-z0-9-]{0,61}[A-Za-z0-9])?(\.[A-Za-z0-9]([A-Za-z0-9-]{0,61}[A-Za-z0-9])?)*"
)


def _is_ip(text: str) -> bool:
    try:
        ipaddress.ip_address(text)
    except ValueError:
        return False
    return True


class ServeConfig(Section):
    INHERITED: ClassVar[tuple[str, ...]] = ("device",)

    db: Path | None = Field(None, description="Feature store; default [analyze].out/features.db.")
    host: str = Field("127.0.0.1", description="Bind address; any non-loopback host needs serve.token.")
    allowed_hosts: list[str] = Field(
        default_factory=list,
        description="Host names requests may address besides the loopback names and serve.host (the "
        "name clients use for this machine); '*' allows any. Others get 400 (DNS rebinding).",
    )
    cors_origins: list[str] = Field(
        default_factory=list,
        description="Web origins (https://notebook.example.org) allowed to call the API from their "
        "pages; empty: cross-origin requests are refused.",
    )
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

    @field_validator("host")
    @classmethod
    def _host(cls, host: str) -> str:
        if host in ("0.0.0.0", "::", "localhost") or _is_ip(host) or HOSTNAME.fullmatch(host):
            return host
        raise ValueError(
            f"{host!r} is not an IP address or a host name; bind to 127.0.0.1 (this machine), 0.0.0.0 "
            "(every interface) or a name such as myhost.example.org"
        )

    @field_validator("cors_origins")
    @classmethod
    def _origins(cls, origins: list[str]) -> list[str]:
        for origin in origins:
            parts = urlsplit(origin)
            if parts.scheme not in ("http", "https") or not parts.netloc or parts.path not in ("", "/"):
                raise ValueError(f"{origin!r} is not a web origin like https://example.org:8888")
        return origins

    busy_timeout_s: float = Field(
        0.5,
        gt=0,
        le=60,
        description="How long a read waits on a store another process locks before answering 503.",
    )
