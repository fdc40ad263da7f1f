"""The new-user items of the "nothing lost" issue that need no training: each one failed before
its fix (a refused short run, a traceback, a silently bent schedule, a rewritten config.json)."""

import json
import subprocess
import sys

import pytest

from bigmodel import files
from bigmodel.cli import main
from bigmodel.config import ConfigError, load_config, to_json, validate
from bigmodel.workdir import TRAIN_RUN, RunDirectory, check, saved_config


def test_a_short_run_on_the_default_config_caps_warmup_and_records_it():
    config = load_config("configs/lm.py:L2", {"train.steps": "40"})  # warmup_steps is 100 by default
    validate(config, n_devices=1)
    assert config.optim.warmup_steps == 40
    assert json.loads(to_json(config))["optim"]["warmup_steps"] == 40
    assert load_config("configs/lm.py:L2", {"train.steps": "400"}).optim.warmup_steps == 100  # untouched when it fits


def _saved_run(tmp_path, **overrides):
    workdir = tmp_path / "run"
    workdir.mkdir()
    (workdir / "config.json").write_text(to_json(load_config("configs/lm.py:L2", overrides)))
    return workdir


def test_changing_train_steps_on_resume_is_refused_where_it_would_bend_the_schedule(tmp_path):
    workdir = _saved_run(tmp_path, **{"train.steps": "300", "optim.schedule": "cosine"})
    with pytest.raises(ConfigError, match=r"train.steps: 300 -> 600"):
        check(load_config("configs/lm.py:L2", {"train.steps": "600", "optim.schedule": "cosine"}), workdir)


def test_changing_train_steps_under_a_constant_schedule_extends_the_run(tmp_path):
    workdir = _saved_run(tmp_path, **{"train.steps": "300", "optim.schedule": "constant"})
    check(load_config("configs/lm.py:L2", {"train.steps": "600", "optim.schedule": "constant"}), workdir)  # no error


def test_the_sweep_runners_files_and_an_empty_checkpoints_dir_do_not_block_a_new_run(tmp_path):
    workdir = tmp_path / "run"
    (workdir / "checkpoints").mkdir(parents=True)
    for name in ("train.log", "command.sh", files.LOCK_FILE):
        (workdir / name).write_text("x")
    check(load_config("configs/lm.py:L2"), workdir)  # no error
    (workdir / "checkpoints" / "5").mkdir()
    with pytest.raises(ConfigError, match="is not a bigmodel run"):
        check(load_config("configs/lm.py:L2"), workdir)


def test_each_command_names_its_run_directory_and_what_may_precede_its_config(tmp_path):
    """One rule, two commands' words: the sweep runner's train.log is expected before a train
    run's config.json, and refused in a directory only `finetune` writes (its lock alone)."""
    only_its_lock = RunDirectory("finetune", (files.LOCK_FILE,), "a fine-tuning run", "restore it", "--workdir")
    workdir = tmp_path / "run"
    workdir.mkdir()
    (workdir / "train.log").write_text("x")
    assert saved_config(workdir, TRAIN_RUN) is None
    with pytest.raises(ConfigError, match=rf"^--workdir {workdir} exists and is not a bigmodel run \(no config.json\): pick a new --workdir$"):
        saved_config(workdir, only_its_lock)
    (workdir / "config.json").write_text("{oops")
    with pytest.raises(ConfigError, match=r"config.json is not valid JSON: restore it, or use a new --workdir$"):
        saved_config(workdir, only_its_lock)
    (workdir / "config.json").write_text('{"task": {}}')
    assert saved_config(workdir, only_its_lock) == {"task": {}}


def _one_error_line(capsys) -> str:
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and err.startswith("error: "), err
    return err


def test_a_config_file_with_a_syntax_error_is_one_line(tmp_path, capsys):
    broken = tmp_path / "broken.py"
    broken.write_text("def get_config(arg):\n    return {\n")
    assert main(["train", "--config", str(broken), "--workdir", str(tmp_path / "run")]) == 2
    assert "line 2" in _one_error_line(capsys)
    assert not (tmp_path / "run").exists()


def test_a_workdir_that_is_a_file_is_one_line_and_left_alone(tmp_path, capsys):
    path = tmp_path / "run"
    path.write_text("my notes")
    assert main(["train", "--config", "configs/lm.py:L2", "--workdir", str(path)]) == 2
    assert "is a file" in _one_error_line(capsys)
    assert path.read_text() == "my notes"


def test_overrides_on_a_command_that_takes_none_are_refused(capsys):
    assert main(["eval", "--workdir", "runs/x", "--config.train.steps=3"]) == 2
    assert "apply to train, bench, plan, finetune only" in _one_error_line(capsys)


def test_argparse_mistakes_are_one_error_line_exit_2(capsys):
    with pytest.raises(SystemExit) as exit_info:
        main(["train", "--config", "configs/lm.py:L2"])
    assert exit_info.value.code == 2
    assert "--workdir" in _one_error_line(capsys)


@pytest.mark.parametrize("command", ["train", "bench"])
def test_help_names_the_config_overrides(command, capsys):
    with pytest.raises(SystemExit):
        main([command, "--help"])
    assert "--config.group.key=value" in capsys.readouterr().out


def test_presets_into_a_closed_pipe_is_not_a_traceback():
    # `head -3` exits after three lines; the rest of the table meets a closed pipe.
    result = subprocess.run(f"{sys.executable} -m bigmodel presets | head -3", shell=True, capture_output=True, text=True, timeout=120)
    assert len(result.stdout.splitlines()) == 3
    assert "Traceback" not in result.stderr and "BrokenPipeError" not in result.stderr


def test_a_second_holder_of_a_workdir_lock_is_refused_and_a_closed_lock_frees_it(tmp_path):
    first = files.exclusive_workdir(tmp_path, "train")
    with pytest.raises(files.WorkdirBusy, match=r"in use by another bigmodel train \(pid \d+\)"):
        files.exclusive_workdir(tmp_path, "train")
    first.close()  # what the kernel does when the holder dies, kill -9 included
    files.exclusive_workdir(tmp_path, "train").close()


def test_metrics_reader_skips_a_torn_last_line(tmp_path):
    path = tmp_path / "metrics.jsonl"
    path.write_text('{"step": 1, "loss": 2.0}\n{"step": 2, "loss": 1.5}\n{"step": 3, "lo')
    assert files.read_jsonl(path) == [{"step": 1, "loss": 2.0}, {"step": 2, "loss": 1.5}]


def test_storage_failure_is_found_through_orbax_style_wrapping():
    try:
        try:
            raise OSError(28, "No space left on device", "/ckpt/5")
        except OSError as inner:
            raise ValueError("RESOURCE_EXHAUSTED: Error writing") from inner
    except ValueError as outer:
        assert files.storage_failure(outer) == "No space left on device: /ckpt/5"
    assert files.storage_failure(ValueError('Failed writing: "x": [OS error 28: No space left on device]')) == "No space left on device"
    assert files.storage_failure(ValueError("shapes do not match")) is None


def test_remote_checkpoint_paths_stay_urls_and_local_ones_become_absolute():
    from bigmodel.checkpoint import checkpoint_dir

    assert str(checkpoint_dir("gs://bucket/runs/l2")) == "gs://bucket/runs/l2/checkpoints"
    local = checkpoint_dir("runs/l2")
    assert str(local).startswith("/") and str(local).endswith("runs/l2/checkpoints")
