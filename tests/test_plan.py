"""`plan`: per-device bytes from the compiled step on abstract state, and the batch search."""

import json
import os
import subprocess
import sys

import pytest

from bigmodel.config import load_config
from bigmodel.flops import run_stats
from bigmodel.plan import batch_quantum, largest_batch_that_fits, plan_batch

SMALL = {"data.seq_len": "64", "train.batch_size": "8"}


def test_parameter_and_optimizer_bytes_are_the_float32_state_on_one_device():
    config = load_config("configs/lm.py:L2", SMALL)
    plan = plan_batch(config, 8)
    params = run_stats(config)["params"]
    assert plan.params_bytes == 4 * params
    assert 2 * 4 * params <= plan.optimizer_bytes <= 2 * 4 * params + 64  # Adam's two moments + step counts
    assert plan.peak_bytes >= plan.params_bytes + plan.optimizer_bytes


def test_memory_grows_with_the_batch_and_the_search_finds_the_edge():
    config = load_config("configs/lm.py:L2", SMALL)
    small, large = plan_batch(config, 8), plan_batch(config, 32)
    assert large.temp_bytes > small.temp_bytes
    budget = (small.peak_bytes + large.peak_bytes) / 2
    found = largest_batch_that_fits(config, budget, quantum=1, first=small)
    assert found is not None and found.peak_bytes <= budget
    assert plan_batch(config, found.batch_size + 1).peak_bytes > budget  # one more example no longer fits
    assert largest_batch_that_fits(config, small.params_bytes, quantum=1, first=small) is None


def test_plan_on_eight_fake_devices_shards_the_state():
    command = [sys.executable, "-m", "bigmodel", "plan", "--config", "configs/lm.py:L2", "--devices", "8", "--json",
               "--config.mesh.data=1", "--config.mesh.fsdp=8", "--config.data.seq_len=64", "--config.train.batch_size=8"]
    env = {key: value for key, value in os.environ.items() if key != "XLA_FLAGS"}
    result = subprocess.run(command, capture_output=True, text=True, timeout=600, env=env)
    assert result.returncode == 0, result.stderr
    report = json.loads(result.stdout.strip().splitlines()[-1])
    assert report["devices"] == 8
    # fsdp shards every matrix over 8 devices along d_model; norms' scales too. Nothing is
    # replicated, so a device holds an eighth of the float32 parameters.
    assert report["params_bytes"] == pytest.approx(4 * report["params"] / 8, rel=0.01)


def test_batch_quantum_is_data_parallel_shards_times_accumulation():
    config = load_config("configs/lm.py:L2", {"mesh.data": "2", "mesh.fsdp": "4", "train.grad_accum": "2", "train.batch_size": "16"})
    assert batch_quantum(config, 8) == 16


def test_unknown_target_is_one_error_line(capsys):
    from bigmodel.cli import main

    assert main(["plan", "--config", "configs/lm.py:L1", "--target", "h100"]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("error: unknown --target 'h100'") and len(err.splitlines()) == 1


def test_a_target_plans_auto_as_the_accelerator_resolves_it():
    from bigmodel.plan import as_on_target

    default = load_config("configs/lm.py:L2")  # dtype and attention default to auto
    planned = as_on_target(default, "gpu", "cpu")
    assert (planned.model.dtype, planned.model.attention) == ("bfloat16", "xla_recompute")
    on_tpu = as_on_target(default, "tpu", "cpu")
    assert (on_tpu.model.dtype, on_tpu.model.attention) == ("bfloat16", "xla")
    assert as_on_target(default, "gpu", "gpu") is default  # on the target itself, auto resolves natively
    explicit = as_on_target(load_config("configs/lm.py:L2", {"model.dtype": "float32", "model.attention": "heads_major"}), "gpu", "cpu")
    assert (explicit.model.dtype, explicit.model.attention) == ("float32", "heads_major")
