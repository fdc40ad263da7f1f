"""Files that must never be seen half-written or written by two processes at once.

Every file bigmodel rewrites (summary.json, eval.json, runs.csv, fit.json, the token cache, a
tokenizer model, metrics.jsonl after a resume) goes through `write_atomically`: write a
temporary sibling, then `os.replace` it, so a reader or a process killed at any instant sees the
old file or the whole new one. `metrics.jsonl` is the one file that grows by appends; its reader
`read_jsonl` skips a torn last line (a process killed mid-write) with a warning instead of
failing on it.

Two kinds of lock, both `fcntl.flock`, which the kernel releases when the holder dies (kill -9
included), so a crashed process never blocks the next one:
- `file_lock(path)`: wait for an exclusive lock (parallel jobs preparing one shared artifact);
- `exclusive_workdir(dir, what)`: take it or fail at once with `WorkdirBusy` (a second trainer
  or sweep on the same directory). flock locks belong to an open file, so never take the same
  lock twice in one process.
"""

from __future__ import annotations

import contextlib
import dataclasses
import errno
import fcntl
import json
import logging
import os
import shutil
import sys
import time
from pathlib import Path
from typing import Iterator

from bigmodel.exit_codes import ConfigError, StorageFailed

LOCK_FILE = ".lock"


class WorkdirBusy(RuntimeError):
    """Another live process holds the directory's lock; the message is the one line to show."""


def temporary_sibling(path: str | os.PathLike) -> Path:
    """A name beside `path`, unique to this process, to write before `os.replace`; its pid lets
    the next writer of `path` remove it if this process dies first (`remove_stale_temporaries`)."""
    path = Path(path)
    return path.with_name(f".{path.name}.tmp{os.getpid()}")


def process_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # another user's live process
        return True
    return True


def remove_stale_temporaries(path: str | os.PathLike) -> list[Path]:
    """Delete the temporary siblings of `path` (files, or an export's folder) left by writers killed
    before their rename (kill -9, a power cut): those whose pid is no longer a live process.
    Returns what it removed."""
    path = Path(path)
    prefix = f".{path.name}.tmp"
    removed = []
    for sibling in path.parent.glob(f".{glob_escape(path.name)}.tmp*"):
        pid = sibling.name[len(prefix):]
        if pid.isdigit() and not process_alive(int(pid)):
            with contextlib.suppress(OSError):
                shutil.rmtree(sibling) if sibling.is_dir() else sibling.unlink()
                removed.append(sibling)
    return removed


def glob_escape(name: str) -> str:
    return "".join(f"[{char}]" if char in "*?[" else char for char in name)


@contextlib.contextmanager
def atomic_file(path: str | os.PathLike, mode: str = "wb") -> Iterator:
    """An open temporary sibling of `path`, renamed onto `path` when the body succeeds."""
    temporary = temporary_sibling(path)
    temporary.parent.mkdir(parents=True, exist_ok=True)
    remove_stale_temporaries(path)
    try:
        with open(temporary, mode) as file:
            yield file
        os.replace(temporary, path)
    finally:
        remove_quietly(temporary)  # after a failed write (disk full), leave no debris


def remove_quietly(path: Path) -> None:
    """Unlink `path` if it is there; a read-only file system answers EROFS even for a missing file."""
    with contextlib.suppress(OSError):
        path.unlink(missing_ok=True)


def write_atomically(path: str | os.PathLike, data: bytes | str) -> None:
    """Write `data` to `path` so that readers see the old file or the whole new one."""
    with atomic_file(path, "w" if isinstance(data, str) else "wb") as file:
        file.write(data)


def write_json_atomic(path: str | os.PathLike, payload) -> None:
    write_atomically(path, json.dumps(payload, indent=2, sort_keys=True) + "\n")


def read_json(path: str | os.PathLike) -> dict | None:
    """A JSON object from `path`, or None if it is missing or not a whole JSON object."""
    try:
        value = json.loads(Path(path).read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError):
        return None
    return value if isinstance(value, dict) else None


def read_jsonl(path: str | os.PathLike, is_record=lambda record: isinstance(record, dict)) -> list[dict]:
    """The records of a JSON-lines file ([] if it is missing): each line's JSON value for which
    `is_record` holds.

    Appends are the only writes, so a last line that is not a record is the torn tail of a process
    killed mid-write: it is skipped with one `warning:` naming the file and line, and costs one
    record, not the file. Such a line anywhere else was not written by bigmodel: ConfigError,
    naming the file and line.
    """
    try:
        text = Path(path).read_text(errors="replace")
    except FileNotFoundError:
        return []
    numbered = [(number, line) for number, line in enumerate(text.splitlines(), start=1) if line.strip()]
    records = []
    for number, line in numbered:
        try:
            record = json.loads(line)
        except json.JSONDecodeError:
            record = None
        if record is not None and is_record(record):
            records.append(record)
        elif number == numbered[-1][0]:
            print(f"warning: {path} line {number} is not a whole record (cut short while being written?): skipped", file=sys.stderr)
        else:
            raise ConfigError(f"{path} line {number} is not a record bigmodel writes ({line[:60]!r}): fix or delete that line")
    return records


