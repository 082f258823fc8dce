"""FP8 through Transformer Engine: what ``precision.*`` resolves to on the GPU at hand.

``precision.fp8: auto`` chooses per GPU, as Megatron-Bridge's mixed-precision presets do:

- Blackwell (sm 10.x, 12.x): format e4m3, ``mxfp8`` (MX block scaling), no BF16 layers, FP8 parameters with the
  distributed optimizer (their all-gather reuses the gradient buffer);
- Hopper (sm 9.0) and Ada (sm 8.9): format hybrid, ``tensorwise`` (current scaling), the first and last transformer
  layer in BF16, FP8 parameters with the distributed optimizer (``delayed`` scaling on TE < 2.2);
- older GPUs, no Transformer Engine, no CUDA, or an fp32/fp16 recipe: FP8 off, with one line saying why.

An explicit ``precision.fp8: hybrid|e4m3`` is a demand: where the GPU or Transformer Engine cannot do it the run is
refused with one line (``PrecisionError``), never silently downgraded. ``precision.fp8: null`` trains in BF16.

The resolution is a pure function of the recipe and a ``Hardware`` description, so the rules are tested on CPU with
described GPUs; ``detect_hardware`` is the only place that looks at the machine. Nothing here imports Transformer
Engine on a machine without CUDA (importing it there breaks ``megatron.core``).

Checkpoints: with FP8 parameters Megatron-Core keeps the weights as TE ``Float8Tensor``; ``dequantize_for_save``
turns them into plain tensors of the compute dtype before a save, so an FP8 run writes the same checkpoint format as
a BF16 run (loadable by BF16 runs and ``octo convert``).
"""

from __future__ import annotations

import functools
import re
from dataclasses import dataclass
from typing import Dict, Optional, Tuple

import torch

from megatron_octo.config.schema import ParallelConfig, PrecisionConfig
from megatron_octo.errors import OctoError


class PrecisionError(OctoError, ValueError):
    """The recipe demands a precision this machine cannot run; the message is one line naming the fix."""


@dataclass(frozen=True)
class Hardware:
    """What the resolution rules need to know about the accelerator and its software."""

    device_type: str = "cpu"
    """``cuda`` or ``cpu``."""
    name: str = ""
    """Device name (``NVIDIA H100 80GB HBM3``)."""
    capability: Tuple[int, int] = (0, 0)
    """CUDA compute capability; (0, 0) off CUDA."""
    te_version: Optional[str] = None
    """Transformer Engine's version where its PyTorch layers import, else None."""
    te_cross_entropy: bool = False
    """TE's fused vocab-parallel cross-entropy (``transformer_engine.pytorch.cross_entropy``) imports."""
    apex_fused_wgrad: bool = False
    """apex's ``fused_weight_gradient_mlp_cuda`` imports (gradient-accumulation fusion of the local layer spec)."""

    @property
    def cuda(self) -> bool:
        return self.device_type == "cuda"

    @property
    def te(self) -> bool:
        return self.te_version is not None

    def te_at_least(self, version: str) -> bool:
        """Whether TE is present at ``version`` or newer (dev and local suffixes count as that release)."""
        if self.te_version is None:
            return False
        return _version_tuple(self.te_version) >= _version_tuple(version)

    def describe(self) -> str:
        if not self.cuda:
            return "no CUDA GPU"
        return f"{self.name or 'GPU'} (sm {self.capability[0]}.{self.capability[1]})"


def _version_tuple(version: str) -> Tuple[int, ...]:
    """``2.3.0.dev0+5fdd7bb`` -> (2, 3, 0): the leading release numbers only."""
    match = re.match(r"\d+(?:\.\d+)*", version)
    return tuple(int(x) for x in match.group(0).split(".")[:3]) if match else (0,)


@functools.lru_cache(maxsize=None)
def _te_facts() -> Tuple[Optional[str], bool]:
    """(TE version or None, TE cross-entropy importable). Only called where CUDA is present."""
    try:
        import transformer_engine
        import transformer_engine.pytorch
    except Exception:  # RuntimeError, not ImportError, where CUDA libraries are missing
        return None, False
    version = getattr(transformer_engine, "__version__", None) or "0"
    try:
        from transformer_engine.pytorch.cross_entropy import parallel_cross_entropy  # noqa: F401

        cross_entropy = True
    except Exception:
        cross_entropy = False
    return str(version), cross_entropy


