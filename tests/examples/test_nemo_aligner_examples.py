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


@pytest.mark.parametrize("ours, theirs", [("actor.yaml", "gpt_ppo_actor.yaml"), ("critic.yaml", "gpt_ppo_critic.yaml")])
def test_every_key_exists_in_nemo_aligner_config(ours, theirs):
    """Our keys are NeMo-Aligner 0.7.0's (a misspelt key would be added silently by Hydra's composition), except
    the adapter's own model.ppo.vllm block. Needs NeMo-Aligner's examples/nlp/gpt/conf (NEMO_ALIGNER_CONF, default
    /opt/NeMo-Aligner/examples/nlp/gpt/conf as in the aligner image)."""
    base = yaml.safe_load((_nemo_aligner_conf() / theirs).read_text())
    mine = {k: v for k, v in _load(ours).items() if k != "defaults"}
    missing = [key for key in _leaves(mine) if not key.startswith("model.ppo.vllm.")
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
