"""Execute a sweep's runs on a backend: order, retries, re-attach, and the registry rows.

`execute` launches what is not done (`backends`: local subprocesses, Slurm or Ray jobs), watches
the launches, relaunches a failed run up to `retries` times (each launch resumes from the run's
checkpoint), and rewrites DIR/runs.csv (`registry.write_registry`, atomic) whenever a run starts,
moves to another host or ends. Only this driver writes the registry; the sweep holds DIR/.lock.

A restarted driver reads the registry an earlier one left: runs with a summary.json are done;
runs recorded `running` as jobs of a backend that outlives its driver (Slurm, Ray) are re-attached
when the backend says they are still pending or running (watched, never submitted twice); the
rest are launched again and resume. A run's `attempts` counts its launches over all sweeps; the
retry budget is per sweep command.
"""

from __future__ import annotations

import datetime
import math
import signal
import sys
import time
from pathlib import Path

from bigmodel import exit_codes
from bigmodel.config import ConfigError
from bigmodel.scaling import backends, registry, status
from bigmodel.scaling.live import LiveLine, summary_text, sweep_eta
from bigmodel.scaling.backends import LOG_FILE
from bigmodel.scaling.registry import DONE, FAILED, PENDING, RUNNING, STOPPED, row_for_run, run_summary
from bigmodel.scaling.study import Run


# ----------------------------------------------------------------------------- time estimates

# Time estimate for --dry-run and the "started" lines for --dry-run: FLOPs at the rate the trainer sustained on this 2-core CPU over
# experiments/demo.py (2 layers, d_model 32–192, fp32, seq_len 128, batch 16: 18 GFLOP/s for the
# smallest, 45 for the largest, 36 overall), plus a fixed cost per run (start Python, import
# JAX and tfds). Predicted this way: 12.0 min; measured 12.1 min (2026-11-22, --jobs 1, on a
# machine shared with other work). Small models are overhead-bound and run below this rate.
CPU_FLOPS_PER_S = 40e9
RUN_OVERHEAD_S = 10.0


def estimated_seconds(run: Run) -> float:
    return RUN_OVERHEAD_S + run.trained_flops / CPU_FLOPS_PER_S


def format_duration(seconds: float) -> str:
    if seconds < 120:
        return f"{seconds:.0f}s"
    return f"{seconds / 60:.1f}m" if seconds < 7200 else f"{seconds / 3600:.1f}h"


# ----------------------------------------------------------------------------- outcomes


def result_text(row: dict) -> str:
    """"loss 1.52, eval 1.49, bpb 2.15, 63s" from a registry row."""
    parts = []
    for key, label in (("final_loss", "loss"), ("final_eval_loss", "eval"), ("eval_bpb", "bpb")):
        value = row.get(key)
        if isinstance(value, (int, float)) and math.isfinite(value):
            parts.append(f"{label} {value:.4f}")
    if row.get("wall_time_s") != "":
        parts.append(f"{float(row['wall_time_s']):.0f}s")
    return ", ".join(parts)


def last_log_line(log_path: Path, limit_chars: int = 300) -> str:
    """The error a crashed run leaves: the last non-empty line of its log (a traceback's message)."""
    try:
        lines = [line.strip() for line in log_path.read_text(errors="replace").splitlines() if line.strip()]
    except FileNotFoundError:
        return "no train.log was written"
    return lines[-1][:limit_chars] if lines else "train.log is empty"


def outcome_row(run: Run, return_code: int, workdir: Path, elapsed_s: float, interrupted: bool = False) -> dict:
    """Done only with exit 0 *and* a summary; stopped (resumable) after a signal; else failed,
    with the log's last line."""
    summary = run_summary(workdir, run.name)
    if return_code == 0 and summary is not None:
        return row_for_run(run, DONE, summary, wall_time_s=elapsed_s)
    if return_code == exit_codes.STOPPED or interrupted:
        return row_for_run(run, STOPPED, error=f"stopped (exit {return_code}): rerun the sweep to resume", wall_time_s=elapsed_s)
    error = last_log_line(workdir / run.name / LOG_FILE)
    if return_code == 0:
        error = f"exited 0 without writing {registry.SUMMARY_FILE}; last log line: {error}"
    return row_for_run(run, FAILED, error=f"exit {return_code}: {error}", wall_time_s=elapsed_s)


