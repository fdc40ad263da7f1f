"""Device mesh (data, fsdp, tensor), logical-axis rules, and the shardings derived from them.

The rules that map logical names (`batch`, `embed`, `heads`, ...) to mesh axes are config
data (`config.sharding.rules`); this module only turns them into `NamedSharding`s.
"""

from __future__ import annotations

import flax.linen as nn
import jax
import numpy as np
from jax.experimental import mesh_utils
from jax.sharding import Mesh, NamedSharding, PartitionSpec

from bigmodel.config import MESH_AXES, dcn_data, granule_attribute, resolve_mesh_shape


def make_mesh(mesh_config) -> Mesh:
    """The (data, fsdp, tensor) mesh; with `mesh.dcn_data` > 1 a hybrid one (see `hybrid_devices`)."""
    shape = resolve_mesh_shape(mesh_config, jax.device_count())
    axis_types = (jax.sharding.AxisType.Auto,) * len(MESH_AXES)
    n_dcn = dcn_data(mesh_config)
    if n_dcn == 1:
        return jax.make_mesh(tuple(shape[axis] for axis in MESH_AXES), MESH_AXES, axis_types=axis_types)
    return Mesh(hybrid_devices(shape, n_dcn, jax.devices()), MESH_AXES, axis_types=axis_types)


def hybrid_devices(shape: dict[str, int], n_dcn: int, devices) -> np.ndarray:
    """`devices` as a (data, fsdp, tensor) array whose data axis is `n_dcn` blocks, one per slice
    (TPU) or process (GPU, CPU), so only the data-parallel gradient reduction crosses the slow
    network; fsdp and tensor, which talk every layer, stay inside a slice. `jax.make_mesh` cannot
    build this: it refuses multi-slice TPU topologies and ignores which host a GPU is on."""
    ici_shape = (shape["data"] // n_dcn, shape["fsdp"], shape["tensor"])
    dcn_shape = (n_dcn, 1, 1)
    by_process = granule_attribute(devices[0].platform) == "process_index"
    return mesh_utils.create_hybrid_device_mesh(ici_shape, dcn_shape, devices=devices, process_is_granule=by_process,
                                                allow_split_physical_axes=True)


def logical_rules(config) -> tuple[tuple[str, object], ...]:
    """`config.sharding.rules` as the tuple-of-pairs flax expects. Keys and values (logical axis
    `kv_heads`: n_kv_heads heads under grouped-query attention) are split as `heads` unless a
    rule of their own says otherwise: configs/lm.py's rules stay those runs saved before the
    axis existed, so they resume with the config they were written with."""
    rules = tuple((logical, tuple(axes) if isinstance(axes, list) else axes) for logical, axes in config.sharding.rules)
    names = [logical for logical, _ in rules]
    if "kv_heads" not in names and "heads" in names:
        rules += (("kv_heads", rules[names.index("heads")][1]),)
    return rules


def tree_shardings(abstract_boxed_tree, mesh: Mesh, rules):
    """NamedShardings for a tree whose leaves carry logical partitioning metadata."""
    specs = nn.get_partition_spec(abstract_boxed_tree)
    return nn.logical_to_mesh_sharding(specs, mesh, rules)


def batch_sharding(mesh: Mesh, rules) -> NamedSharding:
    """Token batches [batch, seq]: batch split like the `batch` logical axis, seq replicated."""
    return NamedSharding(mesh, nn.logical_to_mesh_axes(("batch", None), rules))


def replicated(mesh: Mesh) -> NamedSharding:
    return NamedSharding(mesh, PartitionSpec())


def global_batch(local_rows: np.ndarray, sharding: NamedSharding) -> jax.Array:
    """Assemble each process's rows into one global array (one process: a plain device_put)."""
    if jax.process_count() == 1:
        return jax.device_put(local_rows, sharding)
    return jax.make_array_from_process_local_data(sharding, local_rows)


class InMesh:
    """A jitted function traced, lowered and called with `mesh` as the current mesh.

    Flax's `nn.with_logical_constraint` returns its input unchanged when no mesh is current, so
    without this the model's activation constraints (batch over data/fsdp, heads and mlp over
    tensor, ...) would be silently absent from the compiled step.
    """

    def __init__(self, jitted, mesh: Mesh):
        self.jitted, self.mesh = jitted, mesh

    def __call__(self, *args):
        with jax.set_mesh(self.mesh):
            return self.jitted(*args)

    def lower(self, *args):
        with jax.set_mesh(self.mesh):
            return self.jitted.lower(*args)