def write_jsonl_atomic(path: str | os.PathLike, records: list[dict]) -> None:
    write_atomically(path, "".join(json.dumps(record) + "\n" for record in records))


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


def exclusive_workdir(directory: str | os.PathLike, what: str):
    """Lock `directory/.lock` for this process's lifetime, or raise WorkdirBusy at once.

    Returns the open lock file: keep a reference for as long as the directory is yours (closing
    it, or the process ending in any way, releases the lock). The holder's pid is written into
    the file only to name it in the message.
    """
    path = Path(directory) / LOCK_FILE
    lock_file = open(path, "a+")
    try:
        fcntl.flock(lock_file, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError as error:
        lock_file.seek(0)
        holder = lock_file.read().strip() or "unknown"
        lock_file.close()
        if error.errno in (errno.EAGAIN, errno.EACCES):
            raise WorkdirBusy(
                f"{directory} is in use by another bigmodel {what} (pid {holder}): wait for it to finish or pick another --workdir"
            ) from None
        raise
    lock_file.seek(0)
    lock_file.truncate()
    lock_file.write(f"{os.getpid()}\n")
    lock_file.flush()
    return lock_file


def wait_until_unlocked(directory: str | os.PathLike, timeout_s: float, poll_s: float = 0.5) -> None:
    """Return once no process holds `directory/.lock` (or it does not exist); raise WorkdirBusy
    after `timeout_s`. Takes the lock only for an instant, to test it."""
    path = Path(directory) / LOCK_FILE
    deadline = time.monotonic() + timeout_s
    while path.exists():
        try:
            exclusive_workdir(directory, "run").close()
            return
        except WorkdirBusy:
            if time.monotonic() > deadline:
                raise
            time.sleep(poll_s)


def _flock_holders(path: Path) -> list[int] | None:
    """Pids holding a flock on `path`, from /proc/locks (Linux); None where that cannot be read."""
    try:
        stat, table = os.stat(path), Path("/proc/locks").read_text()
    except FileNotFoundError:
        return [] if Path("/proc/locks").exists() else None
    except OSError:
        return None
    inode = f"{os.major(stat.st_dev):02x}:{os.minor(stat.st_dev):02x}:{stat.st_ino}"
    holders = []
    for line in table.splitlines():
        fields = line.split()
        if "FLOCK" in fields and "->" not in fields and inode in fields:  # "->": a process waiting, not holding
            holders.append(int(fields[fields.index(inode) - 1]))
    return holders


def lock_holder(directory: str | os.PathLike) -> int | None:
    """The pid of the live process holding `directory/.lock` (a trainer writing the run), or None.
    Never takes the lock, even for an instant: a trainer starting meanwhile must not be refused.
    Without /proc/locks, the pid written in the file is taken if that process is alive."""
    path = Path(directory) / LOCK_FILE
    holders = _flock_holders(path)
    if holders is not None:
        return holders[0] if holders else None
    try:
        pid = int(path.read_text().split()[0])
        os.kill(pid, 0)
        return pid
    except (OSError, ValueError, IndexError):
        return None


def link_tree(source: str | os.PathLike, destination: str | os.PathLike) -> None:
    """Hard-link every file under `source` to the same place under `destination` (no bytes
    copied): the links keep the files whatever happens to `source` afterwards. Raises
    FileNotFoundError if `source` loses a file meanwhile, OSError where links cannot be made."""
    source, destination = Path(source), Path(destination)
    for root, _, names in os.walk(source, onerror=_raise):
        target = destination / Path(root).relative_to(source)
        target.mkdir(parents=True, exist_ok=True)
        for name in names:
            os.link(Path(root) / name, target / name)
    if not destination.is_dir():  # os.walk yields nothing for a source that is gone
        raise FileNotFoundError(errno.ENOENT, "No such directory", str(source))


def _raise(error: OSError) -> None:
    raise error


@dataclasses.dataclass(frozen=True)
class StorageGuard:
    """Checks, before a checkpoint is written, that it can be: the directory is still the one the
    run started in, and the disk has room. Failing early leaves no half-written checkpoint, and
    stops orbax from recreating a deleted run directory (it creates missing parents)."""

    directory: Path
    identity: tuple[int, int]  # (device, inode) of the directory when the run started
    bytes_needed: int  # an upper bound of one checkpoint's size (zstd only shrinks it)

    @classmethod
    def of(cls, directory: str | os.PathLike, bytes_needed: int) -> "StorageGuard":
        stat = os.stat(directory)
        return cls(Path(directory), (stat.st_dev, stat.st_ino), bytes_needed)

    def vanished(self) -> str | None:
        """Why the directory is no longer the run's, or None."""
        try:
            stat = os.stat(self.directory)
        except FileNotFoundError:
            return f"{self.directory} no longer exists"
        if (stat.st_dev, stat.st_ino) != self.identity:
            return f"{self.directory} was deleted or replaced while the run wrote to it"
        return None

    def broken(self) -> bool:
        """Whether a checkpoint could not be written now (the directory gone, or too little room)."""
        try:
            self.check()
        except OSError:
            return True
        return False

    def check(self) -> None:
        """Raise OSError (ENOENT or ENOSPC) if a checkpoint cannot be written now."""
        reason = self.vanished()
        if reason:
            raise OSError(errno.ENOENT, reason)
        free = shutil.disk_usage(self.directory).free
        if free < self.bytes_needed:
            raise OSError(errno.ENOSPC, f"No space left on device: a checkpoint needs up to {self.bytes_needed / 2**20:.1f} MiB, "
                                        f"{free / 2**20:.1f} MiB are free")


STORAGE_ERRNOS = {errno.ENOSPC, errno.EDQUOT, errno.EROFS, errno.EFBIG, errno.ENOENT, errno.EIO, errno.EACCES}
STORAGE_PHRASES = ("No space left on device", "Read-only file system", "File too large", "Disk quota exceeded", "Input/output error")


def storage_failure(error: BaseException) -> str | None:
    """The storage problem behind `error` (its chain searched: orbax wraps the OSError of its
    writer threads), or None if it is something else."""
    seen = error
    while seen is not None:
        if isinstance(seen, OSError) and seen.errno in STORAGE_ERRNOS:
            return f"{seen.strerror}" + (f": {seen.filename}" if seen.filename else "")
        phrase = next((phrase for phrase in STORAGE_PHRASES if phrase in str(seen)), None)
        if phrase:
            return phrase
        seen = seen.__cause__ or seen.__context__
    return None


class StorageErrorFilter(logging.Filter):
    """Drops orbax's own ERROR records (one per writer thread, with tracebacks) for a storage
    failure: the command reports it once, as one `error:` line. Every other record passes."""

    def __init__(self, guard: StorageGuard):
        super().__init__()
        self.guard = guard

    def filter(self, record: logging.LogRecord) -> bool:
        if record.levelno < logging.ERROR:
            return True
        error = record.exc_info[1] if record.exc_info else Exception(record.getMessage())
        return storage_problem(error, self.guard) is None


def storage_problem(error: BaseException, guard: StorageGuard) -> str | None:
    """Why writing a run failed, if storage is the cause; None for any other error. A workdir
    deleted under a running command surfaces as assorted NOT_FOUND errors: name the cause."""
    return guard.vanished() or storage_failure(error)


@contextlib.contextmanager
def storage_faults(guard: StorageGuard) -> Iterator[None]:
    """The body's storage failure (disk full, read-only, the directory gone) as one StorageFailed
    (exit 74) whose message is the line to show; orbax's per-thread tracebacks of it are dropped
    meanwhile. Any other error passes unchanged. After a StorageFailed, orbax's writer threads may
    still be failing: leave the process at once (`train.leave_at_once`)."""
    quiet, hook = StorageErrorFilter(guard), sys.excepthook
    logging.getLogger("absl").addFilter(quiet)  # orbax logs through absl
    # tensorstore's callbacks into the closed event loop of a failed async save print their
    # tracebacks through sys.excepthook, from its own threads: dropped while the storage is broken
    sys.excepthook = lambda kind, value, trace: None if guard.broken() or storage_problem(value, guard) else hook(kind, value, trace)
    failed = False
    try:
        yield
    except Exception as error:  # noqa: BLE001 — only storage failures are handled; the rest re-raise
        reason = storage_problem(error, guard)
        if reason is None:
            raise
        failed = True  # the quiet hook stays until the process leaves (`train.leave_at_once`)
        raise StorageFailed(f"writing to {guard.directory} failed ({reason}); the checkpoints written before are intact: "
                            "free space or fix the storage, then rerun the same command to resume") from None
    finally:
        logging.getLogger("absl").removeFilter(quiet)
        if not failed:
            sys.excepthook = hook
