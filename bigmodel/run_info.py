"""What a run records about where it ran: library versions, devices, code version."""

from __future__ import annotations

import subprocess
from pathlib import Path

import flax
import jax
import optax


def git_commit() -> str | None:
    """The commit of the bigmodel checkout (with '-dirty' if it has local changes), or None."""
    repo = Path(__file__).resolve().parent.parent
    try:
        commit = subprocess.run(["git", "-C", str(repo), "rev-parse", "HEAD"], capture_output=True, text=True, timeout=10)
        dirty = subprocess.run(["git", "-C", str(repo), "status", "--porcelain", "--untracked-files=no"], capture_output=True, text=True, timeout=10)
    except (OSError, subprocess.TimeoutExpired):
        return None
    if commit.returncode:
        return None
    return commit.stdout.strip() + ("-dirty" if dirty.stdout.strip() else "")


def environment() -> dict:
    devices = jax.devices()
    return {
        "jax_version": jax.__version__,
        "flax_version": flax.__version__,
        "optax_version": optax.__version__,
        "device_kind": devices[0].device_kind,
        "device_count": len(devices),
        "process_count": jax.process_count(),
        "git_commit": git_commit(),
    }
