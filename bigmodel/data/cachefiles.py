"""Files shared by concurrent processes: an exclusive fcntl lock and atomic replacement.

Parallel sweep jobs and the processes of a multi-host run all prepare the same data dir. Each
artifact (built dataset, tokenizer model, token cache) is made by one process under the lock
`<artifact>.lock` while the others wait, and is written to a temporary name then renamed, so a
reader never sees half a file. flock locks belong to an open file, so never take the same lock
twice in one process: each artifact has its own lock file and none is taken while holding it.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
from pathlib import Path
from typing import Iterator


@contextlib.contextmanager
def file_lock(path: str | os.PathLike) -> Iterator[None]:
    """Hold an exclusive lock on `path` (created if missing) for the body of the `with`."""
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    with open(path, "a") as lock_file:
        fcntl.flock(lock_file, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(lock_file, fcntl.LOCK_UN)


def temporary_sibling(path: str | os.PathLike) -> Path:
    """A name beside `path`, unique to this process, to write before `os.replace`."""
    path = Path(path)
    return path.with_name(f".{path.name}.tmp{os.getpid()}")


def write_atomically(path: str | os.PathLike, data: bytes) -> None:
    """Write `data` to `path` so that readers see the old file or the whole new one."""
    temporary = temporary_sibling(path)
    temporary.parent.mkdir(parents=True, exist_ok=True)
    temporary.write_bytes(data)
    os.replace(temporary, path)
