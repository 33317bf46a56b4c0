"""dictionaries stage: sparse dictionary architectures, transcoders, and their file formats."""

from .base import Dictionary, DictionaryMeta, LossOutput, SparseCodes, TrainStepState
from .io import find_dictionaries, load_dictionary, load_sparsity, save_dictionary
from .multi_site import MultiSiteDictionary
from .registry import ARCHITECTURES, build_dictionary, meta_from_config
from .single_site import SingleSiteDictionary

__all__ = [
    "ARCHITECTURES",
    "Dictionary",
    "DictionaryMeta",
    "LossOutput",
    "MultiSiteDictionary",
    "SingleSiteDictionary",
    "SparseCodes",
    "TrainStepState",
    "build_dictionary",
    "find_dictionaries",
    "load_dictionary",
    "load_sparsity",
    "meta_from_config",
    "save_dictionary",
]
