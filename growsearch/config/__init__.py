"""Configuration as typed, validated data: the search-space YAML's sections (knows nothing of methods)."""

from growsearch.config.network import LayerConfig
from growsearch.config.schema import from_mapping, require
from growsearch.config.space import (
    BackendConfig,
    BenchmarkDefaults,
    SearchConfig,
    SearchSpace,
    load_space,
    space_from_dict,
)
from growsearch.config.training import OptimizerSettings, TrainingConfig

__all__ = [
    "BackendConfig",
    "BenchmarkDefaults",
    "LayerConfig",
    "OptimizerSettings",
    "SearchConfig",
    "SearchSpace",
    "TrainingConfig",
    "from_mapping",
    "load_space",
    "require",
    "space_from_dict",
]
