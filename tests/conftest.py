"""Shared fixtures."""

import pytest


@pytest.fixture(scope="session")
def kjv_data_dir(tmp_path_factory) -> str:
    """A tfds data dir with `kjv` built once per test session (about 2 s); pass it as
    `--config.data.data_dir=<it>`. Token and tokenizer caches land beside it on first use."""
    from bigmodel.data.kjv import prepare_kjv

    data_dir = tmp_path_factory.mktemp("tfds")
    prepare_kjv(data_dir)
    return str(data_dir)
