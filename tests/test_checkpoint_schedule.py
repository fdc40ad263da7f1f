"""Log-spaced and explicitly kept checkpoints (`checkpoint.schedule=log`, `checkpoint.keep_steps`)
and `bigmodel eval --all`, on a tiny L1 model trained in this process (a subprocess would spend
most of its time importing).

One uninterrupted log-schedule run is the reference; a second run of the same training, also
keeping steps 3 and 10, is stopped at step 7 and resumed: both must end with the same loss and
with exactly their kept steps plus the newest one on disk.
"""

import json
import math

import pytest

from bigmodel import checkpoint, config as config_lib
from bigmodel.cli import main

TINY = {
    "train.steps": 20,
    "train.batch_size": 8,
    "train.log_every": 5,
    "data.seq_len": 64,
    "optim.warmup_steps": 5,
    "optim.lr": 1e-2,
    "eval.every_steps": 20,
    "eval.batches": 2,
    "checkpoint.every_steps": 5,
    "checkpoint.keep": 1,
    "checkpoint.schedule": "log",
}


def train(workdir, data_dir, *extra, **overrides) -> int:
    settings = {**TINY, "data.data_dir": data_dir, **overrides}
    return main(["train", "--config", "configs/lm.py:L1", "--workdir", str(workdir),
                 *[f"--config.{key}={value}" for key, value in settings.items()], *extra])


def steps_on_disk(workdir) -> set[int]:
    return {int(path.name) for path in (workdir / "checkpoints").iterdir() if path.name.isdigit()}


def final_loss(workdir) -> float:
    return json.loads((workdir / "summary.json").read_text())["final_loss"]


@pytest.fixture(scope="module")
def log_run(tmp_path_factory, kjv_data_dir):
    workdir = tmp_path_factory.mktemp("log") / "run"
    assert train(workdir, kjv_data_dir) == 0
    return workdir


def test_log_steps_are_the_powers_of_two_up_to_the_last_step():
    assert checkpoint.log_steps(20) == [1, 2, 4, 8, 16]
    assert checkpoint.log_steps(16) == [1, 2, 4, 8, 16]
    assert checkpoint.log_steps(1) == [1]
    config = config_lib.load_config("configs/lm.py:L1", {"train.steps": "20", "checkpoint.keep_steps": "3,10"})
    assert checkpoint.kept_steps(config) == {3, 10}  # rolling: only the explicit ones
    log = config_lib.apply_overrides(config, {"checkpoint.schedule": "log"})
    assert checkpoint.kept_steps(log) == {1, 2, 3, 4, 8, 10, 16}
    assert checkpoint.is_kept_step(16, log) and not checkpoint.is_kept_step(5, log)
    for text in ("500", "500,"):  # one step from the shell, with or without a trailing comma
        assert checkpoint.kept_steps(config_lib.load_config("configs/lm.py:L1", {"checkpoint.keep_steps": text})) == {500}
    del config.checkpoint["schedule"], config.checkpoint["keep_steps"]  # a config.json from before these keys
    assert checkpoint.kept_steps(config) == frozenset()
    config_lib.validate(config, n_devices=1)


@pytest.mark.parametrize("overrides,message", [
    (["--config.checkpoint.schedule=pythia"], "config.checkpoint.schedule must be one of rolling, log, got 'pythia'"),
    (["--config.checkpoint.keep_steps=0,5"], "config.checkpoint.keep_steps must be positive step numbers"),
    (["--config.checkpoint.keep_steps=('a',)"], "config.checkpoint.keep_steps must be positive step numbers"),
    (["--config.train.steps=20", "--config.checkpoint.keep_steps=10,30,40"], "keep_steps [30, 40] are beyond train.steps=20"),
], ids=["schedule", "zero", "text", "beyond"])
def test_bad_checkpoint_keys_are_one_line_exit_2_and_write_nothing(tmp_path, capsys, overrides, message):
    assert main(["train", "--config", "configs/lm.py:L1", "--workdir", str(tmp_path / "run"), *overrides]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("error: ") and message in err and len(err.splitlines()) == 1
    assert not (tmp_path / "run").exists()


def test_log_schedule_keeps_the_powers_of_two_and_the_newest(log_run):
    # Saved at 1, 2, 4, 5, 8, 10, 15, 16, 20; keep=1 leaves the newest of the rolling ones.
    assert steps_on_disk(log_run) == {1, 2, 4, 8, 16, 20}


def test_stopped_and_resumed_run_keeps_its_steps_and_ends_with_the_same_loss(log_run, tmp_path, kjv_data_dir):
    workdir = tmp_path / "resumed"
    assert train(workdir, kjv_data_dir, "--stop_at_step", "7", **{"checkpoint.keep_steps": "3,10"}) == 0
    assert steps_on_disk(workdir) == {1, 2, 3, 4, 7}  # 5 rolled away; 7 is the stop's checkpoint
    assert train(workdir, kjv_data_dir, **{"checkpoint.keep_steps": "3,10"}) == 0
    assert steps_on_disk(workdir) == {1, 2, 3, 4, 8, 10, 16, 20}
    assert final_loss(workdir) == final_loss(log_run)  # bit for bit: keeping steps changes no computation


def test_eval_all_writes_one_point_per_kept_step_ending_at_plain_eval(log_run, capsys):
    assert main(["eval", "--workdir", str(log_run), "--all"]) == 0
    lines = capsys.readouterr().out.strip().splitlines()
    curve = json.loads((log_run / "eval_curve.json").read_text())
    assert [json.loads(line) for line in lines] == curve  # one printed line per checkpoint
    assert [point["step"] for point in curve] == [1, 2, 4, 8, 16, 20]
    assert [point["tokens_seen"] for point in curve] == [step * 8 * 64 for step in (1, 2, 4, 8, 16, 20)]
    assert curve[0]["eval_loss"] == pytest.approx(math.log(256), abs=0.2)  # one step from the start
    assert curve[-1]["eval_loss"] < curve[0]["eval_loss"] - 0.5
    assert (log_run / "eval_curve.png").stat().st_size > 10_000
    assert main(["eval", "--workdir", str(log_run)]) == 0
    plain = json.loads(capsys.readouterr().out)
    assert (plain["step"], plain["eval_loss"], plain["eval_bpb"]) == (20, curve[-1]["eval_loss"], curve[-1]["eval_bpb"])
