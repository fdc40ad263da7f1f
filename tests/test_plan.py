"""`plan`: per-device bytes from the compiled step on abstract state, and the batch search."""

import json
import os
import subprocess
import sys

import jax
import jax.numpy as jnp
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


@pytest.mark.slow  # compiles the step for each batch the search tries
def test_memory_grows_with_the_batch_and_the_search_finds_the_edge():
    config = load_config("configs/lm.py:L2", SMALL)
    small, large = plan_batch(config, 8), plan_batch(config, 32)
    assert large.temp_bytes > small.temp_bytes
    budget = (small.peak_bytes + large.peak_bytes) / 2
    found = largest_batch_that_fits(config, budget, quantum=1, first=small)
    assert found is not None and found.peak_bytes <= budget
    assert plan_batch(config, found.batch_size + 1).peak_bytes > budget  # one more example no longer fits
    assert largest_batch_that_fits(config, small.params_bytes, quantum=1, first=small) is None


@pytest.mark.slow  # 8 devices in a subprocess
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

    with pytest.raises(SystemExit) as exit_info:  # argparse refuses it, before JAX loads
        main(["plan", "--config", "configs/lm.py:L1", "--target", "h100"])
    assert exit_info.value.code == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("error: argument --target: unknown value 'h100'") and len(err.splitlines()) == 1


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


# ----------------------------------------------------------------------------- the gpt presets

# Each preset's real shapes (d_model, layers, heads, vocabulary, 1024 positions) on a small
# step: short sequences, a small batch, no accumulation and scanned layers, which compile in
# seconds at any depth. None of these changes a parameter or its sharding.
SMALL_STEP = {"data.seq_len": "64", "train.batch_size": "8", "train.grad_accum": "1", "model.scan_layers": "true"}
# Parameters of each preset: the formula's count (`params` in the report) and, times 4 bytes,
# what flax initialises (`params_bytes`); both must hold.
GPT_PARAMS = {"124m": 124_373_760, "350m": 354_599_936, "760m": 758_392_320, "1.3b": 1_313_179_648,
              "2.7b": 2_648_148_480, "6.7b": 6_652_956_672}
FSDP_PRESETS = ("6.7b",)  # configs/gpt.py: parameters and optimizer state sharded over every device


def assert_plan_holds_the_float32_state(report: dict, name: str) -> None:
    """A plan's bytes are the preset's float32 parameters, sharded over every device under fsdp
    and replicated under data parallelism, and AdamW's two moments beside them."""
    shards = report["devices"] if name in FSDP_PRESETS else 1
    assert report["params"] == GPT_PARAMS[name]
    assert report["params_bytes"] == 4 * GPT_PARAMS[name] // shards
    assert 2 * report["params_bytes"] <= report["optimizer_bytes"] <= 2 * report["params_bytes"] + 64  # mu, nu + step counts
    assert report["peak_bytes"] >= report["params_bytes"] + report["optimizer_bytes"]


@pytest.mark.slow  # compiles six GPT presets
@pytest.mark.parametrize("name", GPT_PARAMS)
def test_plan_of_every_gpt_preset_on_one_device(name, capsys):
    from bigmodel.plan import plan_command

    assert plan_command(f"configs/gpt.py:{name}", SMALL_STEP, target=None, as_json=True) == 0
    assert_plan_holds_the_float32_state(json.loads(capsys.readouterr().out.strip().splitlines()[-1]), name)


# One process for all presets: starting JAX and the CLI six times would cost more than the compiles.
# argv: comma-separated preset names, then the overrides.
PLAN_EVERY_PRESET = """
import sys
from bigmodel.cli import main
names, overrides = sys.argv[1].split(","), sys.argv[2:]
sys.exit(max(main(["plan", "--config", f"configs/gpt.py:{name}", "--json", *overrides]) for name in names))
"""


@pytest.fixture(scope="module")
def eight_device_plans() -> dict[str, dict]:
    """{preset: plan report} from one process with 8 fake CPU devices."""
    # plan compiles without XLA:CPU's code optimisations (`planning_compiler_options`).
    flags = "--xla_force_host_platform_device_count=8"
    env = {**os.environ, "JAX_PLATFORMS": "cpu", "XLA_FLAGS": flags}
    overrides = [f"--config.{key}={value}" for key, value in SMALL_STEP.items()]
    command = [sys.executable, "-c", PLAN_EVERY_PRESET, ",".join(GPT_PARAMS), *overrides]
    result = subprocess.run(command, capture_output=True, text=True, timeout=600, env=env)
    assert result.returncode == 0, result.stderr[-3000:]
    reports = [json.loads(line) for line in result.stdout.splitlines() if line.startswith("{")]
    return dict(zip(GPT_PARAMS, reports, strict=True))


@pytest.mark.slow  # compiles six GPT presets on 8 devices in a subprocess
@pytest.mark.parametrize("name", GPT_PARAMS)
def test_plan_of_every_gpt_preset_on_eight_devices(name, eight_device_plans):
    report = eight_device_plans[name]
    assert report["devices"] == 8
    assert_plan_holds_the_float32_state(report, name)


@pytest.mark.slow  # compiles the step twice, once with CPU optimisations
def test_planning_skips_cpu_code_optimisation_without_changing_a_byte():
    from bigmodel import checkpoint
    from bigmodel.memory import compiled_memory
    from bigmodel.plan import planning_compiler_options
    from bigmodel.train import build, make_train_step

    assert planning_compiler_options() == {"xla_backend_optimization_level": 0}  # these tests run on a CPU
    config = load_config("configs/lm.py:L2", {"train.batch_size": "8", "model.scan_layers": "false"})
    setup = build(config)
    state = checkpoint.abstract_target(setup.abstract_state, setup.state_shardings)
    batch = jax.ShapeDtypeStruct((8, config.data.seq_len + 1), jnp.int32, sharding=setup.batch_sharding)
    lowered = make_train_step(setup).lower(state, batch)
    optimised, planned = lowered.compile(), lowered.compile(compiler_options=planning_compiler_options())
    assert compiled_memory(planned, setup, 8) == compiled_memory(optimised, setup, 8)
