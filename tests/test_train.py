"""End-to-end training through the CLI, each run in its own process (as a user runs it).

One small reference run (L2, 40 steps) is compared against: a stopped-and-resumed run (exactly),
the same config on 8 devices with data=2, fsdp=2, tensor=2, and two `jax.distributed`
processes on localhost (within float tolerance).
"""

import json
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

STEPS = 40
TINY = {
    "train.steps": STEPS,
    "train.batch_size": 8,
    "train.log_every": 5,
    "data.seq_len": 64,
    "optim.warmup_steps": 5,
    "optim.lr": 1e-2,
    "eval.every_steps": 20,
    "eval.batches": 2,
    "checkpoint.every_steps": 20,
}


def train_cli(workdir, data_dir, *extra, overrides=None, devices=1, preset="L2", timeout=600):
    """`python -m bigmodel train ...` in a fresh process with `devices` forced CPU devices."""
    settings = {**TINY, "data.data_dir": data_dir, **(overrides or {})}
    env = {**os.environ, "XLA_FLAGS": f"--xla_force_host_platform_device_count={devices}"}
    command = [sys.executable, "-m", "bigmodel", "train", "--config", f"configs/lm.py:{preset}", "--workdir", str(workdir)]
    command += [f"--config.{key}={value}" for key, value in settings.items()] + list(extra)
    return subprocess.run(command, env=env, capture_output=True, text=True, timeout=timeout)


def losses(workdir) -> dict[int, float]:
    records = [json.loads(line) for line in (Path(workdir) / "metrics.jsonl").read_text().splitlines()]
    return {record["step"]: record["loss"] for record in records if "loss" in record}


def eval_losses(workdir) -> dict[int, float]:
    records = [json.loads(line) for line in (Path(workdir) / "metrics.jsonl").read_text().splitlines()]
    return {record["step"]: record["eval_loss"] for record in records if "eval_loss" in record}


@pytest.fixture(scope="module")
def reference_run(tmp_path_factory, kjv_data_dir):
    workdir = tmp_path_factory.mktemp("reference") / "run"
    result = train_cli(workdir, kjv_data_dir)
    assert result.returncode == 0, result.stderr
    return workdir


@pytest.mark.slow  # the 40-step L2 reference run, trained in its own process
def test_run_writes_config_metrics_tensorboard_checkpoints_and_summary(reference_run):
    assert json.loads((reference_run / "config.json").read_text())["train"]["steps"] == STEPS
    summary = json.loads((reference_run / "summary.json").read_text())
    for key in ("params", "non_embedding_params", "flops_per_token", "flops_formula", "tokens", "flops", "final_loss",
                "final_eval_loss", "eval_bpb", "steps", "wall_time_s", "jax_version", "flax_version", "optax_version",
                "device_kind", "device_count", "git_commit"):
        assert key in summary, key
    assert summary["tokens"] == STEPS * 8 * 64
    assert summary["flops"] == summary["flops_per_token"] * summary["tokens"]
    lines = [json.loads(line) for line in (reference_run / "metrics.jsonl").read_text().splitlines()]
    train_lines = [line for line in lines if "loss" in line]
    assert [line["step"] for line in train_lines] == list(range(5, STEPS + 1, 5))
    for key in ("lr", "grad_norm", "tokens_seen", "tokens_per_s", "step_time_s"):
        assert all(np.isfinite(line[key]) for line in train_lines), key
    # Bytes tokenizer: bits per byte is exactly nats / ln 2.
    assert summary["eval_bpb"] == pytest.approx(summary["final_eval_loss"] / np.log(2))
    assert list(eval_losses(reference_run)) == [20, 40]
    assert any(path.name.startswith("events.out.tfevents") for path in (reference_run / "tensorboard").iterdir())
    assert sorted(path.name for path in (reference_run / "checkpoints").iterdir() if path.name.isdigit()) == ["20", "40"]


@pytest.mark.slow  # the 40-step L2 reference run, trained in its own process
def test_loss_decreases_on_kjv(reference_run):
    curve = losses(reference_run)
    assert curve[5] > 4.0  # near ln(256) = 5.5 at the start
    assert curve[STEPS] < curve[5] - 1.5
    evals = eval_losses(reference_run)
    assert evals[40] < evals[20] < np.log(256)


