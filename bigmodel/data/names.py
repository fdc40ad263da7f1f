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
# tfds's own name grammar, less what a dataset prepared on disk never needs (namespaces, builder
# kwargs): name[/config][:major.minor.patch]. Checked here, a bad name is one line before tfds loads.
TFDS_NAME = re.compile(r"[A-Za-z]\w*(/[\w+.-]+)?(:\d+\.\d+\.\d+)?", re.ASCII)


def check_tfds_name(name: str, what: str) -> None:
    """ConfigError unless `name` (after `tfds:`) is a tfds dataset name; `what` says where it was given."""
    if not TFDS_NAME.fullmatch(name):
        raise ConfigError(f"{what}: {name!r} is not a tfds dataset name: write tfds:<name>[/<config>][:<version>] in letters, "
                          "digits and _ (e.g. tfds:lm1b/plain_text)")


def check_dataset_name(dataset: str) -> None:
    """Raise ConfigError unless `dataset` names a corpus (config validation and the pipeline both ask)."""
    if is_markov_name(dataset):
        markov_options(dataset)  # raises on a bad option
        return
    if dataset not in (KJV, SYNTHETIC) and not (dataset.startswith(TFDS_PREFIX) and len(dataset) > len(TFDS_PREFIX)):
        raise ConfigError(f"config.data.dataset={dataset!r} is unknown: use kjv, synthetic or tfds:<name>[/<config>] of a prepared tfds text dataset, or markov[/key=value,...]")
    if dataset.startswith(TFDS_PREFIX):
        check_tfds_name(dataset.removeprefix(TFDS_PREFIX), f"config.data.dataset={dataset!r}")


def dataset_slug(dataset: str) -> str:
    """A file-name-safe name for caches: `kjv` → `kjv-1.0.0`, `tfds:lm1b/plain_text` → `lm1b_plain_text`,
    `markov/seed=1` → `markov-1.0.0-order2-alphabet32-...-seed1-...` (every option, so two
    spellings of one corpus share caches and two corpora never do)."""
    if dataset == KJV:
        return f"{KJV}-{KJV_VERSION}"
    if is_markov_name(dataset):
        return f"markov-{MARKOV_VERSION}-{markov_options(dataset).config_name}"
    return re.sub(r"[^A-Za-z0-9.]+", "_", dataset.removeprefix(TFDS_PREFIX)).strip("_")
