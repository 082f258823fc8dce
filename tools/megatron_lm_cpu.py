#!/usr/bin/env python
"""Run Megatron-LM's own training code (a checkout of its core_v0.16.1 tag) on CPU over gloo: build a GPT model,
optimizer and scheduler the way ``pretrain_gpt.py`` does, then save or load checkpoints with
``megatron.training.checkpointing`` and compute logits. For fixtures (``tools/megatron_lm_fixtures.py``) and the
compatibility tests (``tests/convert/test_megatron_lm.py``); not part of the package.

Run under torchrun, one process per rank (TP x PP x DP)::

    python -m torch.distributed.run --standalone --nproc-per-node 2 tools/megatron_lm_cpu.py \\
        --megatron-lm ~/Megatron-LM [--tokens T.pt --logits L.pt] [--save-iteration N] [--report R.json] \\
        -- <Megatron-LM arguments: --num-layers ... --save DIR / --load DIR>

With ``--load`` in the Megatron-LM arguments, ``setup_model_and_optimizer`` calls Megatron-LM's ``load_checkpoint``
(as its training does); ``--report`` writes what was loaded (iteration, FLOPs, consumed samples, the scheduler's
step count). With ``--save-iteration N`` Megatron-LM's ``save_checkpoint`` writes iteration N to ``--save``.

Stand-ins beyond ``megatron_octo.parallel.cpu_compat`` (which maps Megatron-Core's CUDA-only calls to the CPU),
each for something that only exists on a GPU machine and computes nothing:
- ``torch.cuda.is_available`` is left False and ``initialize_megatron(allow_no_cuda=True)`` is used;
- ``megatron.training.initialize._compile_dependencies``: builds the dataset C++ helpers and loads the fused CUDA
  kernels; neither is used here (no dataset, local layer spec, unfused softmax), so it is skipped;
- ``six`` (Python 2 compatibility, imported by Megatron-LM's BERT tokenizer module only) when not installed;
- ``megatron.core.transformer.custom_layers.batch_invariant_kernels`` (Triton GPU kernels of
  ``--batch-invariant-mode``, imported by ``initialize.py``) when Triton is not installed: calling it fails;
- ``megatron.training.arguments.get_device_arch_version``: 0 (``validate_args`` asks for the GPU architecture when
  TP > 1, to decide about ``CUDA_DEVICE_MAX_CONNECTIONS``, which is set to 1 here as before Blackwell);
- ``torch.cuda.memory_stats`` / ``reset_peak_memory_stats`` return empty / nothing (memory reports only).
The model runs with ``--transformer-impl local`` and every CUDA fusion off (the arguments are the caller's).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path

import torch


def _parse(argv):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--megatron-lm", required=True, type=Path, help="Megatron-LM checkout (core_v0.16.1)")
    p.add_argument("--tokens", type=Path, help="LongTensor [b, s] to compute logits of")
    p.add_argument("--logits", type=Path, help="where rank 0 of the last stage writes the fp32 logits [b, s, v]")
    p.add_argument("--vocab", type=int, help="keep the first VOCAB logit columns (the unpadded vocabulary)")
    p.add_argument("--save-iteration", type=int, help="save_checkpoint this iteration to --save")
    p.add_argument("--report", type=Path, help="JSON of what load_checkpoint restored")
    if "--" not in argv:
        p.error("give Megatron-LM's arguments after --")
    cut = argv.index("--")
    return p.parse_args(argv[:cut]), argv[cut + 1:]


def _stand_ins() -> None:
    import types

    from megatron_octo.parallel import cpu_compat

    if "six" not in sys.modules:
        try:
            import six  # noqa: F401
        except ImportError:  # only Megatron-LM's BERT tokenizer module uses it (Python 2 compatibility)
            sys.modules["six"] = types.SimpleNamespace(PY2=False, PY3=True, text_type=str, binary_type=bytes,
                                                       string_types=(str,), integer_types=(int,))

    cpu_compat.enable()
    kernels = "megatron.core.transformer.custom_layers.batch_invariant_kernels"
    try:
        import triton  # noqa: F401
    except ImportError:  # Triton kernels for --batch-invariant-mode only (GPU); never called here
        def _no_triton(*a, **k):
            raise RuntimeError("--batch-invariant-mode needs Triton (a GPU)")

        sys.modules[kernels] = types.SimpleNamespace(enable_batch_invariant_mode=_no_triton)
    torch.cuda.memory_stats = lambda *a, **k: {}
    torch.cuda.reset_peak_memory_stats = lambda *a, **k: None
    import megatron.training.initialize as init

    init._compile_dependencies = lambda: None
    import megatron.training.arguments as arguments

    arguments.get_device_arch_version = lambda: 0


def _setup(megatron_args):
    from functools import partial

    from gpt_builders import gpt_builder
    from megatron.core.enums import ModelType
    from megatron.training import get_args
    from megatron.training.initialize import initialize_megatron
    from megatron.training.training import setup_model_and_optimizer
    from model_provider import model_provider

    sys.argv = [sys.argv[0], *megatron_args]
    initialize_megatron(allow_no_cuda=True)
    model, optimizer, scheduler = setup_model_and_optimizer(partial(model_provider, gpt_builder),
                                                            ModelType.encoder_or_decoder)
    return get_args(), model, optimizer, scheduler


@torch.no_grad()
def _logits(model, tokens: torch.Tensor, vocab):
    """Logits [b, s, v] on the last stage's TP rank 0 (None elsewhere), through Megatron-Core's schedules."""
    from megatron.core import mpu
    from megatron.core.pipeline_parallel import get_forward_backward_func
    from megatron.core.tensor_parallel import gather_from_tensor_model_parallel_region

    b, s = tokens.shape
    for chunk in model:
        chunk.eval()

    def step(data_iterator, m):
        ids = next(data_iterator)
        positions = torch.arange(s).unsqueeze(0).expand(b, -1)
        return m(ids, positions, None), lambda out, non_loss_data=True: out

    out = get_forward_backward_func()(forward_step_func=step, data_iterator=iter([tokens]), model=model,
                                      num_microbatches=1, seq_length=s, micro_batch_size=b, forward_only=True,
                                      collect_non_loss_data=True)
    if not mpu.is_pipeline_last_stage():
        return None
    full = gather_from_tensor_model_parallel_region(out[0].float())  # [b, s, v_padded]
    return full[..., :vocab] if vocab else full


def main(argv=None) -> int:
    opts, megatron_args = _parse(sys.argv[1:] if argv is None else argv)
    sys.path.insert(0, str(opts.megatron_lm.resolve()))
    _stand_ins()
    args, model, optimizer, scheduler = _setup(megatron_args)
    from megatron.core import mpu

    rank0 = torch.distributed.get_rank() == 0
    if opts.report and rank0:
        report = {"iteration": args.iteration, "flops": args.num_floating_point_operations_so_far,
                  "consumed_train_samples": args.consumed_train_samples,
                  "scheduler_num_steps": scheduler.num_steps if scheduler is not None else None,
                  "lr": optimizer.param_groups[0]["lr"] if optimizer is not None else None}
        opts.report.write_text(json.dumps(report))
    if opts.tokens is not None:
        logits = _logits(model, torch.load(opts.tokens), opts.vocab)
        if logits is not None and mpu.get_tensor_model_parallel_rank() == 0 and mpu.get_data_parallel_rank() == 0:
            torch.save(logits.contiguous(), opts.logits)
    if opts.save_iteration is not None:
        from megatron.training.checkpointing import save_checkpoint

        save_checkpoint(opts.save_iteration, model, optimizer, scheduler,
                        num_floating_point_operations_so_far=float(opts.save_iteration) * 1e9)
    torch.distributed.barrier()
    torch.distributed.destroy_process_group()
    return 0


if __name__ == "__main__":
    os.environ.setdefault("CUDA_DEVICE_MAX_CONNECTIONS", "1")
    raise SystemExit(main())
