"""Activation sharding constraints reach the compiled step (8 fake CPU devices, own process);
the hybrid mesh of `mesh.dcn_data` on two real jax.distributed processes."""

import os
import socket
import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest

from bigmodel.config import ConfigError, load_config, validate
from bigmodel.sharding import hybrid_devices

REPO = Path(__file__).resolve().parent.parent

LOWER_ON_EIGHT_DEVICES = """
import jax, jax.numpy as jnp
from bigmodel import checkpoint
from bigmodel.config import load_config
from bigmodel.train import build, make_train_step

overrides = {"mesh.data": "2", "mesh.fsdp": "2", "mesh.tensor": "2", "data.seq_len": "32", "train.batch_size": "8"}
setup = build(load_config("configs/lm.py:L2", overrides))
state = checkpoint.abstract_target(setup.abstract_state, setup.state_shardings)
batch = jax.ShapeDtypeStruct((8, 33), jnp.int32, sharding=setup.batch_sharding)
step = make_train_step(setup)
in_mesh = step.lower(state, batch).as_text().count("sharding_constraint")
without_mesh = step.jitted.lower(state, batch).as_text().count("sharding_constraint")  # flax drops them
init = setup.init_state(jax.random.key(0))  # the parameters' own constraints apply at init too
print(in_mesh, without_mesh, len(jax.tree.leaves(init)))
"""


@pytest.mark.slow  # lowers the step on 8 devices in a subprocess
def test_the_lowered_step_carries_the_models_activation_constraints():
    env = {**os.environ, "XLA_FLAGS": "--xla_force_host_platform_device_count=8"}
    result = subprocess.run([sys.executable, "-c", LOWER_ON_EIGHT_DEVICES], capture_output=True, text=True, timeout=600, env=env, cwd=REPO)
    assert result.returncode == 0, result.stderr[-3000:]
    in_mesh, without_mesh, n_leaves = (int(word) for word in result.stdout.split())
    # Embedding, every block output, attention context, MLP hidden, logits: forward and backward.
    assert in_mesh >= 5 and without_mesh == 0
    assert n_leaves > 0


# --- hybrid (multi-slice / multi-host) mesh: config.mesh.dcn_data ---------------------------------

HYBRID_MESH_ON_TWO_PROCESSES = """
import sys
import jax, jax.numpy as jnp, numpy as np
from jax.sharding import NamedSharding, PartitionSpec

jax.distributed.initialize(coordinator_address=sys.argv[1], num_processes=2, process_id=int(sys.argv[2]))
from bigmodel.config import load_config, validate
from bigmodel.sharding import make_mesh

config = load_config("configs/lm.py:L2", {"mesh.data": "-1", "mesh.dcn_data": "2", "train.batch_size": "8"})
validate(config, jax.device_count(), jax.process_count())  # counts the slices (here processes) itself
mesh = make_mesh(config.mesh)
# A real collective over the hybrid mesh: each process contributes its own block of rows.
rows = NamedSharding(mesh, PartitionSpec("data"))
local = np.arange(4, dtype=np.float32) + 4 * jax.process_index()
total = jax.jit(jnp.sum)(jax.make_array_from_process_local_data(rows, local))
owners = [device.process_index for device in mesh.devices.reshape(-1)]
print(dict(mesh.shape), owners, float(total))
"""


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@pytest.mark.slow  # two jax.distributed processes
def test_dcn_data_gives_each_process_one_contiguous_half_of_the_data_axis():
    """Two jax.distributed processes with 4 CPU devices each stand in for two hosts: the data
    axis (8) must be process 0's devices then process 1's, so only the data-parallel reduction
    crosses between hosts."""
    env = {**os.environ, "XLA_FLAGS": "--xla_force_host_platform_device_count=4"}
    command = [sys.executable, "-c", HYBRID_MESH_ON_TWO_PROCESSES, f"127.0.0.1:{_free_port()}"]
    processes = [subprocess.Popen([*command, str(index)], env=env, cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
                 for index in range(2)]
    outputs = [process.communicate(timeout=120) for process in processes]
    assert [process.returncode for process in processes] == [0, 0], outputs[0][1][-2000:] + outputs[1][1][-2000:]
    expected = f"{ {'data': 8, 'fsdp': 1, 'tensor': 1} } {[0] * 4 + [1] * 4} 28.0"
    assert [stdout.strip().splitlines()[-1] for stdout, _ in outputs] == [expected, expected]  # gloo logs above


def test_hybrid_devices_keep_fsdp_and_tensor_inside_a_process():
    """data=4 (2 per host) x fsdp=2 x tensor=2 on two fake 8-device hosts: every fsdp/tensor group
    and half the data axis lie on one host."""
    devices = [SimpleNamespace(id=i, process_index=i // 8, platform="cpu", device_kind="cpu") for i in range(16)]
    layout = hybrid_devices({"data": 4, "fsdp": 2, "tensor": 2}, 2, devices)
    owners = np.vectorize(lambda device: device.process_index)(layout)
    assert layout.shape == (4, 2, 2)
    assert (owners[:2] == 0).all() and (owners[2:] == 1).all()
    assert sorted(device.id for device in layout.reshape(-1)) == list(range(16))


BAD_DCN = [
    ({"mesh.dcn_data": "0"}, 8, 2, "config.mesh.dcn_data=0 is not a positive integer"),
    ({"mesh.dcn_data": "3"}, 8, 3, "config.mesh.dcn_data=3 does not divide the data axis mesh.data=8"),
    ({"mesh.data": "2", "mesh.fsdp": "-1", "mesh.dcn_data": "4"}, 8, 4, "config.mesh.dcn_data=4 does not divide the data axis mesh.data=2"),
    ({"mesh.dcn_data": "2"}, 8, 4, "config.mesh.dcn_data=2 must equal the number of slices/hosts, 4 here"),
    ({"mesh.dcn_data": "2"}, 8, None, "must equal the number of slices/hosts, 1 here"),  # None: this one process, counted
]


@pytest.mark.parametrize("overrides,n_devices,n_slices,message", BAD_DCN, ids=[case[-1][:48] for case in BAD_DCN])
def test_bad_dcn_data_is_one_error_line_naming_the_key(overrides, n_devices, n_slices, message):
    config = load_config("configs/lm.py:L2", {**overrides, "train.batch_size": "8"})
    with pytest.raises(ConfigError) as raised:
        validate(config, n_devices, n_slices or 1, n_slices=n_slices)
    assert message in str(raised.value) and "\n" not in str(raised.value) and ": " in str(raised.value)


def test_dcn_data_that_fits_validates_and_configs_without_the_key_still_do():
    validate(load_config("configs/lm.py:L2", {"mesh.dcn_data": "2", "train.batch_size": "8"}), 8, 2, n_slices=2)
    validate(load_config("configs/gpt.py:124m", {"mesh.dcn_data": "2"}), 8, 2, platform="gpu", device_kind="NVIDIA H100", n_slices=2)
    old = load_config("configs/lm.py:L2", {"train.batch_size": "8"})
    del old.mesh["dcn_data"]  # a config.json saved before the key existed
    validate(old, 8, 2, n_slices=2)
