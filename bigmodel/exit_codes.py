"""Process exit codes of `python -m bigmodel ...`, so a scheduler can tell outcomes apart.

| code | meaning                                              | what to do                      |
|------|------------------------------------------------------|---------------------------------|
| 0    | finished (or was already finished)                   | nothing                         |
| 1    | the run failed (non-finite loss, a crash)            | read the log; fix; rerun        |
| 2    | bad input: one `error:` line, nothing was written    | fix the command                 |
| 74   | storage failed mid-run (disk full, read-only, gone)  | free space; rerun to resume     |
| 75   | stopped by SIGTERM/SIGINT after checkpointing        | rerun the same command: resumes |

74 and 75 are sysexits' EX_IOERR and EX_TEMPFAIL; both mean "resumable".
"""

OK = 0
FAILED = 1
BAD_INPUT = 2
STORAGE_ERROR = 74
STOPPED = 75
