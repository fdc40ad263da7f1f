"""`bigmodel bench`: time real training steps (real data, the jitted train step) after warm-up.

Prints one JSON line: tokens_per_s, flops_per_s (the run metadata's FLOPs formula), mfu (null
when the device's peak is unknown, e.g. on CPU) and mfu_causal_halved (attention counted once,
as MaxText and llm.c do), step_time_s, compile_time_s, peak memory (XLA's estimate, and the
allocator's measurement where the device reports one), the resolved dtype and attention, and
whether cuDNN's fused attention kernel is really in the compiled program (`cudnn_fused_attention`).
"""

from __future__ import annotations

import json
import math
import os
import time
from pathlib import Path

import jax

from bigmodel import config as config_lib, sharding
from bigmodel.flops import FLOPS_FORMULA, device_peak_flops, mfu, run_stats
from bigmodel.memory import compiled_memory
from bigmodel.prefetch import Prefetcher
from bigmodel.train import build, make_train_step

CUDNN_ATTENTION_CALL = "__cudnn$fmha"  # custom-call target XLA emits for cuDNN flash attention


def uses_cudnn_attention(compiled) -> bool:
    """Whether the optimized HLO calls cuDNN's fused attention (asking for it is not proof)."""
    return CUDNN_ATTENTION_CALL in compiled.as_text()


def peak_flops_from_environment(environment=os.environ) -> float:
    """$BIGMODEL_PEAK_FLOPS (per device), 0 when unset; anything but a finite number > 0 is refused."""
    text = environment.get("BIGMODEL_PEAK_FLOPS", "")
    if not text:
        return 0.0
    try:
        value = float(text)
    except ValueError:
        value = math.nan
    if not (math.isfinite(value) and value > 0):
        raise config_lib.ConfigError(f"BIGMODEL_PEAK_FLOPS={text!r} must be a finite number of FLOP/s > 0, e.g. 989e12: fix or unset it")
    return value


def prepare_profile_dir(profile_dir: str) -> None:
    """--profile DIR exists as a directory we can write, or one error line now (not after the timed steps)."""
    path = Path(profile_dir)
    if path.exists() and not path.is_dir():
        raise config_lib.ConfigError(f"--profile {profile_dir} is a file: pass a directory for the trace")
    try:
        path.mkdir(parents=True, exist_ok=True)
    except OSError as error:
        raise config_lib.ConfigError(f"--profile {profile_dir} cannot be created ({error.strerror}): pick a directory you can write") from None
    if not os.access(path, os.W_OK):
        raise config_lib.ConfigError(f"--profile {profile_dir} is not writable: pick a directory you can write")


def bench_command(spec: str, overrides: dict[str, str], steps: int, warmup: int, peak_flops: float | None,
                  profile_dir: str | None = None) -> int:
    from bigmodel.data import load_dataset

    if steps < 1 or warmup < 0:
        raise config_lib.ConfigError("bench needs --steps >= 1 and --warmup >= 0")
    peak_flops = peak_flops or peak_flops_from_environment()
    config = config_lib.load_config(spec, overrides)
    config_lib.validate(config, jax.device_count(), jax.process_count())
    if profile_dir:  # created only once the config is known good
        prepare_profile_dir(profile_dir)
    setup = build(config)
    data = load_dataset(config.data, "train", config.seed)
    process = (jax.process_index(), jax.process_count())

    def batch_at(step: int):
        return sharding.global_batch(data.batch(step, config.train.batch_size, *process), setup.batch_sharding)

    state = setup.init_state(jax.random.key(config.seed))
    compile_start = time.perf_counter()
    train_step = make_train_step(setup).lower(state, batch_at(0)).compile()
    compile_time_s = time.perf_counter() - compile_start
    # Batches come as in `train`: made ahead on a background thread, so the timed steps include
    # exactly the data work a training run leaves on the critical path.
    with Prefetcher(batch_at, range(warmup + steps)) as batches:
        for _ in range(warmup):
            state, step_metrics = train_step(state, next(batches))
        jax.block_until_ready(state)

        if profile_dir:
            jax.profiler.start_trace(profile_dir)
        start = time.perf_counter()
        for _ in range(steps):
            state, step_metrics = train_step(state, next(batches))
        jax.block_until_ready((state, step_metrics))
        elapsed = time.perf_counter() - start
        if profile_dir:
            jax.profiler.stop_trace()  # after the clock: writing the trace is not a step's time

    stats = run_stats(config)
    tokens_per_s = steps * config.train.batch_size * config.data.seq_len / elapsed
    flops_per_s = tokens_per_s * stats["flops_per_token"]
    device = jax.devices()[0]
    peak = peak_flops or device_peak_flops(device.device_kind)
    measured = (device.memory_stats() or {}).get("peak_bytes_in_use")  # GPU/TPU allocators report it; CPU does not
    print(json.dumps({
        "tokens_per_s": tokens_per_s,
        "flops_per_s": flops_per_s,
        "mfu": mfu(flops_per_s, peak, jax.device_count()),
        "mfu_causal_halved": mfu(tokens_per_s * stats["flops_per_token_causal_halved"], peak, jax.device_count()),
        "peak_memory_bytes_estimated": compiled_memory(train_step, setup, config.train.batch_size).peak_bytes,
        "peak_memory_bytes_measured": measured,
        "attention": setup.model.config.attention,
        "cudnn_fused_attention": uses_cudnn_attention(train_step),
        "step_time_s": elapsed / steps,
        "compile_time_s": compile_time_s,
        "params": stats["params"],
        "non_embedding_params": stats["non_embedding_params"],
        "flops_per_token": stats["flops_per_token"],
        "flops_formula": FLOPS_FORMULA,
        "peak_flops_per_device": peak,
        "device_kind": device.device_kind,
        "device_count": jax.device_count(),
        "dtype": setup.model.config.dtype,
        "steps": steps,
    }))
    return 0
