"""`python -m bigmodel sweep EXPERIMENT --workdir DIR`: run a study's trainings, keep a registry.

Each run is a subprocess `python -m bigmodel train --config <spec> --workdir DIR/<name> ...`
(its output goes to DIR/<name>/train.log, its exact command to DIR/<name>/command.sh), so a crash
or a leak in one run cannot touch the others, and any run can be repeated by hand.

- Idempotent: a run whose summary.json exists is skipped; an unfinished one is started again
  on its existing directory, which the trainer resumes from its last checkpoint. The runner
  writes only train.log and command.sh there: the trainer checks the run and writes config.json.
- Failure isolation: a failed run is recorded (status `failed`, the last line of its log) and
  the sweep goes on; the exit code is the number of failed runs (at most 125). A trainer that
  exits with `exit_codes.STOPPED` (a signal, after checkpointing) is `stopped`, not failed:
  the next sweep resumes it.
- Registry: DIR/runs.csv (`bigmodel.scaling.registry`), one row per run, rewritten atomically
  whenever a run starts or ends.
- One sweep per directory: the sweep holds DIR/.lock (`files.exclusive_workdir`) while it
  runs; a second sweep on DIR is refused with one line.
- Analysis: if the study declares one, fit the law (`bigmodel.scaling.fit`) into DIR/fit.json
  and draw DIR/plots/ (`bigmodel.scaling.plot`) once the runs are done.
"""

from __future__ import annotations

import importlib.util
import json
import ctypes
import math
import os
import shlex
import signal
import subprocess
import sys
import time
from pathlib import Path

from bigmodel import exit_codes, files
from bigmodel.config import ConfigError
from bigmodel.scaling import registry
from bigmodel.scaling.registry import DONE, FAILED, PENDING, RUNNING, STOPPED, row_for_run, run_summary
from bigmodel.scaling.sweep import Run, Study, expand, format_number, validate_runs

LOG_FILE = "train.log"
PR_SET_PDEATHSIG = 1  # linux/prctl.h
RUN_LOCK_WAIT_S = 120.0  # how long a run's orphaned trainer may take to checkpoint and exit
MAX_EXIT_CODE = 125  # 126+ mean "not executable", "not found" and signals to a shell
POLL_INTERVAL_S = 0.5

# Time estimate for --dry-run: FLOPs at the rate the trainer sustained on this 2-core CPU over
# experiments/demo.py (2 layers, d_model 32–192, fp32, seq_len 128, batch 16: 18 GFLOP/s for the
# smallest, 45 for the largest, 36 overall), plus a fixed cost per run (start Python, import
# JAX and tfds). Predicted this way: 12.0 min; measured 12.1 min (2026-11-22, --jobs 1, on a
# machine shared with other work). Small models are overhead-bound and run below this rate.
CPU_FLOPS_PER_S = 40e9
RUN_OVERHEAD_S = 10.0


# ----------------------------------------------------------------------------- the experiment file


def load_study(path: str | Path) -> Study:
    """Import `path` and call its `get_study()`; every problem is one ConfigError line."""
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"experiment file {str(path)!r} not found: pass a path such as experiments/demo.py")
    module_spec = importlib.util.spec_from_file_location(f"_bigmodel_experiment_{path.stem}", path)
    module = importlib.util.module_from_spec(module_spec)
    write_bytecode, sys.dont_write_bytecode = sys.dont_write_bytecode, True  # leave no __pycache__ behind
    try:
        module_spec.loader.exec_module(module)
    except Exception as error:  # noqa: BLE001 — any import-time error is the file's problem
        raise ConfigError(f"experiment file {str(path)!r} failed to load: {type(error).__name__}: {error}") from None
    finally:
        sys.dont_write_bytecode = write_bytecode
    if not callable(getattr(module, "get_study", None)):
        raise ConfigError(f"experiment file {str(path)!r} defines no get_study(): return a bigmodel.scaling.sweep.Study")
    try:
        study = module.get_study()
    except ConfigError:
        raise
    except Exception as error:  # noqa: BLE001 — the experiment's code, reported as one line
        raise ConfigError(f"{path}: get_study() failed: {type(error).__name__}: {error}") from None
    if not isinstance(study, Study):
        raise ConfigError(f"{path}: get_study() returned {type(study).__name__}, expected bigmodel.scaling.sweep.Study")
    return study


