"""Process setup: which launcher started us, and where compiled executables are cached."""

import os
import subprocess
import sys
from pathlib import Path

import pytest

from bigmodel.runtime import compilation_cache_dir, detected_cluster

REPO = Path(__file__).resolve().parent.parent


@pytest.mark.parametrize("environment,expected", [
    ({}, None),
    ({"SLURM_JOB_ID": "7", "SLURM_NTASKS": "1"}, None),  # one task: a plain single process
    ({"SLURM_JOB_ID": "7", "SLURM_NTASKS": "16"}, "slurm"),
    ({"OMPI_COMM_WORLD_SIZE": "4"}, "openmpi"),
    ({"OMPI_COMM_WORLD_SIZE": "1"}, None),
    ({"TPU_WORKER_HOSTNAMES": "10.0.0.2,10.0.0.3"}, "tpu"),
    ({"TPU_WORKER_HOSTNAMES": "localhost"}, None),  # a single-host TPU VM
    ({"SLURM_JOB_ID": "7", "SLURM_NTASKS": "many"}, None),
])
def test_launchers_are_detected_only_for_several_processes(environment, expected):
    assert detected_cluster(environment) == expected


def test_the_cache_defaults_under_the_users_cache_dir_and_can_be_moved_or_turned_off(tmp_path):
    assert compilation_cache_dir({"XDG_CACHE_HOME": str(tmp_path)}) == tmp_path / "bigmodel" / "jax"
    assert compilation_cache_dir({"BIGMODEL_COMPILATION_CACHE": "/scratch/c"}) == Path("/scratch/c")
    assert compilation_cache_dir({"BIGMODEL_COMPILATION_CACHE": "off"}) is None
    assert compilation_cache_dir({"JAX_COMPILATION_CACHE_DIR": "/mine"}) is None  # the user's own setting wins


@pytest.mark.slow  # a training in its own process
def test_a_run_writes_its_executables_to_the_cache(tmp_path, kjv_data_dir):
    # A fresh process: JAX initialises its cache once per process, from the setting it finds.
    cache = tmp_path / "cache"
    tiny = ["--config.train.steps=2", "--config.train.batch_size=2", "--config.data.seq_len=16", "--config.eval.batches=1",
            f"--config.data.data_dir={kjv_data_dir}"]
    command = [sys.executable, "-m", "bigmodel", "train", "--config", "configs/lm.py:L2", "--workdir", str(tmp_path / "run"), *tiny]
    environment = {**os.environ, "BIGMODEL_COMPILATION_CACHE": str(cache)}
    result = subprocess.run(command, capture_output=True, text=True, timeout=600, env=environment, cwd=REPO)
    assert result.returncode == 0, result.stderr
    assert any(cache.iterdir()), "the train step (compiled for over a second) should have been cached"


def test_gpu_memory_fraction_defaults_to_ninety_percent_unless_the_user_chose():
    from bigmodel.runtime import gpu_memory_fraction, set_gpu_memory_fraction

    environment = {}
    set_gpu_memory_fraction(environment)
    assert environment == {"XLA_PYTHON_CLIENT_MEM_FRACTION": "0.9"} and gpu_memory_fraction(environment) == 0.9
    chosen = {"XLA_PYTHON_CLIENT_MEM_FRACTION": "0.5"}
    set_gpu_memory_fraction(chosen)
    assert gpu_memory_fraction(chosen) == 0.5


def test_fake_cpu_devices_keep_the_users_other_xla_flags():
    from bigmodel.runtime import use_fake_cpu_devices

    environment = {"XLA_FLAGS": "--xla_dump_to=/tmp/hlo"}
    use_fake_cpu_devices(8, environment)
    assert environment == {"JAX_PLATFORMS": "cpu", "XLA_FLAGS": "--xla_dump_to=/tmp/hlo --xla_force_host_platform_device_count=8"}
    bare = {}
    use_fake_cpu_devices(2, bare)
    assert bare["XLA_FLAGS"] == "--xla_force_host_platform_device_count=2"