def should_retry(row: dict, return_code: int, launches: int, retries: int) -> bool:
    """A failed run is launched again while it has launches left; a stopped run is not (someone
    stopped it: the next sweep resumes it), nor a bad input (exit 2: the same command fails the
    same way)."""
    return row["status"] == FAILED and return_code != exit_codes.BAD_INPUT and launches <= retries


def report_outcome(position: str, row: dict) -> None:
    if row["status"] == DONE:
        print(f"{position} finished {row['name']} ({result_text(row)})", flush=True)
    elif row["status"] == STOPPED:
        print(f"{position} stopped  {row['name']} ({row['wall_time_s']:.0f}s) {row['error']}", flush=True)
    else:
        print(f"{position} failed   {row['name']} ({row['wall_time_s']:.0f}s) {row['error']}", flush=True)


# ----------------------------------------------------------------------------- branches

MAX_STALLED_REQUEUES = 2
CHECKPOINTS = "checkpoints"  # bigmodel.checkpoint.CHECKPOINT_DIR, not imported: it loads orbax and JAX into the driver


def start_point_written(run: Run, workdir: Path) -> bool:
    """Whether a cooldown branch's start, its parent's checkpoint at init_step, is on disk (orbax
    renames a step's folder into place once it is complete); always true for other runs."""
    return not run.parent or (workdir / run.parent / CHECKPOINTS / str(run.init_step)).is_dir()


def checkpointed_step(run_dir: Path) -> int:
    """The newest finished checkpoint step of a run (0 if none), from the folder names alone."""
    steps = [int(path.name) for path in (run_dir / CHECKPOINTS).glob("*") if path.name.isdigit()]
    return max(steps, default=0)


def stranded_row(run: Run, parent_row: dict) -> dict:
    """The row of a branch whose stable run ended without writing its start: stopped with it
    (a rerun resumes both) or failed with it."""
    status = STOPPED if parent_row["status"] == STOPPED else FAILED
    error = (f"its stable run {run.parent} ended {parent_row['status']} before its checkpoint at step {run.init_step}: "
             "rerun the sweep to resume both" if status == STOPPED else
             f"its stable run {run.parent} ended {parent_row['status']} before its checkpoint at step {run.init_step}")
    return row_for_run(run, status, error=error, wall_time_s=0.0)


# ----------------------------------------------------------------------------- launches


def utc_now() -> str:
    return datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds")


def epoch_of(timestamp: str) -> float:
    """Seconds since the epoch of a registry timestamp; now if it is missing or unreadable."""
    try:
        return datetime.datetime.fromisoformat(timestamp).timestamp()
    except ValueError:
        return time.time()


def previous_rows(workdir: Path) -> dict[str, dict]:
    """The rows an earlier sweep left in DIR/runs.csv, by name ({} when there is none)."""
    if not (workdir / registry.REGISTRY_FILE).is_file():
        return {}
    try:
        return {row["name"]: row for _, row in registry.read_registry(workdir)}
    except ValueError as error:  # without it, jobs still in flight could be launched twice
        raise ConfigError(f"{error}; the run folders are intact: move {workdir / registry.REGISTRY_FILE} aside to rebuild it") from None


def launch_of(previous: dict | None) -> dict[str, str]:
    """A run's launch columns as an earlier registry recorded them ("" each when none)."""
    return {column: str((previous or {}).get(column, "")) for column in registry.LAUNCH_COLUMNS}


