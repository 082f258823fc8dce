"""Logits of a Megatron-Core checkpoint under any TP/PP layout: what ``--verify`` and the layout tests compare.

The checkpoint is loaded with Megatron-Core's ``dist_checkpointing`` into this rank's ``GPTModel`` stage (resharded
to the layout on the fly), and the forward pass runs through Megatron-Core's pipeline schedule (``forward_only``);
the last stage gathers the vocabulary-parallel logits over its tensor-parallel group.

Run under torchrun for a layout (every checkpoint and token file given is evaluated in turn)::

    python -m torch.distributed.run --standalone --nproc-per-node 4 -m megatron_octo.convert.logits \\
        --tp 2 --pp 2 --job CKPT_DIR TOKENS.pt LOGITS.pt [--job ...]

``TOKENS.pt`` holds a LongTensor [b, s]; global rank ``world - tp`` (last stage, first TP rank) writes the fp32
logits [b, s, vocab] (padding columns dropped) to ``LOGITS.pt``.
"""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Optional, Sequence

import torch
import torch.distributed as dist

from megatron_octo.config.schema import ModelConfig, ParallelConfig


def load_megatron(ckpt_dir: Path, ctx, dtype: torch.dtype = torch.float32, cfg: Optional[ModelConfig] = None):
    """This rank's GPTModel stage with the checkpoint's weights, in eval mode; returns (model, tcfg, cfg).
    ``cfg`` is the model's description where the checkpoint carries none of ours (a NeMo ``model_weights``).

    Loads with Megatron-Core's ``dist_checkpointing.load`` into the bare GPTModel (no DDP, no gradient buffers:
    one copy of the model in memory), under whatever key prefix the checkpoint uses (see ``dist_io.KEY_PREFIX``).
    """
    from megatron.core import dist_checkpointing

    from megatron_octo.convert.dist_io import DistCheckpoint
    from megatron_octo.convert.sources import model_config
    from megatron_octo.models.gpt import build_gpt_model, te_available, transformer_config
    from megatron_octo.training import checkpoint

    if cfg is None:  # one of ours: a checkpoint directory, or a save folder / run directory naming one
        ckpt_dir = checkpoint.resolve(str(ckpt_dir))
        cfg = model_config(checkpoint.read_meta(ckpt_dir))
    # Checkpoint keys do not depend on the spec: a TE-trained checkpoint loads into local layers where TE is absent.
    use_te = cfg.spec != "local" and te_available()
    tcfg = transformer_config(cfg, ParallelConfig(tp=ctx.tp, pp=ctx.pp), dtype)
    gpt = build_gpt_model(
        cfg, tcfg, ctx.pgs, pre_process=ctx.is_first_stage, post_process=ctx.is_last_stage, use_te=use_te
    ).to(ctx.device)
    prefix = DistCheckpoint(ckpt_dir).prefix
    state = dist_checkpointing.load({"model": gpt.sharded_state_dict(prefix=prefix)}, str(ckpt_dir))["model"]
    result = gpt.load_state_dict({k[len(prefix) :]: v for k, v in state.items()}, strict=False)
    if result.unexpected_keys or any(not k.endswith("_extra_state") for k in result.missing_keys):
        raise RuntimeError(f"loading {ckpt_dir}: unexpected {result.unexpected_keys}, missing {result.missing_keys}")
    return gpt.eval(), tcfg, cfg


@torch.no_grad()
def forward_logits(gpt, tcfg, cfg: ModelConfig, ids: torch.Tensor, ctx) -> Optional[torch.Tensor]:
    """Logits [b, s, vocab] (fp32, padding columns dropped) of token ids [b, s] on last-stage ranks, else None."""
    from megatron.core.pipeline_parallel import get_forward_backward_func
    from megatron.core.pipeline_parallel.p2p_communication import P2PCommunicator

    b, s = ids.shape

    def step(data_iterator, model):
        tokens = next(data_iterator).to(ctx.device)  # [b, s]
        positions = torch.arange(s, device=ctx.device).unsqueeze(0).expand(b, -1)  # [b, s]
        return model(tokens, positions, None), None  # no loss function: the schedule keeps the raw output

    outputs = get_forward_backward_func()(
        forward_step_func=step,
        data_iterator=iter([ids]),
        model=[gpt],
        num_microbatches=1,
        seq_length=s,
        micro_batch_size=b,
        forward_only=True,
        p2p_communicator=P2PCommunicator(pp_group=ctx.pgs.pp, config=tcfg),
        pg_collection=ctx.pgs,
    )
    if not ctx.is_last_stage:
        return None
    local = outputs[0].float().contiguous()  # [b, s, v_padded / tp]
    if ctx.tp > 1:
        parts = [torch.empty_like(local) for _ in range(ctx.tp)]
        dist.all_gather(parts, local, group=ctx.pgs.tp)
        local = torch.cat(parts, dim=-1)  # [b, s, v_padded]
    return local[..., : cfg.vocab_size].cpu()


def _parse(argv: Optional[Sequence[str]]) -> argparse.Namespace:
    p = argparse.ArgumentParser(
        prog="python -m megatron_octo.convert.logits",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("--tp", type=int, default=1)
    p.add_argument("--pp", type=int, default=1)
    p.add_argument("--job", nargs=3, action="append", required=True, metavar=("CKPT", "TOKENS", "OUT"))
    return p.parse_args(argv)


def main(argv: Optional[Sequence[str]] = None) -> int:
    from megatron_octo import parallel

    args = _parse(argv)
    ctx = parallel.initialize(ParallelConfig(tp=args.tp, pp=args.pp), seed=0)
    try:
        for ckpt, tokens, out in args.job:
            gpt, tcfg, cfg = load_megatron(Path(ckpt), ctx)
            logits = forward_logits(gpt, tcfg, cfg, torch.load(tokens), ctx)
            if logits is not None and ctx.tp_rank == 0:
                torch.save(logits, out)
            dist.barrier()
    finally:
        parallel.destroy(ctx)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
