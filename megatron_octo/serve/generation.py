"""A vLLM generation service for an RL actor: start, generate from token ids, refit weights in memory, sleep/wake,
shut down. It wraps ``megatron_octo.rollout.vllm_engine.VLLMEngine`` (whose module docstring holds the log-prob,
stop-string, refit and sleep contracts) and adds what an actor needs around it: sampling defaults from the RL
recipe, refit from Megatron-Core-named weights, the sleep/refit/wake order of a colocated actor, and timing logs.

Weight refit without a disk round trip: the engine runs inside the actor's process (one engine per generating rank,
on the actor's GPU). ``refit_mcore`` takes the actor's Megatron-Core state dict (tensors as they are, on the GPU),
maps names and fused layouts to Hugging Face ones with the model family's declarative weight map
(``megatron_octo.models``), and hands the tensors to the engine, which ships them in bounded buckets to its worker
over vLLM's RPC (``VLLMEngine.load_weights``). No file is written. (A generation server in its own processes is not
built; docs/ARCHITECTURE.md, "Rollout engine", describes how it would refit.)

Sleep: ``sleep()`` between rollouts frees the engine's GPU memory for training (level 1 keeps the weights in host
memory, level 2 drops them since the next refit replaces them anyway); ``refit`` wakes only the weights, loads the
new ones, then wakes the KV cache, so the cache is never resident next to a second copy of the weights.
"""

from __future__ import annotations

import json
import logging
import time
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Dict, Iterable, List, Mapping, Optional, Sequence, Tuple

from megatron_octo.eval.prompts import RL_STOP
from megatron_octo.rollout.vllm_engine import RolloutError, Sample, VLLMEngine, VLLMEngineConfig

if TYPE_CHECKING:
    import torch

log = logging.getLogger(__name__)


@dataclass
class GenerationConfig:
    """The generation service: the engine it starts and the sampling it uses when a call does not say otherwise
    (defaults: the OctoThinker RL numbers of RECIPE.md, Stage 3)."""

    engine: VLLMEngineConfig  # how the vLLM engine starts (model directory, dtype, memory, sleep mode, ...)
    temperature: float = 1.0  # sampling temperature; 0 = greedy
    top_p: float = 1.0  # nucleus mass
    max_tokens: int = 4096  # response token limit
    stop: Tuple[str, ...] = RL_STOP  # stop strings, cut from the text (see VLLMEngine)
    n: int = 1  # samples per prompt
    seed: Optional[int] = None  # base seed of a call (VLLMEngine derives one per sample); None: the engine's stream
    sleep_level: int = 1  # what sleep() frees: 1 keeps weights in host memory, 2 drops them (a refit must follow)

    def __post_init__(self) -> None:
        if self.sleep_level not in (1, 2):
            raise RolloutError(f"sleep_level must be 1 or 2, got {self.sleep_level}")
        if self.max_tokens < 1 or self.n < 1:
            raise RolloutError(f"max_tokens and n must be >= 1, got {self.max_tokens} and {self.n}")
        self.stop = tuple(self.stop)


