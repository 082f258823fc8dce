"""Typed configuration and shipped recipes."""

from megatron_octo.config.errors import ConfigError
from megatron_octo.config.loader import describe, load_recipe, recipe_names, to_yaml
from megatron_octo.config.schema import (
    CheckpointConfig,
    DataConfig,
    DataSource,
    LoggingConfig,
    ModelConfig,
    OptimizerConfig,
    ParallelConfig,
    PerfConfig,
    PrecisionConfig,
    RecipeConfig,
    ScheduleConfig,
    TrainConfig,
)
from megatron_octo.config.validate import check_world, train_iters, validate

__all__ = [
    "CheckpointConfig",
    "ConfigError",
    "DataConfig",
    "DataSource",
    "LoggingConfig",
    "ModelConfig",
    "OptimizerConfig",
    "ParallelConfig",
    "PerfConfig",
    "PrecisionConfig",
    "RecipeConfig",
    "ScheduleConfig",
    "TrainConfig",
    "check_world",
    "describe",
    "load_recipe",
    "recipe_names",
    "to_yaml",
    "train_iters",
    "validate",
]
