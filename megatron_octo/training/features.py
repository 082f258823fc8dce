"""The speed and memory features of the GPU path (``perf.*`` and ``precision.grad_reduce_in_fp32``), resolved for
the machine at hand into Megatron-Core ``TransformerConfig`` and ``DistributedDataParallelConfig`` fields.

Each ``perf`` key is tri-state: ``null`` takes Megatron's choice here (on where the hardware and Transformer Engine
can, else off with one line in the log), ``true`` is a demand (refused with one line, ``FeatureError``, where
impossible), ``false`` is off. On CPU every ``null`` resolves to off and nothing is logged for it: the CPU path
stays what it was.

- ``tp_comm_overlap``: CUDA, TE layer spec (TE >= 1.9), TP > 1 with sequence parallelism -> ``tp_comm_overlap``,
  and the userbuffers bootstrapped before the model is built (``initialize_userbuffers``);
- ``gradient_accumulation_fusion``: CUDA and (TE layer spec, or apex's fused wgrad kernel) ->
  ``gradient_accumulation_fusion``;
- ``cross_entropy_fusion``: CUDA and TE's parallel cross-entropy -> ``cross_entropy_loss_fusion``,
  ``cross_entropy_fusion_impl='te'``;
- ``recompute``: anywhere (plain PyTorch) -> ``recompute_granularity/method/num_layers/modules``.

Like ``precision``, a pure function of the recipe and a ``Hardware`` description, tested on CPU.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Dict, List, Optional, Tuple

from megatron_octo.config.schema import RecipeConfig
from megatron_octo.errors import OctoError
from megatron_octo.models.shapes import shape
from megatron_octo.training.precision import Hardware


class FeatureError(OctoError, ValueError):
    """A ``perf`` key demands a feature this machine cannot run; the message is one line naming the fix."""


@dataclass
class FeaturePlan:
    """What the ``perf`` keys resolved to."""

    tcfg: Dict[str, object] = field(default_factory=dict)
    """``TransformerConfig`` fields."""
    ddp: Dict[str, object] = field(default_factory=dict)
    """``DistributedDataParallelConfig`` fields."""
    notes: List[str] = field(default_factory=list)
    """One line per feature that ``null`` left off on a GPU, and why."""
    userbuffers_shape: Optional[Tuple[int, int]] = None
    """[tokens of one micro-batch on this CP rank, hidden]: the userbuffers to bootstrap, when TP overlap is on."""


def _decide(name: str, wanted: Optional[bool], reason_off: Optional[str], hw: Hardware, notes: List[str]) -> bool:
    """``wanted`` (None/True/False) against why the feature cannot run here (``reason_off``, None if it can)."""
    if wanted is False:
        return False
    if reason_off is None:
        return True
    if wanted:
        raise FeatureError(f"perf.{name}=true cannot run here: {reason_off}; set perf.{name}=null or false")
    if hw.cuda:  # on CPU everything fused is off by nature; say nothing
        notes.append(f"perf.{name}: off ({reason_off})")
    return False


def _tp_overlap_blocker(recipe: RecipeConfig, hw: Hardware, use_te: bool) -> Optional[str]:
    p = recipe.parallel
    if not hw.cuda:
        return "no CUDA GPU"
    if not use_te:
        return "it needs the Transformer Engine layer spec"
    if not hw.te_at_least("1.9"):
        return f"it needs Transformer Engine >= 1.9 (found {hw.te_version})"
    if p.tp == 1:
        return "parallel.tp=1 has no tensor-parallel communication"
    if not p.sequence_parallel:
        return "it needs parallel.sequence_parallel=true"
    return None


def _wgrad_blocker(hw: Hardware, use_te: bool) -> Optional[str]:
    if not hw.cuda:
        return "no CUDA GPU"
    if use_te or hw.apex_fused_wgrad:
        return None
    return "the local layer spec needs apex's fused_weight_gradient_mlp_cuda, which is not installed"


def _ce_blocker(hw: Hardware) -> Optional[str]:
    if not hw.cuda:
        return "no CUDA GPU"
    if not hw.te_cross_entropy:
        return "Transformer Engine's parallel cross-entropy cannot be imported here"
    return None


def recompute_fields(recipe: RecipeConfig) -> Dict[str, object]:
    """Megatron-Core's recomputation fields for ``perf.recompute*`` (validated by config.validate)."""
    f = recipe.perf
    if f.recompute is None:
        return dict(recompute_granularity=None)
    if f.recompute == "selective":
        return dict(recompute_granularity="selective", recompute_modules=list(f.recompute_modules))
    per_stage = shape(recipe.model).num_layers // recipe.parallel.pp
    if f.recompute_num_layers is None:  # every layer of the stage
        method, layers = f.recompute_method, (per_stage if f.recompute_method == "block" else 1)
    else:
        method, layers = f.recompute_method, f.recompute_num_layers
    return dict(recompute_granularity="full", recompute_method=method, recompute_num_layers=layers)


