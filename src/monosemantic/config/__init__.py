"""Pydantic models for every stage, TOML loading and `--set a.b=c` overrides."""

from .analyze import AnalyzeConfig
from .base import Section
from .circuit import CircuitConfig
from .compare import CompareConfig
from .data import DataConfig
from .dictionary import DictionaryConfig
from .evaluate import EvaluateConfig
from .explain import ExplainConfig
from .export import ExportConfig
from .harvest import HarvestConfig, SitesConfig
from .lm import LMConfig
from .loading import apply_override, load_config, parse_value, validate_config
from .model import ModelConfig
from .plan import PlanConfig
from .root import Config
from .serve import ServeConfig
from .steer import SteerConfig
from .train import TrainConfig

__all__ = [
    "AnalyzeConfig",
    "CircuitConfig",
    "CompareConfig",
    "Config",
    "DataConfig",
    "DictionaryConfig",
    "EvaluateConfig",
    "ExplainConfig",
    "ExportConfig",
    "HarvestConfig",
    "LMConfig",
    "ModelConfig",
    "PlanConfig",
    "Section",
    "ServeConfig",
    "SitesConfig",
    "SteerConfig",
    "TrainConfig",
    "apply_override",
    "load_config",
    "parse_value",
    "validate_config",
]
