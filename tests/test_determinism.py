"""Bitwise repeatability on CPU: the same run gives the same losses to the last bit, also on
one core instead of two and with XLA's Eigen thread pool off; a different device count does
not bit for bit (the gradient all-reduce sums in another order), and docs/reliability.md says so."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

pytestmark = pytest.mark.slow  # three L2 trainings in subprocesses, one on 8 devices

SETTINGS = {"train.steps": 12, "train.batch_size": 8, "data.seq_len": 64, "optim.warmup_steps": 2, "eval.every_steps": 12,
            "eval.batches": 2, "checkpoint.every_steps": 12, "train.log_every": 1}


def train_losses(workdir, data_dir, prefix=(), xla_flags="") -> list[float]:
    env = {**os.environ, "JAX_PLATFORMS": "cpu", "XLA_FLAGS": xla_flags}
    command = [*prefix, sys.executable, "-m", "bigmodel", "train", "--config", "configs/lm.py:L2", "--workdir", str(workdir),
               *[f"--config.{key}={value}" for key, value in {**SETTINGS, "data.data_dir": data_dir}.items()]]
    subprocess.run(command, check=True, env=env, capture_output=True, timeout=300)
    records = [json.loads(line) for line in (workdir / "metrics.jsonl").read_text().splitlines()]
    return [record["loss"] for record in records if "loss" in record] + [record["eval_loss"] for record in records if "eval_loss" in record]


@pytest.fixture(scope="module")
def reference(tmp_path_factory, kjv_data_dir) -> list[float]:
    """12 training losses and the eval loss of one device on every core of this machine."""
    losses = train_losses(tmp_path_factory.mktemp("reference"), kjv_data_dir)
    assert len(losses) == 13
    return losses


def test_a_run_repeats_bit_for_bit_on_one_core_without_eigen_threads(tmp_path, kjv_data_dir, reference):
    single = "--xla_cpu_multi_thread_eigen=false intra_op_parallelism_threads=1"
    assert train_losses(tmp_path, kjv_data_dir, prefix=("taskset", "-c", "0"), xla_flags=single) == reference


def test_eight_devices_agree_with_one_but_not_bitwise(tmp_path, kjv_data_dir, reference):
    # (Two 8-device runs repeat each other bitwise: checked by hand, 2026-11-23; one run here keeps CI short.)
    eight = train_losses(tmp_path, kjv_data_dir, xla_flags="--xla_force_host_platform_device_count=8")
    assert eight == pytest.approx(reference, rel=1e-5) and eight != reference  # the same run, summed in another order
