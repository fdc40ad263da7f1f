"""Shared fixtures."""

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
    the user's own: later runs of the same program skip most of their compile time."""
    import os

    directory = tmp_path_factory.mktemp("jax_cache")
    previous = os.environ.get("BIGMODEL_COMPILATION_CACHE")
    os.environ["BIGMODEL_COMPILATION_CACHE"] = str(directory)
    yield directory
    if previous is None:
        os.environ.pop("BIGMODEL_COMPILATION_CACHE", None)
    else:
        os.environ["BIGMODEL_COMPILATION_CACHE"] = previous
