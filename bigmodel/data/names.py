"""Dataset names: the one list of what `config.data.dataset` may be, and each name's cache slug.

`kjv` (built on first use, see kjv.py), `markov[/key=value,...]` (text of known entropy from a
random Markov source, see markov_chain.py), `synthetic` (random tokens with no source, see
synthetic.py) or `tfds:<name>[/<config>]` of a text dataset someone already prepared. Config
validation asks here, so this module imports neither tfds nor JAX.
"""

from __future__ import annotations

import re

from bigmodel.exit_codes import ConfigError
from bigmodel.data.markov_chain import MARKOV_VERSION, is_markov_name, markov_options

KJV = "kjv"
KJV_VERSION = "1.0.0"  # the kjv builder's version; part of cache names so a new build re-tokenizes
SYNTHETIC = "synthetic"  # random tokens (synthetic.py): no source, no tokenizer
TFDS_PREFIX = "tfds:"


def check_dataset_name(dataset: str) -> None:
    """Raise ConfigError unless `dataset` names a corpus (config validation and the pipeline both ask)."""
    if is_markov_name(dataset):
        markov_options(dataset)  # raises on a bad option
        return
    if dataset not in (KJV, SYNTHETIC) and not (dataset.startswith(TFDS_PREFIX) and len(dataset) > len(TFDS_PREFIX)):
        raise ConfigError(f"config.data.dataset={dataset!r} is unknown: use kjv, synthetic or tfds:<name>[/<config>] of a prepared tfds text dataset, or markov[/key=value,...]")


def dataset_slug(dataset: str) -> str:
    """A file-name-safe name for caches: `kjv` → `kjv-1.0.0`, `tfds:lm1b/plain_text` → `lm1b_plain_text`,
    `markov/seed=1` → `markov-1.0.0-order2-alphabet32-...-seed1-...` (every option, so two
    spellings of one corpus share caches and two corpora never do)."""
    if dataset == KJV:
        return f"{KJV}-{KJV_VERSION}"
    if is_markov_name(dataset):
        return f"markov-{MARKOV_VERSION}-{markov_options(dataset).config_name}"
    return re.sub(r"[^A-Za-z0-9.]+", "_", dataset.removeprefix(TFDS_PREFIX)).strip("_")