class GenerationService:
    """The operations an RL actor needs, over one ``VLLMEngine``. Not thread-safe: one caller at a time."""

    def __init__(self, cfg: GenerationConfig, engine: VLLMEngine):
        self.cfg = cfg
        self.engine = engine
        self.refits = 0

    @classmethod
    def start(cls, cfg: GenerationConfig) -> "GenerationService":
        """Starts the vLLM engine from ``cfg.engine.model_dir`` (config, tokenizer and initial weights)."""
        t0 = time.monotonic()
        engine = VLLMEngine(cfg.engine)
        log.info("generation service: vLLM engine up from %s in %.1f s", cfg.engine.model_dir, time.monotonic() - t0)
        return cls(cfg, engine)

    # -- generation ----------------------------------------------------------------------------------------------
    def generate(
        self,
        prompt_token_ids: Sequence[Sequence[int]],
        *,
        n: Optional[int] = None,
        temperature: Optional[float] = None,
        top_p: Optional[float] = None,
        max_tokens: Optional[int] = None,
        stop: Optional[Sequence[str]] = None,
        seed: Optional[int] = None,
        keep_stop: bool = False,
    ) -> List[List[Sample]]:
        """``n`` samples per prompt (prompt order), each with its response token ids and their log-probs; any
        sampling argument left out takes the config's value; ``keep_stop`` as in ``VLLMEngine.generate``."""
        c = self.cfg
        t0 = time.monotonic()
        out = self.engine.generate(
            prompt_token_ids,
            n=c.n if n is None else n,
            temperature=c.temperature if temperature is None else temperature,
            top_p=c.top_p if top_p is None else top_p,
            max_tokens=c.max_tokens if max_tokens is None else max_tokens,
            stop=c.stop if stop is None else tuple(stop),
            seed=c.seed if seed is None else seed,
            keep_stop=keep_stop,
        )
        tokens = sum(len(s.token_ids) for group in out for s in group)
        dt = time.monotonic() - t0
        log.info(
            "generation service: %d prompts -> %d tokens in %.1f s (%.0f tokens/s)",
            len(out),
            tokens,
            dt,
            tokens / max(dt, 1e-9),
        )
        return out

    # -- weights -------------------------------------------------------------------------------------------------
    def refit(self, weights: Iterable[Tuple[str, "torch.Tensor"]]) -> None:
        """Replaces the engine's weights with Hugging Face-named full tensors (any device); wakes the weights
        first when asleep and the KV cache after, so the service is ready to generate when this returns."""
        t0 = time.monotonic()
        if self.engine.is_sleeping:
            self.engine.wake_up(tags=["weights"])
        self.engine.load_weights(weights)
        self.engine.wake_up()
        self.refits += 1
        log.info("generation service: refit %d done in %.1f s", self.refits, time.monotonic() - t0)

    def refit_mcore(self, mcore_state_dict: Mapping[str, "torch.Tensor"]) -> None:
        """``refit`` from a full (unsharded) Megatron-Core GPTModel state dict: wrapper prefixes (``module.``) are
        stripped and names and fused layouts mapped to Hugging Face's by the family of the engine's config.json."""
        self.refit(hf_weights_from_mcore(mcore_state_dict, self.cfg.engine.model_dir).items())

    # -- memory and life cycle -----------------------------------------------------------------------------------
    def sleep(self) -> None:
        """Frees the engine's accelerator memory (``cfg.sleep_level``) until the next refit or wake_up."""
        self.engine.sleep(level=self.cfg.sleep_level)

    def wake_up(self) -> None:
        """Restores what sleep freed (after sleep level 2, refit instead: the weights are gone)."""
        self.engine.wake_up()

    @property
    def is_sleeping(self) -> bool:
        return self.engine.is_sleeping

    def shutdown(self) -> None:
        """Stops the engine and frees its memory; later calls do nothing."""
        self.engine.shutdown()

    def __enter__(self) -> "GenerationService":
        return self

    def __exit__(self, *exc) -> None:
        self.shutdown()


def strip_wrappers(state_dict: Mapping[str, "torch.Tensor"]) -> Dict[str, "torch.Tensor"]:
    """Names without the ``module.`` prefixes that DDP / Float16Module wrappers add (NeMo's actor keeps its
    GPTModel under them)."""
    out = {}
    for name, tensor in state_dict.items():
        while name.startswith("module."):
            name = name[len("module.") :]
        out[name] = tensor
    return out


def hf_weights_from_mcore(mcore_state_dict: Mapping[str, "torch.Tensor"], model_dir) -> Dict[str, "torch.Tensor"]:
    """Hugging Face-named tensors of a full Megatron-Core state dict, for the model whose ``config.json`` lies in
    ``model_dir`` (llama or qwen2). Tensors stay where they are (a GPU state dict gives GPU tensors)."""
    from megatron_octo.models import FAMILIES

    path = Path(model_dir) / "config.json"
    try:
        hf_config = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise RolloutError(
            f"cannot read {path} ({exc}); the generation engine's model_dir must hold the "
            "Hugging Face config.json of the actor's model"
        ) from None
    families = {f.model_type: f for f in FAMILIES.values()}
    family = families.get(hf_config.get("model_type"))
    if family is None:
        raise RolloutError(
            f"{path}: model_type {hf_config.get('model_type')!r} has no weight map; supported: {', '.join(families)}"
        )
    return family.state_dict_to_hf(strip_wrappers(mcore_state_dict), family.from_hf(hf_config, name_preset=False))