@pytest.mark.slow  # the 40-step L2 reference run, trained in its own process
def test_stop_and_resume_reproduces_every_logged_loss_exactly(reference_run, tmp_path, kjv_data_dir):
    workdir = tmp_path / "resumed"
    first = train_cli(workdir, kjv_data_dir, "--stop_at_step", "20")
    assert first.returncode == 0, first.stderr
    assert not (workdir / "summary.json").exists() and max(losses(workdir)) == 20
    second = train_cli(workdir, kjv_data_dir)
    assert second.returncode == 0, second.stderr
    assert "resumed from checkpoint at step 20" in second.stdout
    assert losses(workdir) == losses(reference_run)
    assert eval_losses(workdir) == eval_losses(reference_run)


@pytest.mark.slow  # trains the reference run again on 8 devices
def test_eight_devices_data_fsdp_tensor_match_one_device(reference_run, tmp_path, kjv_data_dir):
    workdir = tmp_path / "eight"
    mesh = {"mesh.data": 2, "mesh.fsdp": 2, "mesh.tensor": 2}
    result = train_cli(workdir, kjv_data_dir, overrides=mesh, devices=8)
    assert result.returncode == 0, result.stderr
    assert json.loads((workdir / "summary.json").read_text())["device_count"] == 8
    one, eight = losses(reference_run), losses(workdir)
    assert list(one) == list(eight)
    np.testing.assert_allclose(list(eight.values()), list(one.values()), rtol=2e-4)
    # The 8-device checkpoint restores onto 1 device for evaluation.
    evaluated = subprocess.run([sys.executable, "-m", "bigmodel", "eval", "--workdir", str(workdir)],
                               capture_output=True, text=True, timeout=300, env={**os.environ, "XLA_FLAGS": ""})
    assert evaluated.returncode == 0, evaluated.stderr
    result = json.loads(evaluated.stdout.strip().splitlines()[-1])
    assert result["step"] == STEPS
    assert result["eval_loss"] == pytest.approx(eval_losses(workdir)[STEPS], rel=1e-4)
    assert json.loads((workdir / "eval.json").read_text()) == result


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def start_processes(workdir, settings: dict, preset: str, count: int = 2) -> list[subprocess.Popen]:
    """`train` as `count` jax.distributed processes on localhost, one CPU device each."""
    command = [sys.executable, "-m", "bigmodel", "train", "--config", f"configs/lm.py:{preset}", "--workdir", str(workdir),
               "--coordinator", f"127.0.0.1:{_free_port()}", "--num_processes", str(count)]
    command += [f"--config.{key}={value}" for key, value in settings.items()]
    env = {**os.environ, "XLA_FLAGS": "--xla_force_host_platform_device_count=1"}
    return [subprocess.Popen(command + ["--process_id", str(index)], env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
            for index in range(count)]


@pytest.mark.slow  # 2 and 4 jax.distributed trainers
@pytest.mark.parametrize("count", [2, 4])
def test_multi_process_jax_distributed_run_matches_single_process(reference_run, tmp_path, kjv_data_dir, count):
    workdir = tmp_path / f"{count}_hosts"
    settings = {**TINY, "data.data_dir": kjv_data_dir}
    processes = start_processes(workdir, settings, "L2", count)
    try:
        outputs = [process.communicate(timeout=600) for process in processes]
    finally:  # a hung collective must not outlive the test
        for process in processes:
            process.kill()
    assert [process.returncode for process in processes] == [0] * count, "".join(err[-2000:] for _, err in outputs)
    summary = json.loads((workdir / "summary.json").read_text())
    assert (summary["process_count"], summary["device_count"]) == (count, count)
    np.testing.assert_allclose(list(losses(workdir).values()), list(losses(reference_run).values()), rtol=2e-4)


@pytest.mark.slow  # the 40-step L2 reference run, trained in its own process
def test_rerunning_a_finished_run_changes_nothing(reference_run, kjv_data_dir):
    before = [(reference_run / name).read_text() for name in ("metrics.jsonl", "summary.json")]
    result = train_cli(reference_run, kjv_data_dir)
    assert result.returncode == 0, result.stderr
    assert "already finished 40 steps" in result.stdout
    assert [(reference_run / name).read_text() for name in ("metrics.jsonl", "summary.json")] == before


@pytest.mark.slow  # a diverging training in its own process
def test_non_finite_loss_stops_with_a_message_and_keeps_the_last_good_checkpoint(tmp_path, kjv_data_dir):
    workdir = tmp_path / "diverged"
    # lr 1e6 after a 50-step warmup from 0: step 1 is harmless, later steps blow up.
    overrides = {"train.steps": 100, "optim.lr": 1e6, "optim.warmup_steps": 50, "optim.grad_clip": 0.0, "optim.schedule": "constant",
                 "checkpoint.every_steps": 1, "train.log_every": 1}
    result = train_cli(workdir, kjv_data_dir, overrides=overrides, preset="L1")
    assert result.returncode == 1
    assert "error: loss became non-finite" in result.stderr and "lower optim.lr" in result.stderr
    assert not (workdir / "summary.json").exists()
    kept = sorted(int(path.name) for path in (workdir / "checkpoints").iterdir() if path.name.isdigit())
    assert kept and max(kept) < 100
    assert all(np.isfinite(loss) for loss in losses(workdir).values())


def test_sigterm_checkpoints_the_current_step_and_the_rerun_finishes(tmp_path, kjv_data_dir):
    workdir = tmp_path / "preempted"
    settings = {**TINY, "data.data_dir": kjv_data_dir, "train.steps": 100_000, "train.log_every": 1,
                "checkpoint.every_steps": 100_000, "eval.every_steps": 100_000, "optim.warmup_steps": 0}
    command = [sys.executable, "-m", "bigmodel", "train", "--config", "configs/lm.py:L1", "--workdir", str(workdir)]
    command += [f"--config.{key}={value}" for key, value in settings.items()]
    process = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    for line in process.stdout:  # wait until training steps are running, then preempt
        if line.startswith("step 3/"):
            break
    process.send_signal(signal.SIGTERM)
    out, err = process.communicate(timeout=300)
    assert process.returncode == 75, err  # exit_codes.STOPPED: a scheduler can tell "preempted" from "finished"
    assert "stopped by signal" in out
    saved = [int(path.name) for path in (workdir / "checkpoints").iterdir() if path.name.isdigit()]
    assert len(saved) == 1 and saved[0] == max(losses(workdir)) >= 3
    assert not (workdir / "summary.json").exists()


@pytest.mark.slow  # two jax.distributed trainers
def test_preempting_one_of_two_processes_stops_both_at_the_same_checkpointed_step(tmp_path, kjv_data_dir):
    workdir = tmp_path / "preempted_pair"
    settings = {**TINY, "data.data_dir": kjv_data_dir, "train.steps": 100_000, "train.log_every": 5,
                "checkpoint.every_steps": 100_000, "eval.every_steps": 100_000, "optim.warmup_steps": 0}
    processes = start_processes(workdir, settings, "L1")
    for line in processes[0].stdout:  # process 0 prints progress; wait until steps are running
        if line.startswith("step 10/"):
            break
    processes[1].send_signal(signal.SIGTERM)  # only the second process is preempted
    outputs = [process.communicate(timeout=300) for process in processes]
    assert [process.returncode for process in processes] == [75, 75], outputs[0][1][-2000:] + outputs[1][1][-2000:]
    saved = [int(path.name) for path in (workdir / "checkpoints").iterdir() if path.name.isdigit()]
    assert len(saved) == 1 and saved[0] % 5 == 0 and saved[0] >= 10  # agreed at a log step, written jointly
    assert max(losses(workdir)) == saved[0]


def test_sigterm_while_the_trainer_starts_exits_stopped_and_writes_no_run(tmp_path):
    """A scheduler's SIGTERM in the first seconds (a preemption while JAX imports) is a stop,
    exit 75 like one mid-run, not a kill (-15) that reads as a failure."""
    workdir = tmp_path / "run"
    process = subprocess.Popen([sys.executable, "-m", "bigmodel", "train", "--config", "configs/lm.py:L1", "--workdir", str(workdir)],
                               cwd=Path(__file__).resolve().parents[1], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    time.sleep(1.0)  # past the interpreter's start, well before the first step
    process.send_signal(signal.SIGTERM)
    _, err = process.communicate(timeout=120)
    assert process.returncode == 75, err
    assert not (workdir / "config.json").exists()