def in_flight_elsewhere(previous: dict | None, backend) -> bool:
    """Whether a run is recorded running as a job of another backend that outlives its driver."""
    return (previous is not None and previous["status"] == RUNNING and previous["job_id"] != ""
            and previous["backend"] != backend.name and backends.outlives_driver(previous["backend"]))


def check_no_jobs_elsewhere(runs: list[Run], previous: dict[str, dict], backend, workdir: Path) -> None:
    """Refuse to start, on another backend, runs an earlier driver left in flight (a second copy)."""
    stray = [(run.name, previous[run.name]) for run in runs if in_flight_elsewhere(previous.get(run.name), backend)]
    if stray:
        name, row = stray[0]
        raise ConfigError(f"{len(stray)} runs of {workdir} may still be in flight as {row['backend']} jobs (e.g. {name}, job {row['job_id']}): "
                          f"rerun with --backend {row['backend']} to re-attach, or cancel them and move {workdir / registry.REGISTRY_FILE} aside")


def reattached_handle(run: Run, previous: dict | None, backend, workdir: Path) -> str | None:
    """The handle of an earlier driver's launch of `run` that is still pending or running on
    this backend (it is watched, never launched twice), else None."""
    if previous is None or previous["status"] != RUNNING or previous["backend"] != backend.name or not previous["job_id"]:
        return None
    if not backend.outlives_driver:
        return None  # a local child stopped with its driver: the run is resumed instead
    return previous["job_id"] if backend.reattach(previous["job_id"], workdir / run.name, run.resources) else None


CANCEL_COMMANDS = {"slurm": "scancel", "ray": "ray job stop"}  # how a user stops the jobs a driver left running


# ----------------------------------------------------------------------------- the driver


def execute(runs: list[Run], workdir: Path, backend, retries: int = 0) -> list[dict]:
    """Run what is not done on `backend`, re-attaching to launches still in flight and
    relaunching a failed run up to `retries` times; return every run's final registry row."""
    return SweepDriver(runs, workdir, backend, retries).run()


