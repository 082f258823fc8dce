"""NeMo-Aligner 0.7's PPO and REINFORCE steps on CPU in one process (aligner venv), wired as its
``train_gpt_ppo_actor.py`` / ``serve_ppo_critic.py`` / ``train_gpt_reinforce_actor.py`` wire them, with:

- generation by our adapter (``megatron_octo.serve.aligner_adapter``, installed in place of TensorRT-LLM) on its CPU
  backend (``backend: transformers``), refit from the actor's weights before every rollout;
- the reward from our reward server's scoring code (``serve.reward_server.RewardInferFunc``: the PyTriton callable);
- the critic: NeMo-Aligner's ``MegatronGPTCriticModel`` restored strictly from our ``--critic`` export, trained and
  saved by its ``CriticServerTrainer``;
- PyTriton: the test runs the reward and critic servers as processes (``serve_critic`` here is the critic's entry);
  without PyTriton installed, ``nemo_cpu.inprocess_pytriton`` calls the same server functions directly. The scripts
  themselves and their Hydra configs are not in the nemo-aligner wheel, so the configs are written here
  (``actor_config``) with the keys NeMo-Aligner reads.

The functions return what the test checks; nothing here asserts.
"""

from __future__ import annotations

import json
from functools import partial
from pathlib import Path

import torch

from tests.aligner import nemo_cpu

END_STRINGS = ["}"]  # the answer's closing brace ends a response (kept in it, as TensorRT-LLM keeps stop words)
MAX_NEW = 6
LR = 0.05  # SGD (see _cpu_model_overrides): large enough for one step to move the log-probs measurably


def _cpu_model_overrides(lr: float) -> dict:
    """The model-config keys a CPU run changes (nemo_cpu.cpu_overrides) plus a torch optimizer in place of the
    export's (``overwrite_base_config``): NeMo's fused and distributed Adam need apex, and torch's Adam keeps a 0-d
    ``step`` tensor per parameter, which Megatron-Core 0.11's optimizer-state sharding refuses at the checkpoint
    save ("Optimizer shape (()) does not match model shape"); plain SGD has no such state."""
    return {"transformer_engine": False, "tensor_model_parallel_size": 1, "pipeline_model_parallel_size": 1,
            "precision": 32, "megatron_amp_O2": False, "sequence_parallel": False,
            "optim": {"name": "sgd", "lr": lr, "weight_decay": 0.0, "momentum": 0.0},
            "overwrite_base_config": {"optim": True}}


def _trainer_cfg(max_steps: int) -> dict:
    return {"num_nodes": 1, "devices": 1, "accelerator": "cpu", "precision": 32, "logger": False,
            "enable_checkpointing": False, "use_distributed_sampler": False, "max_time": None,
            "max_epochs": 1, "max_steps": max_steps, "gradient_clip_val": 1.0, "enable_progress_bar": False}


def _exp_manager(out: Path, name: str, monitor: str, top_k: int = 1) -> dict:
    return {"explicit_log_dir": str(out), "exp_dir": None, "name": name, "create_wandb_logger": False,
            "create_tensorboard_logger": False, "resume_if_exists": False, "resume_ignore_no_checkpoint": True,
            "create_checkpoint_callback": True,
            "checkpoint_callback_params": {"monitor": monitor, "save_top_k": top_k, "mode": "max",
                                           "always_save_nemo": False, "save_nemo_on_train_end": False,
                                           "filename": "megatron_gpt-{step}", "model_parallel_size": 1}}


