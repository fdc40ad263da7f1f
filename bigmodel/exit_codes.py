"""Process exit codes of `python -m bigmodel ...`, so a scheduler can tell outcomes apart.

| code | meaning                                              | what to do                      |
|------|------------------------------------------------------|---------------------------------|
| 0    | finished (or was already finished)                   | nothing                         |
| 1    | the run failed (non-finite loss, a crash)            | read the log; fix; rerun        |
| 2    | bad input: one `error:` line, nothing was written    | fix the command                 |
| 74   | storage failed mid-run (disk full, read-only, gone)  | free space; rerun to resume     |
| 75   | stopped by SIGTERM/SIGINT after checkpointing        | rerun the same command: resumes |

74 and 75 are sysexits' EX_IOERR and EX_TEMPFAIL; both mean "resumable".

`ConfigError` is bad input's exception: raised at any layer, printed by the CLI as the one
`error:` line, exit 2. `Failed` (exit 1) and `StorageFailed` (exit 74) are printed the same way.
They live here, on the ground floor, so that every module may raise them.
"""

OK = 0
FAILED = 1
BAD_INPUT = 2
STORAGE_ERROR = 74
STOPPED = 75


class ConfigError(ValueError):
    """A config or an input that cannot run; the message is the one line the user sees."""


class Failed(RuntimeError):
    """The command could not do its work for a reason other than its input (no checkpoint of the
    run is readable); the message is the one line the user sees, exit 1."""


class StorageFailed(OSError):
    """Writing failed for want of storage (disk full, read-only, directory gone); the message is
    the one line the user sees, exit 74."""
