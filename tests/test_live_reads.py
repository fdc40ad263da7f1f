"""Readers of a run that is still training (`bigmodel.restore`): a real trainer subprocess keeping
one checkpoint (keep=1) and writing one every step deletes each step about 0.3 s after it appears
here, faster than a restore; every read must still succeed, each at a step the trainer has
deleted by the time the test looks, and leave nothing behind."""

import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

from bigmodel import checkpoint, files
from bigmodel.config import ConfigError, load_config, to_json

READS = 4


@pytest.fixture
def live_run(tmp_path, kjv_data_dir):
    """A trainer subprocess writing a checkpoint every step and keeping one; killed at the end."""
    workdir = tmp_path / "live"
    settings = {"train.steps": 100000, "train.batch_size": 2, "data.seq_len": 16, "checkpoint.every_steps": 1, "checkpoint.keep": 1,
                "eval.every_steps": 100000, "eval.batches": 1, "train.log_every": 1000, "data.data_dir": kjv_data_dir}
    trainer = subprocess.Popen([sys.executable, "-m", "bigmodel", "train", "--config", "configs/lm.py:L1", "--workdir", str(workdir),
                                *[f"--config.{key}={value}" for key, value in settings.items()]],
                               cwd=Path(__file__).resolve().parents[1], stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    try:
        deadline = time.monotonic() + 240
        while not checkpoint.saved_steps(workdir):
            assert trainer.poll() is None and time.monotonic() < deadline, trainer.stderr.read().decode()[-2000:]
            time.sleep(0.05)
        yield workdir, trainer
    finally:
        trainer.kill()
        trainer.wait()


def test_every_read_of_a_run_still_training_succeeds(live_run):
    from bigmodel.restore import open_run, read_params, restore_params

    workdir, trainer = live_run
    steps = []
    for read in range(READS):
        config, manager = open_run(workdir)
        if read % 2:  # finetune --from: a partial restore of the parameters alone, newest step
            from bigmodel.train import build

            setup = build(config)
            target = checkpoint.abstract_target(setup.abstract_state.params, setup.state_shardings.params)
            manager.close()
            params, step = read_params(workdir, None, target)
        else:  # eval, generate, export, serve
            _, params, step = restore_params(config, manager)
        assert params["final_norm"]["scale"].shape == (config.model.d_model,)
        steps.append(step)
    assert trainer.poll() is None, "the trainer stopped before the reads were done"
    assert steps == sorted(set(steps)), steps  # each read the newest step of its moment
    gone = set(steps[:-1]) - set(checkpoint.saved_steps(workdir))
    assert gone == set(steps[:-1]), "the trainer did not delete the steps read: no race was run"
    assert not (workdir / checkpoint.READING_DIR).exists()  # the readers' snapshots are gone


def test_a_run_still_training_without_a_checkpoint_says_so(tmp_path):
    from bigmodel.restore import open_run

    workdir = tmp_path / "run"
    workdir.mkdir()
    (workdir / "config.json").write_text(to_json(load_config("configs/lm.py:L1")))
    with pytest.raises(ConfigError, match="has no checkpoint yet: train it first"):
        open_run(workdir)
    lock = files.exclusive_workdir(workdir, "train")
    try:
        with pytest.raises(ConfigError, match=rf"the run is still training \(pid {os.getpid()}\) and has not written its first checkpoint"):
            open_run(workdir)
    finally:
        lock.close()


def test_the_lock_holder_is_read_without_taking_the_lock(tmp_path):
    assert files.lock_holder(tmp_path) is None
    lock = files.exclusive_workdir(tmp_path, "train")
    assert files.lock_holder(tmp_path) == os.getpid()
    lock.close()
    assert files.lock_holder(tmp_path) is None  # the pid stays in the file; the lock does not
    assert (tmp_path / files.LOCK_FILE).read_text().strip() == str(os.getpid())


def test_a_killed_readers_snapshot_is_removed_by_the_next_reader(tmp_path):
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True).stdout.strip()
    stale = tmp_path / checkpoint.READING_DIR / dead / "7"
    stale.mkdir(parents=True)
    (tmp_path / checkpoint.CHECKPOINT_DIR / "8").mkdir(parents=True)
    (tmp_path / checkpoint.CHECKPOINT_DIR / "8" / "data").write_text("x")
    with checkpoint.linked_snapshot(tmp_path, 8) as snapshot:
        assert (snapshot / "8" / "data").read_text() == "x" and (snapshot / "8" / "data").stat().st_nlink == 2
        assert not stale.exists()
    assert not (tmp_path / checkpoint.READING_DIR).exists()