def actor_config(fx: Path, out: Path, algo: str, ports=(5555, 5556)):
    """The actor's config: NeMo-Aligner's PPO (``algo="ppo"``) or REINFORCE keys at tiny sizes, 2 steps; ``ports``:
    (reward server, critic server)."""
    from omegaconf import OmegaConf

    prompts = str(fx / "prompts.jsonl")
    steps_cfg = {"max_epochs": 1, "max_steps": 2, "val_check_interval": 2, "save_interval": 2,
                 "gradient_clip_val": 1.0, "initial_policy_kl_penalty": 0.01, "use_absolute_kl": True,
                 "normalize_advantages": True, "rollout_batch_seq_length": None,
                 "trt_llm": {"enable": True, "reshard": False, "max_input_len": 64, "seed": 1234,
                             "model_type": "llama", "unload_engine_train": False},
                 "batch_iterator": {"use_flask": False}}
    algo_cfg = {"rollout_micro_batch_size": 2, "forward_micro_batch_size": 2, "val_rollout_micro_batch_size": 2,
                "num_val_samples": 2, "offload_adam_states": False, "entropy_bonus": 0.0, "ratio_eps": 0.2,
                "sampling_params": {"use_greedy": False, "temperature": 1.0, "top_k": 0, "top_p": 1.0,
                                    "repetition_penalty": 1.0, "add_BOS": False, "all_probs": False,
                                    "compute_logprob": False, "end_strings": END_STRINGS},
                "length_params": {"max_length": MAX_NEW, "min_length": 1},
                "trt_llm": "${trainer." + algo + ".trt_llm}",
                "vllm": {"model_dir": str(fx / "hf"), "backend": "transformers", "dtype": "float32",
                         "enable_sleep_mode": False}}
    if algo == "ppo":
        steps_cfg |= {"critic_warmup_steps": 0, "discount_factor": 1.0, "gae_lambda": 0.95,
                      "model_gbs": 4, "model_mbs": 2}
        algo_cfg |= {"num_rollout_samples": 4}
        client = {"pad_to_length": 32, "combine_rm_and_critic_server": False,
                  "reward_model": {"name": "reward_model", "ip": "localhost", "port": ports[0]},
                  "critic": {"name": {"train": "critic_train", "infer": "critic_infer", "save": "critic_save"},
                             "ip": "localhost", "port": ports[1]}}
    else:
        # 2 prompts x 2 samples; micro-batch 1: NeMo-Aligner 0.7's REINFORCE loss multiplies [batch, seq] log-probs
        # by a [batch] advantage, which broadcasts only for one row (its own config's micro_batch_size)
        steps_cfg |= {"num_rollouts_per_prompt": 2, "model_gbs": 4, "model_mbs": 1}
        algo_cfg |= {"num_rollout_samples": 2}
        client = {"pad_to_length": 32, "reward_model": {"name": "reward_model", "ip": "localhost", "port": ports[0]}}
    model = _cpu_model_overrides(LR) | {
        "micro_batch_size": 2 if algo == "ppo" else 1, "global_batch_size": 4, "seed": 1234, algo: algo_cfg,
        "peft": {"peft_scheme": "none", "restore_from_path": None},
        "data": {"data_impl": "jsonl", "splits_string": None, "seq_length": 64, "skip_warmup": True,
                 "num_workers": 0, "reset_position_ids": False, "reset_attention_mask": False,
                 "eod_mask_loss": False, "index_mapping_dir": None,
                 "data_prefix": {"train": [prompts], "validation": [prompts], "test": [prompts]}},
        "encoder_seq_length": 256,
    }
    trainer = _trainer_cfg(2) | {algo: steps_cfg}
    cfg = {"trainer": trainer, "remote_critic_rm" if algo == "ppo" else "remote_rm": client,
           "exp_manager": _exp_manager(out, f"megatron_gpt_{algo}_actor", "val_rewards"),
           "pretrained_checkpoint": {"restore_from_path": str(fx / "actor")}, "model": model}
    return OmegaConf.create(cfg)


def critic_config(fx: Path, out: Path, port: int = 5556):
    from omegaconf import OmegaConf

    model = _cpu_model_overrides(0.1) | {
        "micro_batch_size": 2, "global_batch_size": 4, "forward_micro_batch_size": 2, "loss_clip_val": 0.2,
        "offload_adam_states": False, "output_sequence": True, "seed": 1234,
        "reward_standardization": {"enable": False, "mean": None, "std": None}}
    trainer = _trainer_cfg(10) | {"ppo": {"port": port, "combine_rm_and_critic_server": False, "max_steps": 10,
                                          "gradient_clip_val": 1.0, "inference_micro_batch_size": 2}}
    return OmegaConf.create({"trainer": trainer, "model": model,
                             "exp_manager": _exp_manager(out, "megatron_gpt_critic", "step", top_k=0),
                             "pretrained_checkpoint": {"restore_from_path": str(fx / "critic")}})


