"""Per-device memory of a compiled train step, from XLA's own accounting, and the devices it is
held against.

`compiled_memory` reads `compiled.memory_analysis()` of a compiled step: the bytes of the
parameters and of the optimizer state on one device, and the step's peak (arguments + outputs +
temporaries, donated buffers counted once). `train` prints it at start-up, `bench` reports it,
and `plan` checks it against a `TARGETS` device before launch.

JAX is imported only where arrays are measured: the CLI reads `TARGETS` for `plan --help`.
"""

from __future__ import annotations

import dataclasses
import math

GIB = 2**30
# Device memory in bytes, and whether XLA gets all of it (TPU) or the share JAX's GPU allocator
# preallocates: XLA_PYTHON_CLIENT_MEM_FRACTION, which bigmodel sets to 0.9 unless you set it.
TARGETS = {
    "h100-80gb": (80 * GIB, "gpu"),
    "h200-141gb": (141 * GIB, "gpu"),
    "a100-40gb": (40 * GIB, "gpu"),
    "a100-80gb": (80 * GIB, "gpu"),
    "tpu-v4": (32 * GIB, "tpu"),
    "tpu-v5e": (16 * GIB, "tpu"),
    "tpu-v5p": (95 * GIB, "tpu"),
}


def usable_fraction(kind: str) -> float:
    from bigmodel.runtime import gpu_memory_fraction

    return gpu_memory_fraction() if kind == "gpu" else 1.0


@dataclasses.dataclass(frozen=True)
class MemoryPlan:
    """Per-device bytes of one compiled train step."""

    batch_size: int
    params_bytes: int
    optimizer_bytes: int
    peak_bytes: int  # XLA's peak for the step: live arguments, outputs and temporaries
    temp_bytes: int
    compiled_flops: float | None  # per step, per device as XLA counts them (None if unknown)

    def line(self) -> str:
        return (f"memory per device: params {format_bytes(self.params_bytes)}, optimizer {format_bytes(self.optimizer_bytes)}, "
                f"temporaries {format_bytes(self.temp_bytes)}, peak {format_bytes(self.peak_bytes)} (XLA's estimate)")


def format_bytes(count: float) -> str:
    for unit, size in (("GiB", GIB), ("MiB", 2**20), ("KiB", 2**10)):
        if count >= size:
            return f"{count / size:.2f} {unit}"
    return f"{count:.0f} B"


def bytes_per_device(abstract_tree, shardings) -> int:
    """Bytes one device holds of a tree of arrays placed with `shardings`."""
    import jax
    import jax.numpy as jnp

    total = 0
    for leaf, sharding in zip(jax.tree.leaves(abstract_tree), jax.tree.leaves(shardings, is_leaf=lambda x: isinstance(x, jax.sharding.Sharding))):
        total += math.prod(sharding.shard_shape(leaf.shape)) * jnp.dtype(leaf.dtype).itemsize
    return total


def compiled_memory(compiled, setup, batch_size: int) -> MemoryPlan:
    """MemoryPlan of a compiled train step (the `train` start-up line reads the same numbers)."""
    stats = compiled.memory_analysis()
    costs = compiled.cost_analysis()
    costs = costs[0] if isinstance(costs, (list, tuple)) else costs  # a list per device on older jax
    # Live at once: inputs, outputs and temporaries, with donated inputs reused as outputs. (XLA's
    # own peak_memory_in_bytes leaves temporaries out on CPU, so it is only a lower bound.)
    live = stats.argument_size_in_bytes + stats.output_size_in_bytes + stats.temp_size_in_bytes - stats.alias_size_in_bytes
    peak = max(live, getattr(stats, "peak_memory_in_bytes", 0))
    return MemoryPlan(
        batch_size=batch_size,
        params_bytes=bytes_per_device(setup.abstract_state.params, setup.state_shardings.params),
        optimizer_bytes=bytes_per_device(setup.abstract_state.opt_state, setup.state_shardings.opt_state),
        peak_bytes=int(peak),
        temp_bytes=int(stats.temp_size_in_bytes),
        compiled_flops=float(costs["flops"]) if costs and "flops" in costs else None,
    )
