"""The whole config: one TOML file whose sections feed every verb.

Outer values are defaults for inner ones: a root `device`, `dtype` or `seed` fills each section
that leaves the same field unset (the Language-Model-SAEs convention), and `[dictionary]` fills
each `[[dictionaries]]` entry of a sweep.
"""

from __future__ import annotations

from typing import Any

from pydantic import Field, model_validator

from monosemantic.utils.torch_utils import check_device_name

from .analyze import AnalyzeConfig
from .base import Dtype, Section
from .circuit import CircuitConfig
from .compare import CompareConfig
from .data import DataConfig
from .dictionary import DictionaryConfig, DictionarySection, sweep_entry
from .evaluate import EvaluateConfig
from .explain import ExplainConfig
from .export import ExportConfig
from .harvest import HarvestConfig, SitesConfig
from .lm import LMConfig
from .model import ModelConfig
from .plan import PlanConfig
from .serve import ServeConfig
from .steer import SteerConfig
from .train import TrainConfig


class Config(Section):
    device: str = Field("auto", description="Default device of every section: auto, cpu, cuda, mps.")
    dtype: Dtype = Field("float32", description="Default dtype of every section.")
    seed: int = Field(0, description="Default seed of every section.")

    model: ModelConfig = Field(default_factory=ModelConfig)
    data: DataConfig = Field(default_factory=DataConfig)
    sites: SitesConfig = Field(default_factory=SitesConfig)
    harvest: HarvestConfig = Field(default_factory=HarvestConfig)
    lm: LMConfig = Field(default_factory=LMConfig)
    dictionary: DictionarySection | None = None
    dictionaries: list[DictionarySection] = Field(default_factory=list)
    train: TrainConfig = Field(default_factory=TrainConfig)
    plan: PlanConfig = Field(default_factory=PlanConfig)
    evaluate: EvaluateConfig = Field(default_factory=EvaluateConfig)
    compare: CompareConfig = Field(default_factory=CompareConfig)
    analyze: AnalyzeConfig = Field(default_factory=AnalyzeConfig)
    explain: ExplainConfig = Field(default_factory=ExplainConfig)
    export: ExportConfig = Field(default_factory=ExportConfig)
    steer: SteerConfig = Field(default_factory=SteerConfig)
    circuit: CircuitConfig = Field(default_factory=CircuitConfig)
    serve: ServeConfig = Field(default_factory=ServeConfig)

    @model_validator(mode="before")
    @classmethod
    def _sweep_defaults(cls, data: Any) -> Any:
        """`[dictionary]` holds defaults when `[[dictionaries]]` lists a sweep."""
        if isinstance(data, dict) and data.get("dictionaries"):
            base = data.get("dictionary") or {}
            if not isinstance(base, dict):
                base = base.model_dump(exclude_unset=True)
            entries = [
                e if not isinstance(e, dict) else sweep_entry(_width_default(base, e), e)
                for e in data["dictionaries"]
            ]
            data = {**data, "dictionaries": entries, "dictionary": None}
        return data

    @model_validator(mode="after")
    def _inherit(self) -> Config:
        for name in type(self).model_fields:
            section = getattr(self, name)
            if isinstance(section, Section):
                for key in section.INHERITED:
                    if getattr(section, key) is None:
                        object.__setattr__(section, key, getattr(self, key))
        return self

    @model_validator(mode="after")
    def _devices(self) -> Config:
        """A typo in any device (`cdua`, `tpu`) fails at load time, naming the section."""
        try:
            check_device_name(self.device)
        except ValueError as e:
            raise ValueError(f"device: {e}") from None
        for name in type(self).model_fields:
            section = getattr(self, name)
            device = getattr(section, "device", None) if isinstance(section, Section) else None
            if device is not None:
                try:
                    check_device_name(device)
                except ValueError as e:
                    raise ValueError(f"{name}.device: {e}") from None
        return self

    def all_dictionaries(self) -> list[DictionaryConfig]:
        """The dictionaries a run trains: the sweep entries, or the single `[dictionary]`."""
        if self.dictionaries:
            return list(self.dictionaries)
        return [self.dictionary] if self.dictionary is not None else []

    def is_sweep(self) -> bool:
        return bool(self.dictionaries)


def _width_default(base: dict[str, Any], entry: dict[str, Any]) -> dict[str, Any]:
    """An entry that sizes itself (d_sae or expansion) drops the default's width, so a sweep with
    `[dictionary] expansion = 8` can hold a `d_sae = 64` entry."""
    if "d_sae" in entry or "expansion" in entry:
        return {k: v for k, v in base.items() if k not in ("d_sae", "expansion")}
    return base
