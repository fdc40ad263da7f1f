"""Where documents come from: the data dir, and reading a split's texts via tfds.

`kjv` and `markov` corpora are built on first use (kjv.py, markov.py); a `tfds:<name>` dataset
must be prepared already as array_record (`tfds build <name> --file_format=array_record`):
bigmodel never downloads. tfds is imported only when a split must be read, so a run whose
tokens are already cached starts without it. Which names exist is names.py's business.
"""

from __future__ import annotations

import os
from pathlib import Path

from bigmodel.exit_codes import ConfigError
from bigmodel.runtime import user_cache_dir
from bigmodel.data.markov_chain import is_markov_name
from bigmodel.data.names import KJV, TFDS_PREFIX, check_dataset_name

TEXT_FEATURE = "text"


def resolve_data_dir(data_config, environment=os.environ) -> str:
    """`data_config.data_dir` if set, else `$TFDS_DATA_DIR`, else `$XDG_CACHE_HOME/bigmodel/tfds`
    (~/.cache/bigmodel/tfds), absolute. The token and tokenizer caches live inside it."""
    chosen = data_config.get("data_dir", "") or environment.get("TFDS_DATA_DIR", "") or str(user_cache_dir(environment) / "tfds")
    return str(Path(chosen).expanduser().absolute())


def as_text(value) -> str:
    """tfds Text features come back as bytes from array_record and as str from its mocks."""
    return value.decode("utf-8") if isinstance(value, bytes) else str(value)


def read_texts(source) -> list[str]:
    """Every record's text feature, in storage order (one random-access read per record)."""
    return [as_text(source[index][TEXT_FEATURE]) for index in range(len(source))]


def kjv_split(split: str, data_dir: str):
    from bigmodel.data.kjv import prepare_kjv  # imports tfds: only when the data is read

    if split not in ("train", "validation"):
        raise ValueError(f"kjv has splits train and validation, not {split!r}")
    return prepare_kjv(data_dir).as_data_source(split=split)


def markov_split(dataset: str, split: str, data_dir: str):
    from bigmodel.data.markov import prepare_markov  # imports tfds: only when the data is read

    if split not in ("train", "validation"):
        raise ValueError(f"markov has splits train and validation, not {split!r}")
    return prepare_markov(data_dir, dataset).as_data_source(split=split)


def pick_tfds_split(known_splits: list[str], split: str) -> str:
    """`validation` falls back to `test` when a dataset has no validation split.

    `known_splits` is empty when tfds knows no split names (e.g. under tfds.testing.mock_data):
    then the requested name is used as is.
    """
    if split == "validation" and known_splits and "validation" not in known_splits:
        if "test" not in known_splits:
            raise ConfigError(f"the dataset has splits {', '.join(known_splits)}: it needs validation or test for evaluation")
        return "test"
    if known_splits and split not in known_splits:
        raise ConfigError(f"the dataset has splits {', '.join(known_splits)}, not {split!r}")
    return split


def tfds_builder(name: str, data_dir: str, what: str):
    """tfds's builder of the dataset `name` (no `tfds:`); `what` says in errors where it was given."""
    import tensorflow_datasets as tfds

    try:
        return tfds.builder(name, data_dir=data_dir)
    except tfds.core.DatasetNotFoundError:
        raise ConfigError(f"{what}: tfds has no dataset {name!r}; check the name (tfds:<name>[/<config>])") from None
    except ValueError as error:  # e.g. a config the builder does not define; tfds's text is long, its gist is after '": '
        gist = str(error).split('": ')[-1].split(". ")[0].strip()
        raise ConfigError(f"{what}: tfds cannot open {name!r} ({gist}): check the name and the config after its '/'") from None


def tfds_split(dataset: str, split: str, data_dir: str):
    """A prepared tfds text dataset's split as a random-access source; never downloads."""
    import tensorflow_datasets as tfds

    name = dataset.removeprefix(TFDS_PREFIX)
    prepare_hint = f"prepare it first with: tfds build {name} --file_format=array_record --data_dir={data_dir}"
    builder = tfds_builder(name, data_dir, f"config.data.dataset={dataset!r}")
    if TEXT_FEATURE not in builder.info.features:
        raise ConfigError(f"config.data.dataset={dataset!r} has no {TEXT_FEATURE!r} feature (it has {', '.join(builder.info.features)}): use a text dataset")
    chosen = pick_tfds_split(list(builder.info.splits.keys()), split)
    try:
        return tfds.data_source(name, split=chosen, data_dir=data_dir, download=False)
    except Exception as error:  # tfds raises several types here; all mean "not prepared as array_record"
        raise ConfigError(f"config.data.dataset={dataset!r} split {chosen!r} cannot be read from {data_dir} ({type(error).__name__}): {prepare_hint}") from error


def open_split(dataset: str, split: str, data_dir: str):
    """The random-access source (len + getitem of feature dicts) of one split of `dataset`."""
    check_dataset_name(dataset)
    if dataset == KJV:
        return kjv_split(split, data_dir)
    if is_markov_name(dataset):
        return markov_split(dataset, split, data_dir)
    return tfds_split(dataset, split, data_dir)


def read_split_texts(dataset: str, split: str, data_dir: str) -> list[str]:
    return read_texts(open_split(dataset, split, data_dir))
