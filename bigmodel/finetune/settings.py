"""The fine-tuning config: `configs/finetune.py` + overrides + the command's flags, checked once.

--task, --from and --scratch are written into the config (task.name, backbone.init_from,
backbone.init) so config.json records them and a resume can refuse a different task or backbone.
Every mistake is one ConfigError line naming the key and the fix.
"""

from __future__ import annotations

import copy
from pathlib import Path

import ml_collections

from bigmodel import config as config_lib
from bigmodel.config import ConfigError, check_optim, check_seed

DEFAULT_CONFIG = str(Path(__file__).resolve().parents[2] / "configs" / "finetune.py")
FLAG_KEYS = {"task.name": "--task", "backbone.init_from": "--from", "backbone.init": "--scratch"}
# What may change between a run and its resumption without changing what it computes.
RESUMABLE_CHANGES = ("train.log_every", "checkpoint.")
CHOICES = {
    "backbone.init": ("pretrained", "scratch"),
    "classifier.pooling": ("last", "mean"),  # bigmodel.finetune.classifier.POOLINGS
    "eval.metric": ("accuracy", "macro_f1", "loss"),  # bigmodel.finetune.loop.EVAL_METRICS
    "optim.name": ("adamw",),
    "optim.schedule": ("constant", "cosine", "wsd"),
    "optim.decay_shape": ("linear", "1-sqrt"),
}
POSITIVE_INTS = ("task.seq_len", "task.verses", "train.steps", "train.batch_size", "train.log_every",
                 "eval.every_steps", "eval.batch_size", "checkpoint.every_steps", "checkpoint.keep")
NON_NEGATIVE_INTS = ("task.max_train_examples", "backbone.step", "eval.max_examples", "eval.patience")


def load_finetune_config(spec: str | None, overrides: dict[str, str], task: str, init_from: str, scratch: bool) -> ml_collections.ConfigDict:
    """The config file's config, the overrides, then the flags; resolved and checked."""
    for key, flag in FLAG_KEYS.items():
        if key in overrides:
            raise ConfigError(f"config.{key} is set by {flag}: drop --config.{key}")
    config = config_lib.apply_overrides(config_lib.load_config_file(spec or DEFAULT_CONFIG), overrides)
    config = copy.deepcopy(config)
    for key in ("task", "backbone"):
        if key not in config or not isinstance(config[key], ml_collections.ConfigDict):
            raise ConfigError(f"config file {spec!r} has no {key} group: start from configs/finetune.py")
    config.task.name, config.backbone.init_from = task, init_from
    config.backbone.init = "scratch" if scratch else "pretrained"
    config = config_lib.resolve(config)
    check_config(config)
    return config


def _get(config, dotted: str):
    node = config
    for part in dotted.split("."):
        if not isinstance(node, ml_collections.ConfigDict) or part not in node:
            raise ConfigError(f"config.{dotted} is missing: start from configs/finetune.py and override keys")
        node = node[part]
    return node


def _is_int(value) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def check_config(config: ml_collections.ConfigDict) -> None:
    """Raise ConfigError for the first problem found (the task name is checked where it is read)."""
    for key in POSITIVE_INTS:
        if not _is_int(_get(config, key)) or _get(config, key) < 1:
            raise ConfigError(f"config.{key} must be a positive integer, got {_get(config, key)!r}")
    for key in NON_NEGATIVE_INTS:
        if not _is_int(_get(config, key)) or _get(config, key) < 0:
            raise ConfigError(f"config.{key} must be an integer >= 0, got {_get(config, key)!r}")
    for key, allowed in CHOICES.items():
        if _get(config, key) not in allowed:
            raise ConfigError(f"config.{key} must be one of {', '.join(allowed)}, got {_get(config, key)!r}")
    if not isinstance(config.backbone.freeze, bool):
        raise ConfigError(f"config.backbone.freeze must be true or false, got {config.backbone.freeze!r}")
    if not 0.0 <= config.classifier.dropout < 1.0:
        raise ConfigError(f"config.classifier.dropout must be in [0, 1), got {config.classifier.dropout}")
    check_optim(config.optim, config.train.steps)
    check_seed(config.seed)


def check_against_backbone(config, backbone_config, n_batch_shards: int, n_processes: int) -> None:
    """What only the --from run's model and this machine's mesh can decide."""
    if config.task.seq_len > backbone_config.model.max_seq_len:
        raise ConfigError(f"config.task.seq_len={config.task.seq_len} is above the backbone's model.max_seq_len="
                          f"{backbone_config.model.max_seq_len}: lower task.seq_len")
    for key in ("train.batch_size", "eval.batch_size"):
        batch = _get(config, key)
        if batch % n_batch_shards or batch % n_processes:
            raise ConfigError(f"config.{key}={batch} must be divisible by the mesh's data*fsdp={n_batch_shards} "
                              f"and by the {n_processes} processes: change it")


def resumable_differences(saved: dict, new: dict) -> list[str]:
    """Keys (with both values) whose change would make a resumed run compute something else."""
    from bigmodel.workdir import _config_changes  # the one config diff

    return [change for change in _config_changes(saved, new) if not change.startswith(RESUMABLE_CHANGES)]


def is_finetune_config(saved: dict) -> bool:
    """A fine-tuning run's config.json (a train run's has model and data groups instead)."""
    return isinstance(saved.get("task"), dict) and isinstance(saved.get("backbone"), dict) and "model" not in saved