@functools.lru_cache(maxsize=None)
def _apex_fused_wgrad() -> bool:
    try:
        import fused_weight_gradient_mlp_cuda  # type: ignore[import-not-found]  # noqa: F401
    except Exception:
        return False
    return True


def detect_hardware(device: torch.device) -> Hardware:
    """The accelerator behind ``device`` and the fused libraries importable here (TE and apex only on CUDA)."""
    if device.type != "cuda" or not torch.cuda.is_available():
        return Hardware()
    te_version, te_ce = _te_facts()
    major, minor = torch.cuda.get_device_capability(device)
    return Hardware(
        device_type="cuda",
        name=torch.cuda.get_device_name(device),
        capability=(major, minor),
        te_version=te_version,
        te_cross_entropy=te_ce,
        apex_fused_wgrad=_apex_fused_wgrad(),
    )


# --------------------------------------------------------------------------------------------------------------------
# The plan
# --------------------------------------------------------------------------------------------------------------------


@dataclass
class Fp8Plan:
    """What FP8 resolved to; ``fmt`` None means BF16 (or the recipe's dtype) throughout."""

    fmt: Optional[str] = None
    """TE FP8 format: ``hybrid`` or ``e4m3``."""
    recipe: Optional[str] = None
    """Scaling recipe: ``tensorwise``, ``delayed``, ``mxfp8`` or ``blockwise``."""
    bf16_layers: int = 0
    """Transformer layers kept in BF16 at each end of the model."""
    param_gather: bool = False
    """Weights kept in FP8 (TE ``Float8Tensor``) and all-gathered in FP8 by the distributed optimizer."""
    notes: Tuple[str, ...] = ()
    """Lines for the log: why auto chose what it chose, or why FP8 is off."""

    @property
    def enabled(self) -> bool:
        return self.fmt is not None

    def transformer_config(self) -> Dict[str, object]:
        """Megatron-Core ``TransformerConfig`` fields."""
        return dict(
            fp8=self.fmt,
            fp8_recipe=self.recipe or "delayed",  # Megatron-Core's default; unused without fp8
            fp8_param=self.param_gather,
            first_last_layers_bf16=self.bf16_layers > 0,
            num_layers_at_start_in_bf16=self.bf16_layers or 1,
            num_layers_at_end_in_bf16=self.bf16_layers or 1,
        )

    def ddp_config(self) -> Dict[str, object]:
        """Megatron-Core ``DistributedDataParallelConfig`` fields."""
        return dict(fp8_param_gather=self.param_gather, reuse_grad_buf_for_mxfp8_param_ag=self._reuse_grad_buf)

    def optimizer_config(self) -> Dict[str, object]:
        """Megatron-Core ``OptimizerConfig`` fields (the distributed optimizer handles FP8 shards by recipe)."""
        return dict(
            fp8_recipe=self.recipe if self.enabled else None, reuse_grad_buf_for_mxfp8_param_ag=self._reuse_grad_buf
        )

    @property
    def _reuse_grad_buf(self) -> bool:
        # MXFP8 parameters all-gather through the (then idle) gradient buffer instead of a second copy.
        return self.param_gather and self.recipe == "mxfp8"


# Minimum Transformer Engine versions of the scaling recipes (Megatron-Core's fp8_utils checks the same).
_TE_MIN = {"delayed": "1.0", "mxfp8": "2.1", "tensorwise": "2.2", "blockwise": "2.3"}


def _blackwell(hw: Hardware) -> bool:
    return hw.capability >= (10, 0)


def _why_not(hw: Hardware, dtype: str, device_dtype_ok: bool) -> Optional[str]:
    """Why FP8 cannot run here at all, or None."""
    if not hw.cuda:
        return "no CUDA GPU"
    if not device_dtype_ok:
        return f"precision.dtype={dtype} (FP8 runs on a bf16 model)"
    if not hw.te:
        return "Transformer Engine cannot be imported here"
    if hw.capability < (8, 9):
        return f"{hw.describe()} has no FP8 tensor cores (Ada, Hopper or Blackwell needed)"
    return None


