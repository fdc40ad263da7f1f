"""`python -m bigmodel plan --config C [--devices N] [--target h100-80gb]`: what fits, before launch.

Compiles the real train step against abstract state (ShapeDtypeStructs carrying the run's
shardings: no parameter is allocated) and reads XLA's own accounting of the executable
(`compiled.memory_analysis()`): per-device bytes for the parameters, the optimizer state and
the compiled peak (arguments + outputs + temporaries, donated buffers counted once), and the
compiled FLOPs per step beside the formula's. With `--target` it says whether the peak fits
that device's memory (times the allocator's fraction) and searches for the largest global batch
that fits.

The compile happens on the devices present, or on N fake CPU devices (`--devices N`): the
sharding arithmetic is exact either way, but the temporaries are those of the compiler that ran.
On the target's own kind of device the config is compiled as it will run, and XLA's peak is
the allocator's: within 0.01% of `memory_stats()` on an H100 (docs/benchmarks.md, "On an H100"). From another
platform, `--target` resolves `auto` as the accelerator would: bfloat16, and for a GPU target
that would pick cuDNN, attention `xla_recompute` (flash's memory: only q, k, v and the output
kept; only a GPU compiles cuDNN itself). XLA:CPU's buffer assignment is far less frugal than
XLA:GPU's, so that estimate is an upper bound: the gpt presets planned on a CPU came out 1.8-4x
above what an H100 measured. A "fits" from a CPU holds; for the exact number, plan on one
device of the target's kind (a compile, no step).
"""

from __future__ import annotations

import dataclasses
import json

import jax
import jax.numpy as jnp

from bigmodel.memory import TARGETS, MemoryPlan, compiled_memory, format_bytes, usable_fraction


def compile_step(config):
    """(compiled train step, setup) for `config`, against abstract state and batch."""
    from bigmodel import checkpoint
    from bigmodel.train import build, make_train_step

    setup = build(config)
    state = checkpoint.abstract_target(setup.abstract_state, setup.state_shardings)
    batch = jax.ShapeDtypeStruct((config.train.batch_size, config.data.seq_len + 1), jnp.int32, sharding=setup.batch_sharding)
    return make_train_step(setup).lower(state, batch).compile(compiler_options=planning_compiler_options()), setup


def planning_compiler_options() -> dict | None:
    """XLA:CPU assigns buffers before it generates code, so skipping the code optimisations
    halves a plan's compile time and changes no byte or FLOP it reports (checked on the gpt
    presets and L4/L6, `tests/test_plan.py`). Other platforms compile as they will run."""
    return {"xla_backend_optimization_level": 0} if jax.default_backend() == "cpu" else None


def plan_batch(config, batch_size: int) -> MemoryPlan:
    from bigmodel.config import apply_overrides

    config = apply_overrides(config, {"train.batch_size": str(batch_size)})
    compiled, setup = compile_step(config)
    return compiled_memory(compiled, setup, batch_size)