class SweepDriver:
    """One sweep command's pass over its runs: take stock of what an earlier driver left, then
    start what may start, poll what is in flight, and record each outcome in the registry.

    Its state, one entry per run (by name) unless said:
    rows         the run's registry row as it stands (written out by `save`);
    launches     the run's launch columns: backend, job id, host, attempts, started/finished at;
    todo         the runs waiting to start, in sweep order;
    in_flight    launch handle → (run, start time), the launches being watched;
    launched     the run's launches in this sweep (the retry budget counts them);
    start_steps  the checkpointed step the run's current launch started from;
    stalled      the run's launches in a row that checkpointed nothing new.
    """

    def __init__(self, runs: list[Run], workdir: Path, backend, retries: int):
        self.runs, self.workdir, self.backend, self.retries = runs, workdir, backend, retries
        self.previous = previous_rows(workdir)
        check_no_jobs_elsewhere(runs, self.previous, backend, workdir)
        self.position = {run.name: f"[{number}/{len(runs)}]" for number, run in enumerate(runs, 1)}
        self.rows: dict[str, dict] = {}
        self.launches = {run.name: launch_of(self.previous.get(run.name)) for run in runs}
        self.todo: list[Run] = []
        self.in_flight: dict[str, tuple[Run, float]] = {}
        self.launched = {run.name: 0 for run in runs}
        self.start_steps: dict[str, int] = {}
        self.stalled: dict[str, int] = {}
        self.live = LiveLine()
        self.sweep_start = time.monotonic()

    # --------------------------------------------------------------------- the loop

    def run(self) -> list[dict]:
        """Until nothing waits or runs: start what may, drop branches that never can, poll."""
        self.take_stock()
        self.sweep_start = time.monotonic()
        try:
            while self.todo or self.in_flight:
                self.start_what_fits()
                self.leave_stranded_branches()
                time.sleep(self.backend.poll_interval_s)
                self.poll_in_flight()
                self.show_progress()
            self.live.clear()
        except (KeyboardInterrupt, backends.ClusterLost):
            self.live.clear()
            self.stop_or_leave()
            self.save()
            raise
        return [self.rows[run.name] for run in self.runs]

    def take_stock(self) -> None:
        """Each run is done (skipped), still in flight from an earlier driver (attached), or to do."""
        for run in self.runs:
            summary = run_summary(self.workdir, run.name)
            handle = None if summary else reattached_handle(run, self.previous.get(run.name), self.backend, self.workdir)
            if summary:  # done, whatever an earlier registry said
                self.record(row_for_run(run, DONE, summary))
                self.say(run, f"skipped  {run.name} (done: {result_text(self.rows[run.name])})")
            elif handle:
                self.in_flight[handle], self.launched[run.name] = (run, epoch_of(self.launches[run.name]["started_at"])), 1
                self.record(row_for_run(run, RUNNING))
                self.say(run, f"attached {run.name} ({self.backend.name} job {handle}, launched {self.launches[run.name]['started_at']})")
            else:  # a stopped, failed or lost run starts again and resumes from its checkpoint
                self.record(row_for_run(run, PENDING))
                self.todo.append(run)
        self.save()

    def start_what_fits(self) -> None:
        """In order, each run that may start and fits now (a big one waits, smaller ones go by)."""
        for run in list(self.todo):
            if self.may_start(run) and self.backend.can_start(run.resources):
                self.todo.remove(run)
                self.launch(run)

    def poll_in_flight(self) -> None:
        for handle in list(self.in_flight):
            self.note_host(handle)  # before poll: a job that ends now still records where it ran
            return_code = self.backend.poll(handle)
            if return_code is not None:
                self.finish(handle, return_code)

    # --------------------------------------------------------------------- the registry and the terminal

    def record(self, row: dict) -> None:
        self.rows[row["name"]] = {**row, **self.launches[row["name"]]}

    def save(self) -> None:
        registry.write_registry(self.workdir, [self.rows[run.name] for run in self.runs])

    def say(self, run: Run, text: str) -> None:
        print(f"{self.position[run.name]} {text}", flush=True)

    def show_progress(self) -> None:
        """The live line: counts, elapsed, ETA from the running runs' logged pace (read only when
        the line is redrawn) and the dry-run estimate of the pending ones."""
        if not self.live.due():
            return
        running_etas = [status.run_status(self.workdir, self.rows[run.name])["eta_s"] for run, _ in self.in_flight.values()]
        eta = sweep_eta(running_etas, [estimated_seconds(run) for run in self.todo], max(len(self.in_flight), 1))
        statuses = [self.rows[run.name]["status"] for run in self.runs]
        self.live.show(summary_text(statuses, time.monotonic() - self.sweep_start, eta))

    # --------------------------------------------------------------------- one launch

    def launch(self, run: Run) -> None:
        self.live.clear()
        try:
            handle = self.backend.submit(run, self.workdir / run.name, run.resources)
        except backends.SubmitFailed as error:
            self.record(row_for_run(run, FAILED, error=str(error), wall_time_s=0.0))
            self.save()
            report_outcome(self.position[run.name], self.rows[run.name])
            return
        self.launched[run.name] += 1
        self.start_steps[run.name] = checkpointed_step(self.workdir / run.name)
        attempts = int(self.launches[run.name]["attempts"] or 0) + 1
        self.launches[run.name].update(backend=self.backend.name, job_id=handle, host=self.backend.host(handle), attempts=str(attempts),
                                       started_at=utc_now(), finished_at="")
        self.in_flight[handle] = (run, time.time())
        self.record(row_for_run(run, RUNNING))
        self.save()
        where = "" if self.backend.name == "local" else f", {self.backend.name} job {handle}"
        self.say(run, f"started  {run.name} ({run.steps} steps, est. {format_duration(estimated_seconds(run))}{where})")

    def finish(self, handle: str, return_code: int) -> None:
        """A launch ended: requeue it (stopped by the scheduler), retry it (failed), or record its outcome."""
        self.live.clear()
        run, started = self.in_flight.pop(handle)
        self.launches[run.name]["finished_at"] = utc_now()
        row = outcome_row(run, return_code, self.workdir, time.time() - started)
        reached = checkpointed_step(self.workdir / run.name)
        self.stalled[run.name] = 0 if reached > self.start_steps.get(run.name, 0) else self.stalled.get(run.name, 0) + 1
        if row["status"] == STOPPED and self.backend.stopped_by_scheduler(handle) and self.stalled[run.name] <= MAX_STALLED_REQUEUES:
            # A time limit or preemption: the next launch resumes from step `reached` (not counted
            # as a retry). Launches that checkpoint nothing new (a preemption while starting) are
            # requeued MAX_STALLED_REQUEUES times in a row, so a limit too short for one
            # checkpoint cannot loop forever.
            self.record({**row, "status": PENDING})
            self.todo.append(run)
            self.say(run, f"requeued {run.name}: stopped by the scheduler at step {reached}; resuming")
        elif should_retry(row, return_code, self.launched[run.name], self.retries):
            self.record({**row, "status": PENDING})
            self.todo.append(run)
            self.say(run, f"retrying {run.name} (launch {self.launched[run.name] + 1} of {self.retries + 1}) after {row['error']}")
        else:
            self.record(row)
            report_outcome(self.position[run.name], row)
        self.save()

    def note_host(self, handle: str) -> None:
        """A Slurm or Ray job's node is known once it runs."""
        run = self.in_flight[handle][0]
        host = self.backend.host(handle)
        if host and host != self.launches[run.name]["host"]:
            self.launches[run.name]["host"] = host
            self.record(self.rows[run.name])
            self.save()

    # --------------------------------------------------------------------- branches wait for their start

    def parent_ended(self, run: Run) -> bool:
        return run.parent not in {other.name for other in self.todo} | {other.name for other, _ in self.in_flight.values()}

    def may_start(self, run: Run) -> bool:
        """Any run but a branch whose start is not written yet; a branch whose parent is done
        without it starts anyway, and its trainer says what is missing."""
        return start_point_written(run, self.workdir) or (self.parent_ended(run) and self.rows[run.parent]["status"] == DONE)

    def leave_stranded_branches(self) -> None:
        """Branches whose parent ended (not done) without their start will never start: record them."""
        for run in [run for run in self.todo if run.parent and self.parent_ended(run)]:
            if self.rows[run.parent]["status"] != DONE and not start_point_written(run, self.workdir):
                self.todo.remove(run)
                self.record(stranded_row(run, self.rows[run.parent]))
                report_outcome(self.position[run.name], self.rows[run.name])
                self.save()

    # --------------------------------------------------------------------- Ctrl-C, SIGTERM, a lost cluster

    def stop_or_leave(self) -> None:
        """Local runs are stopped (they checkpoint) and marked `stopped`; jobs that outlive the
        driver keep running, recorded as such for the next sweep to re-attach."""
        if self.backend.outlives_driver:
            if self.in_flight:
                handles = " ".join(sorted(self.in_flight))
                print(f"{len(self.in_flight)} {self.backend.name} jobs keep running ({handles}): rerun the same command to re-attach "
                      f"to them, or cancel them ({CANCEL_COMMANDS.get(self.backend.name, 'scancel')}) to stop them",
                      file=sys.stderr, flush=True)
            return
        for signum in (signal.SIGINT, signal.SIGTERM):  # a second Ctrl-C must not abandon the children mid-checkpoint
            signal.signal(signum, lambda *_: print("already stopping: waiting for runs to checkpoint", file=sys.stderr, flush=True))
        for handle, (run, started) in list(self.in_flight.items()):
            return_code = self.backend.cancel(handle)  # the trainer checkpoints on SIGTERM; Ctrl-C in a terminal reached it already
            self.launches[run.name]["finished_at"] = utc_now()
            self.record(outcome_row(run, return_code, self.workdir, time.time() - started, interrupted=True))