def _load(cls, cfg, pop_key):
    """trainer + model as the scripts make them: NeMo-Aligner's own config merge, trainer builder, exp_manager and
    strict ``load_from_nemo``."""
    from nemo.utils.exp_manager import exp_manager
    from nemo_aligner.utils.train_script_utils import resolve_and_create_trainer
    from nemo_aligner.utils.utils import load_and_override_model_config, load_from_nemo

    cfg.model = load_and_override_model_config(cfg.pretrained_checkpoint.restore_from_path, cfg.model)
    trainer = resolve_and_create_trainer(cfg, pop_key)
    exp_manager(trainer, cfg.exp_manager)
    model = load_from_nemo(cls, cfg.model, trainer, strict=True, restore_path=cfg.pretrained_checkpoint.restore_from_path)
    return trainer, model


def start_critic(fx: Path, out: Path, port: int = 5556):
    """NeMo-Aligner's critic server (``CriticServerTrainer``), set up as ``serve_ppo_critic.py`` does; bound to the
    in-process transport too (used when PyTriton is absent). Records its updates in OUT/critic_record.json."""
    from megatron.core.num_microbatches_calculator import unset_num_microbatches_calculator
    from nemo_aligner.algorithms.critic_server_trainer import CriticServerTrainer
    from nemo_aligner.models.nlp.gpt.megatron_gpt_critic import MegatronGPTCriticModel
    from nemo_aligner.utils.text_generation_utils import tokenize_batch
    from nemo_aligner.utils.train_script_utils import (
        CustomLoggerWrapper, add_custom_checkpoint_callback, extract_optimizer_scheduler_from_ptl_model,
        init_distributed, init_using_ptl,
    )

    from megatron_octo.serve import aligner_adapter

    assert aligner_adapter.fix_critic_server()  # what the launcher applies to serve_ppo_critic.py
    unset_num_microbatches_calculator()  # see run_actor
    cfg = critic_config(fx, out, port)
    trainer, model = _load(MegatronGPTCriticModel, cfg, "ppo")
    init_distributed(trainer, model, False)
    init_using_ptl(trainer, model, None, None)
    optimizer, scheduler = extract_optimizer_scheduler_from_ptl_model(model)
    critic = CriticServerTrainer(
        cfg=cfg.trainer.ppo, model=model, optimizer=optimizer, scheduler=scheduler,
        logger=CustomLoggerWrapper(trainer.loggers), ckpt_callback=add_custom_checkpoint_callback(trainer, model),
        tokenize_func=partial(tokenize_batch, tokenizer=model.tokenizer, max_len=cfg.model.encoder_seq_length,
                              add_BOS=False, add_EOS=False),
        gbs=cfg.model.global_batch_size, model_forward_micro_batch_size=cfg.model.forward_micro_batch_size)
    nemo_cpu.SERVERS.update(critic_infer=critic.server_infer, critic_train=critic.server_train,
                            critic_save=critic.server_save)
    _record_critic_updates(critic, out / "critic_record.json")
    return critic


def _record_critic_updates(critic, path: Path) -> None:
    """After each ``run_training`` (what ``server_train`` calls): its loss, how much of the value head is nonzero
    (the export's head is zero) and whether the final norm moved, appended to ``path`` (JSON list)."""
    state = critic.model.model.state_dict()
    norm0 = state["decoder.final_layernorm.weight"].detach().clone()
    records = [{"loss": None, "head_nonzero": int(torch.count_nonzero(state["rm_head.weight"])), "norm_moved": False}]
    original = critic.run_training

    def run_training(**batch):
        loss = original(**batch)
        now = critic.model.model.state_dict()
        records.append({"loss": float(loss), "head_nonzero": int(torch.count_nonzero(now["rm_head.weight"])),
                        "norm_moved": not torch.equal(now["decoder.final_layernorm.weight"], norm0)})
        path.write_text(json.dumps(records))
        return loss

    critic.run_training = run_training
    path.write_text(json.dumps(records))


def start_reward(fx: Path):
    """Our reward server's PyTriton callable (``RewardInferFunc``) bound to the in-process transport as
    ``reward_model``; returns its scorer (to close) and a log of every request's rewards."""
    from megatron_octo.serve.reward_server import RewardInferFunc, RewardScorer, RewardServerConfig

    scorer = RewardScorer(RewardServerConfig(answers=str(fx / "answers.jsonl"), tokenizer=str(fx / "hf"),
                                             response_marker="A:", workers=1))
    infer = RewardInferFunc(scorer)
    seen: list = []

    def reward_model(**inputs):
        (result,) = infer([inputs])  # one request, as Triton hands requests to the callable
        seen.append(result["rewards"].ravel().tolist())
        return result

    nemo_cpu.SERVERS["reward_model"] = reward_model
    return scorer, seen


