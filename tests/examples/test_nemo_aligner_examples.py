"""examples/rl/nemo_aligner: the launch scripts parse, the YAML overrides parse and carry RECIPE.md's RL numbers
(written here from RECIPE.md, Stage 3, not read from the files under test) under NeMo-Aligner 0.7.0's key names,
and prepare_prompts.py writes the prompt file the actor and the reward server share."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

REPO = Path(__file__).resolve().parents[2]
EXAMPLES = REPO / "examples" / "rl" / "nemo_aligner"
SCRIPTS = ["launch_ppo.sbatch", "actor.sh", "critic.sh", "reward_server.sh"]

# RECIPE.md, Stage 3 (paper column) -> NeMo-Aligner 0.7.0 gpt_ppo_actor.yaml keys.
RECIPE_ACTOR = {
    "model.optim.lr": 1e-6,  # actor LR 1e-6 ...
    "model.optim.sched.min_lr": 1e-6,  # ... constant
    "model.optim.sched.warmup_steps": 0,
    "trainer.ppo.initial_policy_kl_penalty": 0.0,  # KL coefficient 0
    "model.ppo.entropy_bonus": 0.0,  # entropy coefficient 0
    "model.ppo.ratio_eps": 0.2,  # clip ratio
    "trainer.ppo.gradient_clip_val": 1.0,  # grad clip
    "model.ppo.sampling_params.temperature": 1.0,
    "model.ppo.sampling_params.top_p": 1.0,
    "model.ppo.length_params.max_length": 4096,  # max response length
    "trainer.ppo.trt_llm.max_input_len": 400,  # max prompt length
    "model.ppo.num_rollout_samples": 128 * 16,  # 128 prompts a step x 16 rollouts
    "model.global_batch_size": 64 * 16,  # PPO mini-batch of 64 prompts
}
STOP = ["User:", "Assistant:", "Question:", "Answer:"]
# RECIPE.md, Stage 3 -> NeMo-Aligner 0.7.0 gpt_reinforce_actor.yaml keys (the GRPO-like RLOO run, no critic).
RECIPE_REINFORCE = {
    "model.optim.lr": 1e-6, "model.optim.sched.min_lr": 1e-6,
    "trainer.reinforce.initial_policy_kl_penalty": 0.0,
    "trainer.reinforce.num_rollouts_per_prompt": 16,  # 16 rollouts a prompt
    "model.reinforce.num_rollout_samples": 128,  # 128 prompts a step
    "model.global_batch_size": 64 * 16,  # mini-batch of 64 prompts (x 16 rollouts)
    "trainer.reinforce.gradient_clip_val": 1.0,
    "model.reinforce.sampling_params.temperature": 1.0, "model.reinforce.sampling_params.top_p": 1.0,
    "model.reinforce.length_params.max_length": 4096,
    "trainer.reinforce.trt_llm.max_input_len": 400,
}
MATH500 = 500  # problems in the validation set (shared/data/eval/math500_test.jsonl)
RL_STEPS = 400  # RECIPE.md: the response-length schedule runs to step 400


def _load(name):
    return yaml.safe_load((EXAMPLES / name).read_text())


def _at(cfg, dotted):
    for key in dotted.split("."):
        cfg = cfg[key]
    return cfg


@pytest.mark.parametrize("script", SCRIPTS)
def test_scripts_parse_with_bash_n(script):
    out = subprocess.run(["bash", "-n", str(EXAMPLES / script)], capture_output=True, text=True)
    assert out.returncode == 0, out.stderr


def test_actor_yaml_carries_the_recipe_rl_numbers():
    actor = _load("actor.yaml")
    assert actor["defaults"] == ["gpt_ppo_actor", "_self_"]  # composed over NeMo-Aligner's own config
    for key, value in RECIPE_ACTOR.items():
        assert _at(actor, key) == pytest.approx(value), key
    assert _at(actor, "model.ppo.sampling_params.end_strings")[:4] == STOP
    assert _at(actor, "model.encoder_seq_length") >= 400 + 4096
    assert actor["remote_critic_rm"]["combine_rm_and_critic_server"] is False
    assert _at(actor, "trainer.ppo.trt_llm.enable") is True  # the path the vLLM adapter takes over


def test_critic_yaml_matches_the_actor():
    actor, critic = _load("actor.yaml"), _load("critic.yaml")
    assert critic["defaults"] == ["gpt_ppo_critic", "_self_"]
    assert critic["trainer"]["ppo"]["combine_rm_and_critic_server"] is False
    assert critic["trainer"]["ppo"]["port"] == actor["remote_critic_rm"]["critic"]["port"]
    for key in ("encoder_seq_length", "global_batch_size"):
        assert critic["model"][key] == actor["model"][key]


def _leaves(cfg, prefix=""):
    for key, value in cfg.items():
        if isinstance(value, dict):
            yield from _leaves(value, f"{prefix}{key}.")
        else:
            yield f"{prefix}{key}"


def test_reinforce_yaml_carries_the_recipe_rl_numbers():
    run = _load("reinforce.yaml")
    assert run["defaults"] == ["gpt_reinforce_actor", "_self_"]
    for key, value in RECIPE_REINFORCE.items():
        assert _at(run, key) == pytest.approx(value), key
    assert _at(run, "model.reinforce.sampling_params.end_strings")[:4] == STOP


def actor_data_parallel_size() -> int:
    """The actor's ranks in launch_ppo.sbatch (its last het group: nodes x tasks per node); TP = PP = 1 (the
    adapter's requirement), so this is the data-parallel size NeMo's samplers divide by."""
    groups = [line for line in (EXAMPLES / "launch_ppo.sbatch").read_text().splitlines()
              if line.startswith("#SBATCH -N")]
    fields = groups[-1].split()
    return int(fields[fields.index("-N") + 1]) * int(fields[fields.index("--ntasks-per-node") + 1])


def check_sampler_rules(cfg: dict, algo: str, dp: int) -> list:
    """NeMo's rules for a composed actor config at data-parallel size ``dp`` (BaseMegatronSampler: a global batch
    divides into micro-batch x DP; the trainers split each step's rollouts into model mini-batches); the broken
    ones, as text."""
    block, broken = cfg["model"][algo], []
    rollouts = block["num_rollout_samples"] * cfg["trainer"][algo].get("num_rollouts_per_prompt", 1)
    rules = {
        "rollout": (block["num_rollout_samples"], block["rollout_micro_batch_size"] * dp),
        "validation": (block["num_val_samples"], block["val_rollout_micro_batch_size"] * dp),
        "model batch": (cfg["model"]["global_batch_size"], cfg["model"]["micro_batch_size"] * dp),
        "mini-batches a step": (rollouts, cfg["model"]["global_batch_size"]),
    }
    for name, (total, unit) in rules.items():
        if total % unit:
            broken.append(f"{name}: {total} % {unit} != 0")
    if block["num_val_samples"] > MATH500:
        broken.append(f"validation: {block['num_val_samples']} samples from {MATH500} problems")
    return broken


@pytest.mark.parametrize("name, algo", [("actor.yaml", "ppo"), ("reinforce.yaml", "reinforce")])
def test_batch_sizes_divide_at_the_shipped_layout(name, algo):
    """Written configs only (the values NeMo-Aligner's defaults would add are checked after composition below)."""
    cfg = _load(name)
    assert check_sampler_rules(cfg, algo, actor_data_parallel_size()) == []
    assert cfg["trainer"][algo]["max_steps"] == RL_STEPS
    assert _at(cfg, f"model.{algo}.vllm.greedy_validation") is True


def test_the_old_validation_sizes_are_caught():
    """The rule check on the configuration that crashed at the first validation (500 samples, 64 a micro-batch)."""
    cfg = _load("actor.yaml")
    cfg["model"]["ppo"].update(num_val_samples=500, val_rollout_micro_batch_size=64)
    assert check_sampler_rules(cfg, "ppo", 16) == ["validation: 500 % 1024 != 0"]


@pytest.mark.parametrize("ours, theirs", [("actor.yaml", "gpt_ppo_actor.yaml"), ("critic.yaml", "gpt_ppo_critic.yaml"),
                                          ("reinforce.yaml", "gpt_reinforce_actor.yaml")])
def test_every_key_exists_in_nemo_aligner_config(ours, theirs):
    """Our keys are NeMo-Aligner 0.7.0's (a misspelt key would be added silently by Hydra's composition), except
    the adapter's own model.ppo.vllm block. Needs NeMo-Aligner's examples/nlp/gpt/conf (NEMO_ALIGNER_CONF, default
    /opt/NeMo-Aligner/examples/nlp/gpt/conf as in the aligner image)."""
    base = yaml.safe_load((_nemo_aligner_conf() / theirs).read_text())
    mine = {k: v for k, v in _load(ours).items() if k != "defaults"}
    missing = [key for key in _leaves(mine) if not key.startswith(("model.ppo.vllm.", "model.reinforce.vllm."))
               and not _has(base, key)]
    assert missing == []


def _nemo_aligner_conf() -> Path:
    conf = Path(os.environ.get("NEMO_ALIGNER_CONF", "/opt/NeMo-Aligner/examples/nlp/gpt/conf"))
    if not (conf / "gpt_ppo_actor.yaml").is_file():
        pytest.skip(f"NeMo-Aligner's configs are not at {conf}: set NEMO_ALIGNER_CONF to its examples/nlp/gpt/conf")
    return conf


def test_configs_compose_over_nemo_aligner_with_hydra():
    """What the launch scripts ask Hydra for (--config-path here, hydra.searchpath at NeMo-Aligner's configs)
    composes, and the composed actor carries the recipe values and the adapter's block."""
    pytest.importorskip("hydra", reason="hydra-core is not installed here (the aligner venv has it)")
    from hydra import compose, initialize_config_dir
    from omegaconf import OmegaConf

    search = f"hydra.searchpath=[file://{_nemo_aligner_conf()}]"
    for name, resolver in (("subtract", lambda a, b: a - b), ("int_div", lambda a, b: a // b),
                           ("multiply", lambda a, b: a * b)):  # NeMo-Aligner registers these at import
        if not OmegaConf.has_resolver(name):
            OmegaConf.register_new_resolver(name, resolver)
    with initialize_config_dir(config_dir=str(EXAMPLES), version_base=None):
        actor = compose(config_name="actor", overrides=[search, "model.ppo.vllm.model_dir=/m"])
        critic = compose(config_name="critic", overrides=[search])
        reinforce = compose(config_name="reinforce", overrides=[search, "model.reinforce.vllm.model_dir=/m"])
    dp = actor_data_parallel_size()
    for cfg, algo in ((actor, "ppo"), (reinforce, "reinforce")):
        resolved = {part: OmegaConf.to_container(cfg[part], resolve=True) for part in ("model", "trainer")}
        assert check_sampler_rules(resolved, algo, dp) == []
        assert resolved["trainer"]["max_steps"] == RL_STEPS  # NeMo's trainer reads the top-level copy
    for key, value in RECIPE_REINFORCE.items():
        assert OmegaConf.select(reinforce, key) == pytest.approx(value), key
    for key, value in RECIPE_ACTOR.items():
        assert OmegaConf.select(actor, key) == pytest.approx(value), key
    assert actor.model.ppo.trt_llm.max_input_len == 400  # the actor reads trt_llm through model.ppo
    assert actor.trainer.ppo.model_gbs == 1024 and actor.model.ppo.vllm.model_dir == "/m"
    assert critic.trainer.ppo.combine_rm_and_critic_server is False


def _has(cfg, dotted):
    for key in dotted.split("."):
        if not isinstance(cfg, dict) or key not in cfg:
            return False
        cfg = cfg[key]
    return True


def test_prepare_prompts_feeds_actor_and_reward_server(tmp_path):
    from transformers import AutoTokenizer

    from megatron_octo.eval.prompts import TEMPLATES
    from megatron_octo.serve.reward_server import AnswerBook
    from tests.eval.helpers import shared_data_dir
    from tests.serve.helpers import train_tokenizer

    rows = (shared_data_dir() / "rl" / "math8k_train.jsonl").read_text(encoding="utf-8").splitlines()
    src = tmp_path / "math8k_head.jsonl"
    src.write_text("\n".join(rows[:60]) + "\n", encoding="utf-8")
    problems = [json.loads(r)["prompt"] for r in rows[:60]]
    tok = train_tokenizer([TEMPLATES["complex"][0]] + problems, tmp_path / "tok")
    lengths = sorted(len(AutoTokenizer.from_pretrained(str(tok))(TEMPLATES["complex"][0].replace("{question}", q))
                         .input_ids) for q in problems)
    limit = lengths[len(lengths) // 2]  # the median: some prompts kept, some dropped
    out = tmp_path / "prompts.jsonl"
    cmd = [sys.executable, str(EXAMPLES / "prepare_prompts.py"), "--input", str(src), "--output", str(out),
           "--tokenizer", str(tok), "--max-prompt-tokens", str(limit)]
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(REPO), os.environ.get("PYTHONPATH", "")]))
    done = subprocess.run(cmd, capture_output=True, text=True, cwd=REPO, timeout=300, env=env)
    assert done.returncode == 0, done.stderr
    recs = [json.loads(line) for line in out.read_text(encoding="utf-8").splitlines()]
    assert 25 <= len(recs) < 60 and f"over {limit} tokens" in done.stderr  # the longer half dropped
    assert all(r["text"].endswith("\nAssistant:") and r["answer"] for r in recs)
    book = AnswerBook.from_jsonl(out)
    assert book.split(recs[0]["text"] + " so \\boxed{1}") == (recs[0]["answer"], " so \\boxed{1}")
    again = subprocess.run(cmd, capture_output=True, text=True, cwd=REPO, timeout=300, env=env)
    assert again.returncode == 2 and "--overwrite" in again.stderr
