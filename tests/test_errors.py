"""Every user-facing error class derives from the one base ``OctoError`` (the CLI catches it once)."""

from __future__ import annotations

import importlib

import pytest

from megatron_octo.errors import OctoError

USER_ERRORS = [
    ("megatron_octo.config.errors", "ConfigError"),
    ("megatron_octo.convert.errors", "ConvertError"),
    ("megatron_octo.convert.errors", "VerifyError"),
    ("megatron_octo.data.errors", "DataError"),
    ("megatron_octo.eval.registry", "EvalError"),
    ("megatron_octo.launch.config", "LaunchError"),
    ("megatron_octo.parallel", "ParallelSetupError"),
    ("megatron_octo.rl.prompts", "PromptError"),
    ("megatron_octo.rl.setup", "RLSetupError"),
    ("megatron_octo.rollout.vllm_engine", "RolloutError"),
    ("megatron_octo.serve.aligner_adapter", "AdapterError"),
    ("megatron_octo.serve.reward_server", "RewardServerError"),
    ("megatron_octo.training.build", "SetupError"),
    ("megatron_octo.training.checkpoint", "CheckpointError"),
    ("megatron_octo.training.features", "FeatureError"),
    ("megatron_octo.training.precision", "PrecisionError"),
    ("megatron_octo.training.loop", "TrainingDiverged"),
    ("megatron_octo.training.plot", "PlotError"),
    ("megatron_octo.utils.io", "OutputExistsError"),
]


@pytest.mark.parametrize("module,name", USER_ERRORS)
def test_user_errors_derive_from_octo_error(module, name):
    cls = getattr(importlib.import_module(module), name)
    assert issubclass(cls, OctoError)


def test_exit_codes():
    from megatron_octo.convert.errors import VerifyError
    from megatron_octo.utils.io import OutputExistsError

    assert OctoError("x").exit_code == 2
    assert VerifyError("x").exit_code == 1  # a conversion that does not reproduce its source, not a usage error
    assert isinstance(OutputExistsError("x"), FileExistsError)  # callers catching the old base still work