class RecordingLogger:
    """NeMo-Aligner's ``CustomLoggerWrapper`` over the trainer's loggers, also keeping every logged metric."""

    def __init__(self, loggers):
        from nemo_aligner.utils.train_script_utils import CustomLoggerWrapper

        self.inner = CustomLoggerWrapper(loggers)
        self.metrics: list = []

    def log_metrics(self, metrics, step=None, prefix=""):
        self.metrics.append((step, {f"{prefix}{k}": v for k, v in metrics.items()}))
        self.inner.log_metrics(metrics, step=step, prefix=prefix)

    def __getattr__(self, name):
        return getattr(self.inner, name)


def _watch_refits(actor, probe: torch.Tensor, record: list) -> None:
    """After each refit of the actor's generation adapter: the generation model's log-probs of ``probe`` [2, s] and
    the actor's own (NeMo-Aligner's ``get_inference_log_probs``) at that moment, and the actor's refit source."""
    adapter = actor.trtllm_generate
    original = adapter.refit

    def refit(model):
        original(model)
        engine = adapter.service.engine.model
        with torch.no_grad():
            logits = engine(input_ids=probe).logits.float()  # [b, s, vocab]
        engine_lp = torch.log_softmax(logits[:, :-1], -1).gather(-1, probe[:, 1:, None]).squeeze(-1)
        record.append({"engine": engine_lp, "actor": actor.get_inference_log_probs(probe).float().cpu(),
                       "refits": adapter.service.refits})

    adapter.refit = refit


