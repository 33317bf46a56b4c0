"""Training logs: one `metrics.jsonl` per dictionary, and optionally Weights & Biases.

Rows are appended as training goes; on resume, rows newer than the checkpoint are dropped so the
file reads as if the run had never stopped.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

from monosemantic.utils.errors import ConfigError
from monosemantic.utils.files import atomic_path


class MetricsLog:
    def __init__(self, path: Path) -> None:
        self.path = Path(path)  # its folder is made at the first row: a run that fails first leaves none

    def truncate_after(self, step: int) -> None:
        """Keep rows with `step <= step` (the checkpoint we resumed from); drop the rest."""
        if not self.path.exists():
            return
        keep = []
        for line in self.path.read_text().splitlines():
            try:
                row = json.loads(line)
            except json.JSONDecodeError:
                continue  # a row torn by a kill
            if row.get("step", 0) <= step:
                keep.append(line)
        with atomic_path(self.path) as tmp:
            tmp.write_text("".join(f"{line}\n" for line in keep))

    def reset(self) -> None:
        if self.path.exists():
            self.path.unlink()

    def write(self, row: dict[str, Any]) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        with open(self.path, "a") as f:
            f.write(json.dumps(row) + "\n")
            f.flush()
            os.fsync(f.fileno())


def require_wandb() -> Any:
    """The wandb module, or one line saying how to get it (checked before any training)."""
    try:
        import wandb
    except ImportError:
        raise ConfigError(
            "train.wandb = true needs the wandb package: pip install wandb (or set train.wandb = false)"
        ) from None
    return wandb


class WandbLogger:
    """Lazy Weights & Biases logging: one run per dictionary, grouped by the output folder."""

    def __init__(self, project: str, group: str, names: list[str], configs: list[dict]) -> None:
        wandb = require_wandb()
        self.runs = [
            wandb.init(project=project, group=group, name=name, config=cfg, reinit="create_new")
            for name, cfg in zip(names, configs, strict=True)
        ]

    def log(self, index: int, row: dict[str, Any]) -> None:
        self.runs[index].log({k: v for k, v in row.items() if k != "step"}, step=row["step"])

    def finish(self) -> None:
        for run in self.runs:
            run.finish()