def _auto_recipe(hw: Hardware) -> str:
    if _blackwell(hw) and hw.te_at_least(_TE_MIN["mxfp8"]):
        return "mxfp8"
    if hw.te_at_least(_TE_MIN["tensorwise"]):
        return "tensorwise"
    return "delayed"


def _check_recipe(recipe: str, hw: Hardware) -> None:
    """Refuse a scaling recipe the GPU or TE cannot run (one line)."""
    if recipe == "mxfp8" and not _blackwell(hw):
        raise PrecisionError(
            f"precision.fp8_recipe=mxfp8 needs a Blackwell GPU; {hw.describe()} is not one: "
            f"use fp8_recipe=tensorwise (or auto)"
        )
    if recipe == "blockwise" and _blackwell(hw):
        raise PrecisionError(
            f"precision.fp8_recipe=blockwise runs on Hopper only here: use mxfp8 (or auto) on {hw.describe()}"
        )
    need = _TE_MIN[recipe]
    if not hw.te_at_least(need):
        raise PrecisionError(
            f"precision.fp8_recipe={recipe} needs Transformer Engine >= {need}, found "
            f"{hw.te_version}: use fp8_recipe=delayed or a newer container"
        )


def resolve_fp8(p: PrecisionConfig, parallel: ParallelConfig, hw: Hardware) -> Fp8Plan:
    """The FP8 plan of ``precision`` on ``hw``; ``PrecisionError`` where an explicit demand cannot be met.

    ``auto`` fields: ``fp8_recipe`` (mxfp8 on Blackwell, tensorwise elsewhere, delayed on TE < 2.2),
    ``fp8_bf16_layers`` (1 with tensorwise/blockwise, else 0), ``fp8_param_gather`` (on with the distributed
    optimizer, whose all-gather then moves FP8 bytes).
    """
    if p.fp8 is None:
        return Fp8Plan()
    dtype_ok = p.dtype in ("auto", "bf16")
    reason = _why_not(hw, p.dtype, dtype_ok)
    if reason is not None:
        if p.fp8 == "auto":
            return Fp8Plan(
                notes=(
                    f"precision.fp8=auto: FP8 off, training in "
                    f"{'BF16' if hw.cuda and dtype_ok else 'the recipe dtype'}: {reason}",
                )
            )
        raise PrecisionError(f"precision.fp8={p.fp8} cannot run here: {reason}; set precision.fp8=null (or auto)")
    recipe = _auto_recipe(hw) if p.fp8_recipe == "auto" else p.fp8_recipe
    _check_recipe(recipe, hw)
    fmt = p.fp8 if p.fp8 != "auto" else ("e4m3" if recipe == "mxfp8" else "hybrid")
    if p.fp8_bf16_layers is not None:
        bf16_layers = p.fp8_bf16_layers
    else:
        bf16_layers = 1 if recipe in ("tensorwise", "blockwise") else 0
    if bf16_layers and recipe == "delayed":
        if p.fp8_bf16_layers:
            raise PrecisionError(
                "precision.fp8_bf16_layers needs current scaling: Megatron-Core's delayed scaling "
                "cannot keep layers in bf16 (set precision.fp8_recipe=tensorwise)"
            )
        bf16_layers = 0
    gather = parallel.distributed_optimizer if p.fp8_param_gather is None else p.fp8_param_gather
    notes = []
    if p.fp8 == "auto" or p.fp8_recipe == "auto":
        notes.append(
            f"precision.fp8=auto on {hw.describe()}: FP8 {fmt}, {recipe} scaling, {bf16_layers} BF16 "
            f"layer(s) at each end, FP8 parameters {'on' if gather else 'off'}"
        )
    return Fp8Plan(fmt=fmt, recipe=recipe, bf16_layers=bf16_layers, param_gather=bool(gather), notes=tuple(notes))


def dequantize_for_save(sharded_state_dict) -> None:
    """Replace FP8 (TE ``Float8Tensor``) model weights in a sharded state dict by plain high-precision tensors, in
    place, so the checkpoint holds the same dtypes as a BF16 run's. A no-op without FP8 parameters or without TE."""
    from megatron.core.dist_checkpointing.utils import force_all_tensors_to_non_fp8

    force_all_tensors_to_non_fp8(sharded_state_dict)
