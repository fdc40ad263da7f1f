"""Activation sharding constraints reach the compiled step (8 fake CPU devices, own process)."""

import os
import subprocess
import sys
from pathlib import Path

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


def test_the_lowered_step_carries_the_models_activation_constraints():
    env = {**os.environ, "XLA_FLAGS": "--xla_force_host_platform_device_count=8"}
    result = subprocess.run([sys.executable, "-c", LOWER_ON_EIGHT_DEVICES], capture_output=True, text=True, timeout=600, env=env, cwd=REPO)
    assert result.returncode == 0, result.stderr[-3000:]
    in_mesh, without_mesh, n_leaves = (int(word) for word in result.stdout.split())
    # Embedding, every block output, attention context, MLP hidden, logits: forward and backward.
    assert in_mesh >= 5 and without_mesh == 0
    assert n_leaves > 0
