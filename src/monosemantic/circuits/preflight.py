"""What `circuit` checks before the long computation: options that only go together, the direction
file, and whether the attribution fits in the memory available."""

from __future__ import annotations

from monosemantic.config import Config
from monosemantic.utils.errors import ConfigError, MonosemanticError

from .replacement import ReplacementModel
from .targets import Direction, load_direction


def check_options(cfg: Config, direction: Direction | None = None) -> Direction | None:
    """Options that only go together, checked before any work; returns the direction target if any
    (`direction` when given, else read from circuit.target_direction)."""
    c = cfg.circuit
    if c.target == "direction" and c.method != "attribution":
        raise ConfigError(
            f"circuit.target = 'direction' needs circuit.method = 'attribution', not {c.method!r}"
        )
    if c.heads and c.method != "attribution":
        raise ConfigError(
            f"circuit.heads needs circuit.method = 'attribution' (a {c.method} graph's edges are not "
            "direct effects of the frozen model, so they do not split by head)"
        )
    return direction if direction is not None else target_direction(cfg)


def target_direction(cfg: Config) -> Direction | None:
    """The direction file of `circuit.target = "direction"`, read and checked before any work."""
    c = cfg.circuit
    if c.target != "direction":
        return None
    if c.target_direction is None:
        raise ConfigError(
            "circuit.target = 'direction' needs circuit.target_direction: a safetensors file with a "
            "tensor 'direction' [d_model]"
        )
    return load_direction(c.target_direction, c.target_layer, c.target_position)


def check_memory(cfg: Config, rm: ReplacementModel) -> None:
    """Refuse, in one line, a prompt whose attribution would need more memory than is available."""
    from monosemantic.training.attribution_memory import (
        active_per_token,
        attribution_memory,
        available_memory,
    )

    c = cfg.circuit
    if c.method != "attribution" or rm.device.type != "cpu":
        return
    free = available_memory()
    if free is None:
        return
    T = len(rm.tokenize(c.prompt))
    active = [
        active_per_token(
            {"k": getattr(s.dic.cfg, "k", None), "metadata": s.dic.cfg.metadata, "d_sae": s.dic.cfg.d_sae}
        )
        for s in rm.spliced
    ]
    lm, size = rm.lm, rm.dtype.itemsize
    est = attribution_memory(T, lm.d_model, lm.n_layers, lm.n_heads, active, c.max_feature_nodes, c.max_n_logits,
                             c.batch_size, size, 8 if size == 8 else 4, c.heads)  # fmt: skip
    if est.peak > free:
        gib = 2**30
        raise MonosemanticError(
            f"attributing this {T:,}-token prompt needs about {est.peak / gib:.1f} GiB ({est.active_features:,} "
            f"active features) but {free / gib:.1f} GiB is available; lower circuit.max_feature_nodes or "
            "circuit.batch_size, or shorten the prompt (`monosemantic plan --circuit-tokens N` estimates it)"
        )
