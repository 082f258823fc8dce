"""Weights & Biases as an optional logger beside metrics.jsonl and TensorBoard (``logging.wandb_project``).

The main rank's metrics writer opens it from the run's own ``RUN_DIR/recipe.yaml`` (the resolved recipe every
stage writes before its first step), so training and RL log the same way. The W&B run id is kept in
``RUN_DIR/wandb_id``: a resumed stage continues the same W&B run. Offline mode writes under ``RUN_DIR/wandb``.
"""

from __future__ import annotations

import uuid
from pathlib import Path
from typing import Dict, Optional

import yaml

from megatron_octo.config.errors import ConfigError

MODES = ("online", "offline", "disabled")


class WandbLogger:
    """One W&B run: ``log(record, step)`` each step (numbers only, named as in TensorBoard: ``train/KEY``,
    ``validation/KEY`` for ``val_KEY``), ``close()`` at the end."""

    def __init__(self, run) -> None:
        self.run = run

    def log(self, record: Dict[str, float], step: int) -> None:
        data = {
            (f"validation/{k[4:]}" if k.startswith("val_") else f"train/{k}"): v
            for k, v in record.items()
            if k != "step" and isinstance(v, (int, float)) and not isinstance(v, bool)
        }
        self.run.log(data, step=step)

    def close(self) -> None:
        self.run.finish()


def open_wandb(run_dir: Path) -> Optional[WandbLogger]:
    """The W&B logger of the run in ``run_dir`` when its recipe sets ``logging.wandb_project``, else None.
    ConfigError (one line) when W&B is asked for but not installed, or the mode is unknown."""
    path = Path(run_dir) / "recipe.yaml"
    try:
        recipe = yaml.safe_load(path.read_text()) if path.is_file() else {}
    except (OSError, yaml.YAMLError):
        return None
    cfg = (recipe or {}).get("logging") or {}
    if not cfg.get("wandb_project"):
        return None
    mode = cfg.get("wandb_mode")
    if mode is not None and mode not in MODES:
        raise ConfigError(f"logging.wandb_mode={mode!r} is not one of: {', '.join(MODES)}")
    try:
        import wandb
    except ImportError:
        raise ConfigError(
            "logging.wandb_project is set but wandb is not installed: pip install 'megatron-octo[wandb]'"
            " (or unset logging.wandb_project)"
        ) from None
    id_file = Path(run_dir) / "wandb_id"
    run_id = id_file.read_text().strip() if id_file.is_file() else uuid.uuid4().hex[:16]
    id_file.write_text(run_id + "\n")
    run = wandb.init(
        project=cfg["wandb_project"],
        entity=cfg.get("wandb_entity"),
        name=cfg.get("wandb_name") or Path(run_dir).resolve().name,
        id=run_id,
        resume="allow",
        dir=str(run_dir),
        mode=mode,
        config=recipe,
    )
    return WandbLogger(run)
