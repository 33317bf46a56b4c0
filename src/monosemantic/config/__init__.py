"""Pydantic models for every stage, TOML loading and `--set a.b=c` overrides."""

from .analyze import AnalyzeConfig, ExplainConfig, ExportConfig, SteerConfig
from .base import Section
from .circuit import CircuitConfig
from .data import DataConfig
from .dictionary import DictionaryConfig
from .evaluate import EvaluateConfig
from .harvest import HarvestConfig, SitesConfig
from .lm import LMConfig
from .loading import ConfigLike, apply_override, as_config, load_config, parse_value, validate_config
from .model import ModelConfig
from .root import Config
from .serve import ServeConfig
from .train import TrainConfig

__all__ = [
    "AnalyzeConfig",
    "CircuitConfig",
    "Config",
    "ConfigLike",
    "DataConfig",
    "DictionaryConfig",
    "EvaluateConfig",
    "ExplainConfig",
    "ExportConfig",
    "HarvestConfig",
    "LMConfig",
    "ModelConfig",
    "Section",
    "ServeConfig",
    "SitesConfig",
    "SteerConfig",
    "TrainConfig",
    "apply_override",
    "as_config",
    "load_config",
    "parse_value",
    "validate_config",
]