def run_actor(fx: Path, out: Path, algo: str, probe: torch.Tensor, ports=(5555, 5556)) -> dict:
    """NeMo-Aligner's PPO (with the critic) or REINFORCE actor for 2 steps; what the test checks."""
    from megatron.core.num_microbatches_calculator import unset_num_microbatches_calculator
    from megatron.core.utils import divide
    from nemo_aligner.data.nlp.builders import (
        build_dataloader, build_train_valid_test_rlhf_datasets, collate_with_pad_to_max_batch,
    )
    from nemo_aligner.utils import parallel_state
    from nemo_aligner.utils.batch_iterators import get_batch_iterator_cls
    from nemo_aligner.utils.distributed import Timer
    from nemo_aligner.utils.train_script_utils import (
        add_custom_checkpoint_callback, extract_optimizer_scheduler_from_ptl_model, init_distributed, init_peft,
        init_using_ptl,
    )
    from nemo_aligner.utils.utils import retrieve_model_state_dict_in_cpu

    from megatron_octo.serve import aligner_adapter

    aligner_adapter.install()  # before the actor modules import nemo_aligner.utils.trt_llm (as the launcher does)
    if algo == "ppo":
        from nemo_aligner.algorithms.ppo import PPOTrainer as Trainer
        from nemo_aligner.models.nlp.gpt.megatron_gpt_ppo_actor import MegatronGPTActorModel as Actor
        from nemo_aligner.models.nlp.gpt.reward_critic_clients import RemoteGPTRMCriticClient as Client
    else:
        from nemo_aligner.algorithms.reinforce import ReinforceTrainer as Trainer
        from nemo_aligner.models.nlp.gpt.megatron_gpt_reinforce_actor import MegatronGPTReinforceActorModel as Actor
        from nemo_aligner.models.nlp.gpt.reward_critic_clients import RemoteGPTRMClient as Client

    aligner_adapter._mark_validation()
    # Each NeMo-Aligner script has a process of its own; here an earlier model's global micro-batch calculator (the
    # critic's, or another test's) would trip NeMo's check that a new model's batch sizes match it. The critic and
    # the actors reconfigure it before each use (configure_batch_sizes).
    unset_num_microbatches_calculator()
    cfg = actor_config(fx, out, algo, ports)
    trainer, actor = _load(Actor, cfg, algo)
    init_peft(actor, cfg.model)
    actor.init_policy_state_dict = retrieve_model_state_dict_in_cpu(actor, megatron_amp_O2=False)
    init_distributed(trainer, actor, False)
    train_ds, val_ds, _ = build_train_valid_test_rlhf_datasets(
        cfg=cfg.model, data_prefix=cfg.model.data.data_prefix, data_impl="jsonl", splits_string=None,
        train_valid_test_num_samples=[-1, -1, -1], seq_length=cfg.model.data.seq_length, seed=cfg.model.seed,
        tokenizer=actor.tokenizer)
    algo_cfg = cfg.model[algo]
    collate = collate_with_pad_to_max_batch(algo_cfg.length_params.max_length, actor.tokenizer.eos_id, cfg,
                                            generate_masks_and_position_ids=False)
    loaders = {name: partial(build_dataloader, cfg=cfg, dataset=ds, mbs=mbs, gbs=gbs, collate_fn=collate,
                             load_gbs=False, **extra)
               for name, ds, mbs, gbs, extra in (
                   ("train", train_ds, algo_cfg.rollout_micro_batch_size, algo_cfg.num_rollout_samples, {}),
                   ("val", val_ds, algo_cfg.val_rollout_micro_batch_size, algo_cfg.num_val_samples,
                    {"use_random_sampler": False}))}
    batches = torch.utils.data.DataLoader(
        train_ds, batch_size=divide(cfg.model.global_batch_size, parallel_state.get_data_parallel_world_size()))
    init_using_ptl(trainer, actor, batches, train_ds)
    del actor._train_dl
    optimizer, scheduler = extract_optimizer_scheduler_from_ptl_model(actor)
    initial = {k: v.detach().clone() for k, v in actor.model.state_dict().items() if v is not None}
    refits: list = []
    _watch_refits(actor, probe, refits)
    logger = RecordingLogger(trainer.loggers)
    client = Client(cfg.remote_critic_rm if algo == "ppo" else cfg.remote_rm)
    rewards = _record_rewards(client, "infer_rm_critic" if algo == "ppo" else "infer_rm")
    kwargs = {"rm_critic": client} if algo == "ppo" else {"rm": client}
    steps = Trainer(cfg=cfg.trainer[algo], model=actor, optimizer=optimizer, scheduler=scheduler,
                    train_dataloader_builder=loaders["train"], val_dataloader_builder=loaders["val"],
                    collate_fn=collate, batch_iterator_cls=get_batch_iterator_cls(cfg.trainer[algo].batch_iterator),
                    logger=logger, ckpt_callback=add_custom_checkpoint_callback(trainer, actor),
                    run_timer=Timer(None), **kwargs)
    steps.fit()
    final = {k: v.detach().clone() for k, v in actor.model.state_dict().items() if v is not None}
    client.communicator.close()  # as the scripts do at the end
    return {"trainer": steps, "actor": actor, "metrics": logger.metrics, "refits": refits, "initial": initial,
            "final": final, "cfg": cfg, "rewards": rewards}


def _record_rewards(client, method: str) -> list:
    """Every reward the actor's client receives (the futures' results, as the trainer reads them)."""
    from nemo_aligner.utils.server_utils import FutureResult

    seen: list = []
    send = getattr(client, method)

    class Recorded(FutureResult):  # the PPO trainer calls result() only on a FutureResult
        def __init__(self, future):
            self.future = future

        def result(self):
            out = self.future.result()
            seen.extend((out[0] if isinstance(out, tuple) else out).flatten().tolist())
            return out

    def infer(rollout_batch):
        return Recorded(send(rollout_batch))

    setattr(client, method, infer)
    return seen


def serve_critic(fx: Path, out: Path, port: int) -> None:
    """``python -m tests.aligner.ppo_run FX OUT PORT``: the critic server in its own process, served over PyTriton
    (``CriticServerTrainer.run_server``) until terminated."""
    from megatron_octo.serve.reward_server import _match_stub_libpython

    # Triton's Python backend stub must load this interpreter's libpython (see the function): our reward server does
    # the same before it starts Triton; NeMo-Aligner's critic server does not need to in its container.
    _match_stub_libpython()
    nemo_cpu.apply()
    critic = start_critic(fx, out, port)
    for name in ("server_infer", "server_train", "server_save"):  # bound by run_server, called on Triton's threads
        setattr(critic, name, nemo_cpu.in_cpu_mode(getattr(critic, name)))
    critic.run_server()


if __name__ == "__main__":
    import sys

    serve_critic(Path(sys.argv[1]), Path(sys.argv[2]), int(sys.argv[3]))