def plan_runs(experiment: str | Path) -> tuple[Study, list[Run]]:
    """Load, expand and validate every run, before anything is written."""
    study = load_study(experiment)
    try:
        runs = expand(study)
    except ConfigError:
        raise
    except Exception as error:  # noqa: BLE001 — e.g. a typo in the experiment's rules
        raise ConfigError(f"{experiment}: the study does not expand: {type(error).__name__}: {error}") from None
    validate_runs(runs, n_devices=1)
    return study, runs


# ----------------------------------------------------------------------------- dry run


def estimated_seconds(run: Run) -> float:
    return RUN_OVERHEAD_S + run.flops / CPU_FLOPS_PER_S


def format_duration(seconds: float) -> str:
    if seconds < 120:
        return f"{seconds:.0f}s"
    return f"{seconds / 60:.1f}m" if seconds < 7200 else f"{seconds / 3600:.1f}h"


def dry_run_table(runs: list[Run], workdir: Path) -> str:
    width = max(len(run.name) for run in runs)
    lines = [
        f"# {len(runs)} runs; est. time = {RUN_OVERHEAD_S:.0f}s per run + FLOPs at {CPU_FLOPS_PER_S / 1e9:.0f} GFLOP/s "
        "(this 2-core CPU, fp32; other machines differ)",
        f"{'name':<{width}} {'N':>9} {'N_nonemb':>9} {'D':>9} {'FLOPs':>9} {'steps':>6} {'batch':>5} {'est':>6}",
    ]
    for run in runs:
        lines.append(
            f"{run.name:<{width}} {format_number(run.params):>9} {format_number(run.non_embedding_params):>9} "
            f"{format_number(run.tokens):>9} {format_number(run.flops):>9} {run.steps:>6} {run.batch_size:>5} "
            f"{format_duration(estimated_seconds(run)):>6}"
        )
    total = sum(estimated_seconds(run) for run in runs)
    lines.append(f"# total ≈ {format_duration(total)} with --jobs 1 (parallel jobs share the same cores)")
    lines.append(f"# each run, e.g.: {runs[0].command_line(workdir / runs[0].name)}")
    return "\n".join(lines)


def dry_run_json(runs: list[Run], workdir: Path) -> str:
    rows = []
    for run in runs:
        row = run.summary()
        row["estimated_time_s"] = round(estimated_seconds(run), 1)
        row["command"] = run.command_line(workdir / run.name)
        rows.append(json.dumps(row))
    return "\n".join(rows)


# ----------------------------------------------------------------------------- processes