def largest_batch_that_fits(config, budget_bytes: float, quantum: int, first: MemoryPlan) -> MemoryPlan | None:
    """The largest global batch (a multiple of `quantum`) whose compiled peak fits `budget_bytes`.

    Memory is affine in the batch (fixed state + per-example activations), so two compiles give
    the line and a third checks its prediction; stepping down by a quantum until the check fits
    covers the compiler's non-linear choices. None if even `quantum` does not fit.
    """
    second = plan_batch(config, first.batch_size * 2)
    per_example = max((second.peak_bytes - first.peak_bytes) / first.batch_size, 1.0)
    fixed = first.peak_bytes - per_example * first.batch_size
    candidate = int((budget_bytes - fixed) / per_example) // quantum * quantum
    while candidate >= quantum:
        plan = plan_batch(config, candidate)
        if plan.peak_bytes <= budget_bytes:
            return plan
        candidate = min(candidate - quantum, int(candidate * budget_bytes / plan.peak_bytes) // quantum * quantum)
    return None


def batch_quantum(config, n_devices: int) -> int:
    """The step of valid global batch sizes: data-parallel shards × gradient accumulation."""
    from bigmodel.config import resolve_mesh_shape

    mesh = resolve_mesh_shape(config.mesh, n_devices)
    return mesh["data"] * mesh["fsdp"] * config.train.grad_accum


def is_target_platform(target_kind: str, platform: str) -> bool:
    """Whether a compile on `platform` is the compile a `target_kind` device would do."""
    from bigmodel.model_config import GPU_PLATFORMS

    return platform in GPU_PLATFORMS if target_kind == "gpu" else platform == target_kind


def as_on_target(config, target_kind: str, platform: str):
    """The config as it would compile on a `target_kind` device ("gpu" or "tpu"), for a compile on
    `platform`. On the target's own platform nothing changes: `auto` resolves there as it will
    run. Elsewhere `auto` becomes bfloat16, and the attention cuDNN would run (auto on a GPU
    target, or cudnn) becomes `xla_recompute`, which keeps the same tensors alive."""
    from bigmodel.config import apply_overrides

    if is_target_platform(target_kind, platform):
        return config
    changes = {}
    if config.model.dtype == "auto":
        changes["model.dtype"] = "bfloat16"
    cudnn_on_target = config.model.attention == "cudnn" or (config.model.attention == "auto" and target_kind == "gpu")
    if cudnn_on_target:
        changes["model.attention"] = "xla_recompute"
    elif config.model.attention == "auto":
        changes["model.attention"] = "xla"
    return apply_overrides(config, changes)


def compiled_flops_note(config) -> str:
    """Why XLA's FLOPs differ from the formula's: its cost analysis counts a loop's body once,
    whatever the trip count, and it adds the optimizer's work."""
    once = []
    if config.model.scan_layers and config.model.n_layers > 1:
        once.append(f"the scanned layer stack (1 of {config.model.n_layers} layers)")
    if config.train.grad_accum > 1:
        once.append(f"the gradient-accumulation loop (1 of {config.train.grad_accum} micro-batches)")
    if not once:
        return "XLA adds the optimizer's work"
    return f"XLA counts a loop's body once: {' and '.join(once)}; and adds the optimizer's work"


def plan_command(spec: str, overrides: dict[str, str], target: str | None, as_json: bool) -> int:
    from bigmodel.config import ConfigError, load_config, validate
    from bigmodel.flops import run_stats

    config = load_config(spec, overrides)
    validate(config, jax.device_count(), jax.process_count())
    if target is not None and target not in TARGETS:
        raise ConfigError(f"unknown --target {target!r}: use one of {', '.join(TARGETS)}")
    if target is not None:
        config = as_on_target(config, TARGETS[target][1], jax.default_backend())
    compiled, setup = compile_step(config)
    plan = compiled_memory(compiled, setup, config.train.batch_size)
    stats = run_stats(config)
    formula_flops = stats["flops_per_token"] * config.train.batch_size * config.data.seq_len / jax.device_count()
    report = {
        "compiled_on": jax.default_backend(),
        "devices": jax.device_count(),
        "device_kind": jax.devices()[0].device_kind,
        "params": stats["params"],
        **dataclasses.asdict(plan),
        "formula_flops_per_device": formula_flops,
    }
    if target:
        memory, kind = TARGETS[target]
        fraction = usable_fraction(kind)
        budget = memory * fraction
        report.update(target=target, target_budget_bytes=budget, fits=plan.peak_bytes <= budget)
        largest = largest_batch_that_fits(config, budget, batch_quantum(config, jax.device_count()), plan)
        report["largest_batch_that_fits"] = largest.batch_size if largest else None
    if as_json:
        print(json.dumps(report))
        return 0
    print(f"{spec} on {report['devices']} × {report['device_kind']}: {stats['params']:,} params, global batch {plan.batch_size}")
    print(plan.line())
    if plan.compiled_flops:
        print(f"FLOPs per step per device: compiled {plan.compiled_flops:.3g}, formula {formula_flops:.3g} "
              f"(ratio {plan.compiled_flops / formula_flops:.2f}; {compiled_flops_note(config)})")
    if target:
        verdict = "fits" if report["fits"] else "does NOT fit"
        print(f"{target}: {verdict} in {format_bytes(budget)} ({fraction:.0%} of {format_bytes(memory)}); "
              f"largest global batch that fits: {report['largest_batch_that_fits']}")
        if not is_target_platform(kind, jax.default_backend()):
            print(f"note: compiled on {jax.default_backend()}, not on a {kind}: an upper bound. On an H100 the measured "
                  "peaks were 1.8-4x lower than CPU plans of the gpt presets (docs/benchmarks.md, \"On an H100\"), so a 'fits' "
                  "holds and a 'does NOT fit' may not; plan on one device of the target's kind for the exact number.")
    return 0
