"""Cooldown branches (`train.init_from`, `train.init_step`; bigmodel/branch.py) on a tiny L1
model trained in this process.

A stable run (constant learning rate after warmup) keeps its checkpoint at step 24; a branch
from there cools down to 30 steps (WSD, decay_fraction 0.2: 6 steps). It must end exactly where a
WSD run of 30 steps from scratch ends, since both compute the same steps on the same batches, and
the same again when interrupted mid-cooldown and rerun.
"""

import json

import numpy as np
import pytest

from bigmodel import branch, config as config_lib
from bigmodel.cli import main
from bigmodel.optim import learning_rate_schedule

BASE = {"train.batch_size": 8, "train.log_every": 6, "data.seq_len": 64, "optim.warmup_steps": 4, "optim.lr": 1e-2,
        "eval.every_steps": 100, "eval.batches": 2, "checkpoint.every_steps": 100, "checkpoint.keep": 1}
STABLE = {"train.steps": 40, "optim.schedule": "constant", "checkpoint.keep_steps": "24"}
COOLDOWN = {"train.steps": 30, "optim.schedule": "wsd", "optim.decay_fraction": 0.2}  # decay starts at 30 - 6 = 24


def train(workdir, data_dir, *extra, **overrides) -> int:
    settings = {**BASE, "data.data_dir": data_dir, **overrides}
    return main(["train", "--config", "configs/lm.py:L1", "--workdir", str(workdir),
                 *[f"--config.{key}={value}" for key, value in settings.items()], *extra])


def final_loss(workdir) -> float:
    return json.loads((workdir / "summary.json").read_text())["final_loss"]


@pytest.fixture(scope="module")
def stable(tmp_path_factory, kjv_data_dir):
    workdir = tmp_path_factory.mktemp("branch") / "stable"
    assert train(workdir, kjv_data_dir, **STABLE) == 0
    assert sorted(int(path.name) for path in (workdir / "checkpoints").iterdir() if path.name.isdigit()) == [24, 40]
    return workdir


def test_1_sqrt_cooldown_follows_its_formula_and_linear_is_unchanged():
    config = config_lib.load_config("configs/lm.py:L1", {"train.steps": "100", "optim.warmup_steps": "0", "optim.schedule": "wsd",
                                                         "optim.decay_fraction": "0.2", "optim.min_lr_ratio": "0.1"})
    peak, final = config.optim.lr, config.optim.lr * 0.1
    linear = learning_rate_schedule(config.optim, 100)
    sqrt = learning_rate_schedule(config_lib.apply_overrides(config, {"optim.decay_shape": "1-sqrt"}).optim, 100)
    for step in (0, 50, 80):
        assert float(sqrt(step)) == pytest.approx(peak) == pytest.approx(float(linear(step)))
    assert float(linear(90)) == pytest.approx(peak - (peak - final) * 0.5)
    assert float(sqrt(90)) == pytest.approx(final + (peak - final) * (1 - np.sqrt(0.5)))
    assert float(sqrt(100)) == pytest.approx(final) == pytest.approx(float(linear(100)))


@pytest.mark.slow  # trains a WSD run from scratch, a branch, and reruns it
def test_a_branch_ends_exactly_where_a_wsd_run_of_its_length_ends_and_reruns_to_the_same_loss(tmp_path, stable, kjv_data_dir, capsys):
    scratch = tmp_path / "scratch"
    assert train(scratch, kjv_data_dir, **COOLDOWN) == 0
    branched = tmp_path / "branch"
    assert train(branched, kjv_data_dir, **COOLDOWN, **{"train.init_from": stable, "train.init_step": 24}) == 0
    assert f"branched from {stable} at step 24" in capsys.readouterr().out
    assert final_loss(branched) == final_loss(scratch)
    first_logged = json.loads((branched / "metrics.jsonl").read_text().splitlines()[0])
    assert first_logged["step"] == 30  # only the cooldown's steps were trained (and logged) here
    # Interrupted mid-cooldown, then the same command again: it resumes from its own checkpoint.
    interrupted = tmp_path / "interrupted"
    arguments = {**COOLDOWN, "train.init_from": stable, "train.init_step": 24, "checkpoint.every_steps": 3}
    assert train(interrupted, kjv_data_dir, "--stop_at_step", "27", **arguments) == 0
    assert train(interrupted, kjv_data_dir, **arguments) == 0
    assert "resumed from checkpoint at step 27" in capsys.readouterr().out
    assert final_loss(interrupted) == final_loss(scratch)


@pytest.mark.parametrize("overrides, message", [
    ({"train.init_step": 20},  # a fine branch point, but the parent did not keep it
     "^error: .* has no checkpoint at step 20 \\(it has \\[24, 40\\]\\): train the parent with --config.checkpoint.keep_steps including 20$"),
    ({"optim.decay_fraction": 0.5},  # decays from step 15 (lr below the peak from 16), before the branch point
     "^error: the branch's learning rate differs from its parent's at step 16, before init_step 24: start its cooldown at init_step"),
    ({"optim.lr": 2e-2}, "^error: a branch must train what its parent .* trained, but optim.lr: 0.01 -> 0.02"),
    ({"train.init_step": 0}, "^error: config.train.init_from=.* and init_step=0 go together: set both \\(a branch\\) or neither$"),
    ({"train.init_step": 30}, "^error: config.train.init_step=30 must be below train.steps=30"),
])
def test_a_branch_that_would_not_continue_its_parent_is_one_error_line_and_writes_nothing(tmp_path, stable, kjv_data_dir, capsys,
                                                                                         overrides, message):
    workdir = tmp_path / "branch"
    settings = {**COOLDOWN, "train.init_from": stable, "train.init_step": 24, **overrides}
    assert train(workdir, kjv_data_dir, **settings) == 2
    import re

    assert re.search(message, capsys.readouterr().err.strip().splitlines()[-1]), message
    assert not (workdir / "config.json").exists()


def test_the_parent_must_be_a_run(tmp_path):
    config = config_lib.load_config("configs/lm.py:L1", {"train.init_from": str(tmp_path), "train.init_step": "5"})
    with pytest.raises(config_lib.ConfigError, match="has no readable config.json: point it at the workdir of a bigmodel train run"):
        branch.parent_config(config.train.init_from)
