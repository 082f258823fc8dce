"""Rollout generation engines shared by the RL loop and the NeMo-Aligner generation service.

``vllm_engine`` imports vLLM only when an engine is built, so importing this package needs no vLLM.
"""

from megatron_octo.rollout.sampling import RolloutError, Sample
from megatron_octo.rollout.vllm_engine import VLLMEngine, VLLMEngineConfig

__all__ = ["RolloutError", "Sample", "VLLMEngine", "VLLMEngineConfig"]
