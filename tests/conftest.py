"""Shared fixtures."""

import hashlib
import importlib.util
from pathlib import Path

import pytest


@pytest.fixture(scope="session")
def load_tool():
    """tools/<name>.py imported as a module (tools/ is not a package): `load_tool("chaos")`."""
    def load(name: str):
        spec = importlib.util.spec_from_file_location(name, Path(__file__).resolve().parents[1] / "tools" / f"{name}.py")
        module = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(module)
        return module

    return load


@pytest.fixture(scope="session")
def kjv_data_dir(tmp_path_factory) -> str:
    """A tfds data dir with `kjv` built once per test session (about 2 s); pass it as
    `--config.data.data_dir=<it>`. Token and tokenizer caches land beside it on first use."""
    from bigmodel.data.kjv import prepare_kjv

    data_dir = tmp_path_factory.mktemp("tfds")
    prepare_kjv(data_dir)
    return str(data_dir)


@pytest.fixture(scope="session", autouse=True)
def compilation_cache(tmp_path_factory):
    """One JAX compilation cache for the session's CLI runs (in-process and subprocesses), never
    the user's own: later runs of the same program skip most of their compile time. Under xdist
    the workers share it (in the run's own temporary root): both train tiny_run and many L1 runs
    alike, and each program is then compiled once per run instead of once per worker."""
    import os

    if os.environ.get("PYTEST_XDIST_WORKER"):  # basetemp is <the run's root>/popen-gwN
        directory = tmp_path_factory.getbasetemp().parent / "jax_cache"
        directory.mkdir(exist_ok=True)
    else:
        directory = tmp_path_factory.mktemp("jax_cache")
    previous = os.environ.get("BIGMODEL_COMPILATION_CACHE")
    os.environ["BIGMODEL_COMPILATION_CACHE"] = str(directory)
    yield directory
    if previous is None:
        os.environ.pop("BIGMODEL_COMPILATION_CACHE", None)
    else:
        os.environ["BIGMODEL_COMPILATION_CACHE"] = previous


def directory_fingerprint(directory: Path) -> list:
    """Every path under `directory`, each file's size, mtime and content hash: what "never modified"
    means in a test (a new empty folder counts too)."""
    return sorted((str(path), path.stat().st_size, path.stat().st_mtime_ns, hashlib.sha256(path.read_bytes()).hexdigest())
                  if path.is_file() else (str(path), "folder", 0, "") for path in Path(directory).rglob("*"))


@pytest.fixture(scope="session")
def fingerprint():
    """`fingerprint(directory)`: compare one taken before and after to prove a command wrote nothing."""
    return directory_fingerprint


# What every tiny_run user needs: checkpoints at steps 4 and 8 (export restores an earlier step),
# an eval at the last step (summary.json's eval loss), seq_len 64 (generate's and serve's prompts).
TINY_RUN = {"train.steps": 8, "train.batch_size": 8, "data.seq_len": 64, "optim.warmup_steps": 2, "optim.lr": 1e-2,
            "eval.every_steps": 8, "eval.batches": 1, "checkpoint.every_steps": 4}


@pytest.fixture(scope="session")
def tiny_run(tmp_path_factory, kjv_data_dir):
    """A finished 8-step L1 run on kjv, trained once per test session (once per xdist worker) and
    shared by export, finetune, generate and serve. Read it, never write it: a test that needs to
    change a run copies this one first (the session fails at teardown if the run changed)."""
    from bigmodel.cli import main

    workdir = tmp_path_factory.mktemp("tiny_run") / "run"
    settings = {**TINY_RUN, "data.data_dir": kjv_data_dir}
    assert main(["train", "--config", "configs/lm.py:L1", "--workdir", str(workdir),
                 *[f"--config.{key}={value}" for key, value in settings.items()]]) == 0
    before = directory_fingerprint(workdir)
    yield workdir
    assert directory_fingerprint(workdir) == before, "a test wrote into the shared tiny_run: copy it first"
