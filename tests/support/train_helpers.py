"""Synthetic superposition data: known sparse features planted in a low-dimensional space."""

from __future__ import annotations

from typing import Any

import torch

from monosemantic.config import Config


class PlantedStream:
    """Endless seeded batches x = sum_i a_i D_i with sparse a (and y = x M for transcoders).

    Batch i depends only on (seed, i), so `state_dict` is just the batch counter: an exact resume.
    """

    def __init__(
        self,
        d: int = 32,
        n_features: int = 64,
        batch_size: int = 256,
        p_active: float = 0.04,
        seed: int = 0,
        site: str = "site",
        site_out: str | None = None,
        d_out: int | None = None,
    ) -> None:
        g = torch.Generator().manual_seed(1234)
        self.directions = torch.nn.functional.normalize(torch.randn(n_features, d, generator=g), dim=1)
        self.map = torch.randn(d, d_out or d, generator=g) / d**0.5 if site_out else None
        self.n_features, self.batch_size, self.p, self.seed = n_features, batch_size, p_active, seed
        self.site, self.site_out = site, site_out
        self.widths = {site: d} | ({site_out: d_out or d} if site_out else {})
        self.index = 0

    def d_in(self, site: str) -> int:
        return self.widths[site]

    def __iter__(self) -> PlantedStream:
        return self

    def __next__(self) -> dict[str, torch.Tensor]:
        g = torch.Generator().manual_seed(self.seed * 1_000_003 + self.index)
        self.index += 1
        active = torch.rand(self.batch_size, self.n_features, generator=g) < self.p
        mags = torch.rand(self.batch_size, self.n_features, generator=g) + 0.5
        x = (active * mags) @ self.directions
        out = {self.site: x}
        if self.site_out:
            out[self.site_out] = x @ self.map
        return out

    def state_dict(self) -> dict[str, Any]:
        return {"index": self.index}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.index = state["index"]


def make_config(out, dictionary: dict | None = None, dictionaries: list | None = None, **train) -> Config:
    data: dict[str, Any] = {
        "sites": {"names": ["site"]},
        "train": {"batch_size": 256, "lr": 3e-3, "seed": 0, "out": str(out), "log_every": 10,
                  "lr_decay": "none", "dead_after_tokens": 10_000, "device": "cpu", **train},
    }  # fmt: skip
    if dictionary is not None:
        data["dictionary"] = dictionary
    if dictionaries is not None:
        data["dictionaries"] = dictionaries
    return Config.model_validate(data)


def recovered_fraction(directions: torch.Tensor, W_dec: torch.Tensor, threshold: float = 0.9) -> float:
    """Fraction of planted directions whose best-matching decoder row has cosine > threshold."""
    cos = torch.nn.functional.normalize(directions, dim=1) @ torch.nn.functional.normalize(W_dec, dim=1).T
    return float((cos.max(dim=1).values > threshold).float().mean())