def cpu_slots(jobs: int) -> list[list[int]]:
    """Split the CPUs this process may use into `jobs` disjoint sets (shared when too few)."""
    cpus = sorted(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else list(range(os.cpu_count() or 1))
    per_job = max(1, len(cpus) // jobs)
    return [[cpus[(slot * per_job + offset) % len(cpus)] for offset in range(per_job)] for slot in range(jobs)]


def child_environment(threads: int, pinned: bool) -> dict[str, str]:
    """Thread counts for one of several jobs sharing the cores, so they do not oversubscribe."""
    environment = dict(os.environ, PYTHONUNBUFFERED="1")
    if pinned:
        for variable in ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS"):
            environment[variable] = str(threads)
        if threads == 1:
            flags = "--xla_cpu_multi_thread_eigen=false intra_op_parallelism_threads=1"
            environment["XLA_FLAGS"] = f"{environment.get('XLA_FLAGS', '')} {flags}".strip()
    return environment


def stop_with_parent() -> None:
    """Ask Linux to SIGTERM this (child) process when the sweep driver dies, even by kill -9:
    the trainer then checkpoints and exits 75, and a restarted sweep resumes it instead of
    racing an orphan. Elsewhere (no prctl) orphans finish on their own."""
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(PR_SET_PDEATHSIG, signal.SIGTERM)
    except (OSError, AttributeError):
        pass


def start_run(run: Run, run_dir: Path, cpus: list[int] | None) -> subprocess.Popen:
    run_dir.mkdir(parents=True, exist_ok=True)
    command = run.command(run_dir, python=sys.executable)
    (run_dir / "command.sh").write_text("#!/bin/sh\n# re-run (or resume) this run by hand from the repo root\n" + run.command_line(run_dir) + "\n")
    log = open(run_dir / LOG_FILE, "a")
    log.write(f"\n=== {time.strftime('%Y-%m-%d %H:%M:%S')} {shlex.join(command)}\n")
    log.flush()
    files.wait_until_unlocked(run_dir, timeout_s=RUN_LOCK_WAIT_S)  # a run orphaned by a killed driver is still checkpointing

    def prepare_child() -> None:
        # The parent is single-threaded (no thread pool below), so preexec_fn is safe here.
        stop_with_parent()
        if cpus:  # XLA sizes its thread pool from the affinity mask: pinning sets its thread count
            os.sched_setaffinity(0, cpus)

    try:
        return subprocess.Popen(
            command, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
            env=child_environment(len(cpus) if cpus else 0, pinned=bool(cpus)), preexec_fn=prepare_child,
        )
    finally:
        log.close()  # the child holds its own copy of the descriptor


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


def initial_rows(runs: list[Run], workdir: Path) -> dict[str, dict]:
    """Runs with a summary.json are done (whatever an earlier registry said); the rest pending
    (a stopped or failed run is started again and resumes from its checkpoint)."""
    rows = {}
    for run in runs:
        summary = run_summary(workdir, run.name)
        rows[run.name] = row_for_run(run, DONE, summary) if summary else row_for_run(run, PENDING)
    return rows


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


def report_outcome(position: str, row: dict) -> None:
    if row["status"] == DONE:
        print(f"{position} finished {row['name']} ({result_text(row)})", flush=True)
    elif row["status"] == STOPPED:
        print(f"{position} stopped  {row['name']} ({row['wall_time_s']:.0f}s) {row['error']}", flush=True)
    else:
        print(f"{position} failed   {row['name']} ({row['wall_time_s']:.0f}s) {row['error']}", flush=True)


def execute(runs: list[Run], workdir: Path, jobs: int) -> list[dict]:
    """Run what is not done, `jobs` at a time; return every run's final registry row."""
    rows = initial_rows(runs, workdir)
    save = lambda: registry.write_registry(workdir, [rows[run.name] for run in runs])  # noqa: E731
    save()
    position = {run.name: f"[{number}/{len(runs)}]" for number, run in enumerate(runs, 1)}
    todo = [run for run in runs if rows[run.name]["status"] != DONE]
    for run in runs:
        if rows[run.name]["status"] == DONE:
            print(f"{position[run.name]} skipped  {run.name} (done: {result_text(rows[run.name])})", flush=True)
    slots = cpu_slots(jobs) if jobs > 1 else [None]
    free_slots, running = list(range(len(slots))), {}
    try:
        while todo or running:
            while todo and free_slots:
                run, slot = todo.pop(0), free_slots.pop(0)
                try:
                    running[start_run(run, workdir / run.name, slots[slot])] = (run, slot, time.perf_counter())
                except files.WorkdirBusy as error:  # another process still trains this run: leave it be
                    free_slots.append(slot)
                    rows[run.name] = row_for_run(run, FAILED, error=str(error), wall_time_s=0.0)
                    save()
                    report_outcome(position[run.name], rows[run.name])
                    continue
                rows[run.name] = row_for_run(run, RUNNING)
                save()
                print(f"{position[run.name]} started  {run.name} ({run.steps} steps, est. {format_duration(estimated_seconds(run))})", flush=True)
            time.sleep(POLL_INTERVAL_S)
            for process in [process for process in running if process.poll() is not None]:
                run, slot, started = running.pop(process)
                free_slots.append(slot)
                rows[run.name] = outcome_row(run, process.returncode, workdir, time.perf_counter() - started)
                save()
                report_outcome(position[run.name], rows[run.name])
    except KeyboardInterrupt:
        for signum in (signal.SIGINT, signal.SIGTERM):  # a second Ctrl-C must not abandon the children mid-checkpoint
            signal.signal(signum, lambda *_: print("already stopping: waiting for runs to checkpoint", file=sys.stderr, flush=True))
        for process, (run, _, started) in running.items():
            process.terminate()  # the trainer checkpoints on SIGTERM; Ctrl-C in a terminal reached it already
            process.wait()
            rows[run.name] = outcome_row(run, process.returncode, workdir, time.perf_counter() - started, interrupted=True)
        save()
        raise
    return [rows[run.name] for run in runs]


# ----------------------------------------------------------------------------- analysis


def describe_fit(fit: dict) -> str:
    """One line for the terminal: the fit library's own summary (law, interval, held-out check)."""
    if isinstance(fit.get("summary"), str):
        return fit["summary"]
    return json.dumps({key: value for key, value in fit.items() if isinstance(value, (int, float, str))})[:300]


def run_analysis(analysis: dict, workdir: Path) -> bool:
    """Fit and plot the finished runs; a problem here is reported, never fatal to the runs."""
    options = dict(analysis)
    law = options.pop("law", "power")
    try:
        from bigmodel.scaling.fit import fit_input
        from bigmodel.scaling.plot import plot_all

        fit = fit_input(workdir, law, **options)
        fit_path = workdir / registry.FIT_FILE
        files.write_json_atomic(fit_path, fit)
        plots_dir = workdir / "plots"
        plot_all(workdir, plots_dir, fit=fit)
    except Exception as error:  # noqa: BLE001 — the runs are done and recorded; say what broke
        print(f"analysis failed: {type(error).__name__}: {error}", file=sys.stderr, flush=True)
        return False
    print(f"fit: {fit_path}  plots: {plots_dir}/  {describe_fit(fit)}", flush=True)
    return True


# ----------------------------------------------------------------------------- the command


def interrupt(signum, frame):
    """SIGTERM → KeyboardInterrupt: `execute` then passes it on to the runs (which checkpoint)."""
    raise KeyboardInterrupt


def lock_workdir(workdir: Path):
    """Create the sweep directory and hold its lock: a second sweep there is one error line."""
    try:
        workdir.mkdir(parents=True, exist_ok=True)
    except OSError as error:
        raise ConfigError(f"cannot create --workdir {workdir}: {error.strerror}; pick another directory") from None
    try:
        return files.exclusive_workdir(workdir, "sweep")
    except files.WorkdirBusy as error:
        raise ConfigError(str(error)) from None


def run_sweep(study: Study, runs: list[Run], workdir: Path, args) -> int:
    """Run, record and analyse the sweep (its directory locked); return the exit code."""
    registry_path = workdir / registry.REGISTRY_FILE
    print(f"sweep {args.experiment}: {len(runs)} runs in {workdir}/ (registry {registry_path})", flush=True)
    started = time.perf_counter()
    previous_handler = signal.signal(signal.SIGTERM, interrupt)  # a preempted sweep stops its runs too
    try:
        rows = execute(runs, workdir, args.jobs)
    except KeyboardInterrupt:
        print(f"interrupted: unfinished runs are marked stopped in {registry_path}; rerun the same command to resume", file=sys.stderr)
        return exit_codes.STOPPED
    finally:
        signal.signal(signal.SIGTERM, previous_handler)
        signal.signal(signal.SIGINT, signal.default_int_handler)
    counts = {status: sum(row["status"] == status for row in rows) for status in (DONE, FAILED, STOPPED)}
    print(f"sweep done in {format_duration(time.perf_counter() - started)}: {counts[DONE]} finished, {counts[FAILED]} failed"
          + (f", {counts[STOPPED]} stopped (rerun to resume)" if counts[STOPPED] else ""), flush=True)
    if study.analysis:
        run_analysis(study.analysis, workdir)
    return min(counts[FAILED], MAX_EXIT_CODE)


def sweep_command(args) -> int:
    """Entry point from `bigmodel.cli`; returns the exit code."""
    if args.jobs < 1:
        raise ConfigError(f"--jobs must be at least 1, got {args.jobs}")
    if args.json and not args.dry_run:
        raise ConfigError("--json only applies to --dry-run: add --dry-run")
    study, runs = plan_runs(args.experiment)
    workdir = Path(args.workdir)
    if args.dry_run:
        print(dry_run_json(runs, workdir) if args.json else dry_run_table(runs, workdir), flush=True)
        return 0
    lock = lock_workdir(workdir)
    try:
        return run_sweep(study, runs, workdir, args)
    finally:
        lock.close()