def resolve_features(recipe: RecipeConfig, hw: Hardware, use_te: bool) -> FeaturePlan:
    """The ``perf`` plan of ``recipe`` on ``hw`` with the layer spec chosen (``use_te``)."""
    f = recipe.perf
    notes: List[str] = []
    overlap = _decide("tp_comm_overlap", f.tp_comm_overlap, _tp_overlap_blocker(recipe, hw, use_te), hw, notes)
    if f.tp_comm_overlap is None and recipe.parallel.tp == 1:
        notes = [n for n in notes if not n.startswith("perf.tp_comm_overlap")]  # nothing to overlap: no news
    wgrad = _decide(
        "gradient_accumulation_fusion", f.gradient_accumulation_fusion, _wgrad_blocker(hw, use_te), hw, notes
    )
    ce = _decide("cross_entropy_fusion", f.cross_entropy_fusion, _ce_blocker(hw), hw, notes)
    tcfg: Dict[str, object] = dict(
        tp_comm_overlap=overlap,
        tp_comm_bootstrap_backend=f.tp_comm_bootstrap,
        gradient_accumulation_fusion=wgrad,
        cross_entropy_loss_fusion=ce,
        cross_entropy_fusion_impl="te" if ce else "native",
        **recompute_fields(recipe),
    )
    buffers = None
    if overlap:
        t = recipe.train
        buffers = (t.seq_len * t.micro_batch // recipe.parallel.cp, shape(recipe.model).hidden_size)
    return FeaturePlan(
        tcfg=tcfg,
        ddp=dict(grad_reduce_in_fp32=recipe.precision.grad_reduce_in_fp32),
        notes=notes,
        userbuffers_shape=buffers,
    )


_USERBUFFERS: Dict[str, object] = {}
"""The userbuffers this process bootstrapped (TE keeps one set per process; a second build reuses it)."""


def initialize_userbuffers(plan: FeaturePlan, tp: int, fp8: bool, dtype) -> None:
    """Bootstrap TE's userbuffers communicators for TP overlap, once per process, before the model is built
    (Megatron-LM does the same in its initialization). No-op when the plan has no TP overlap."""
    if plan.userbuffers_shape is None:
        return
    key = (plan.userbuffers_shape, tp, fp8, str(dtype))
    if _USERBUFFERS:
        if _USERBUFFERS["key"] != key:
            raise FeatureError(
                f"TP overlap userbuffers already set up for {_USERBUFFERS['key']}, now asked for "
                f"{key}: run stages with another micro-batch or sequence length in another process"
            )
        return
    from transformer_engine.pytorch import module as te_module

    te_module.base.initialize_ub(
        shape=list(plan.userbuffers_shape),
        tp_size=tp,
        use_fp8=fp8,
        dtype=dtype,
        bootstrap_backend=plan.tcfg["tp_comm_bootstrap_backend"],
    )
    _USERBUFFERS["key"] = key
