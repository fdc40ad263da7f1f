"""`python -m bigmodel sweep EXPERIMENT --workdir DIR`: run a study's trainings, keep a registry.

Each run is `python -m bigmodel train --config <spec> --workdir DIR/<name> ...`, launched by
`execution.execute` on a backend (`bigmodel.scaling.backends`: a subprocess here, `--jobs` at a time, or one Slurm
or Ray job each); its output goes to DIR/<name>/train.log, its exact command to DIR/<name>/command.sh, so
a crash or a leak in one run cannot touch the others, and any run can be repeated by hand.

- Idempotent: a run whose summary.json exists is skipped; an unfinished one is started again
  on its existing directory, which the trainer resumes from its last checkpoint. The runner
  writes only train.log and command.sh there: the trainer checks the run and writes config.json.
- Failure isolation: a failed run is relaunched up to `--retries` times (each launch resumes
  from the run's checkpoint), then recorded (status `failed`, the last line of its log) and
  the sweep goes on; the exit code is the number of failed runs (at most 125). A trainer that
  exits with `exit_codes.STOPPED` (a signal, after checkpointing) is `stopped`, not failed nor
  retried: the next sweep resumes it.
- Re-attach: Slurm and Ray jobs outlive the driver. A restarted sweep watches the runs whose jobs are
  still pending or running (never submitting them twice), and launches the rest.
- Registry: DIR/runs.csv (`bigmodel.scaling.registry`), one row per run with its launch (backend,
  job id, host, attempts, times), rewritten atomically by the driver alone whenever a run
  starts or ends.
- One sweep per directory: the sweep holds DIR/.lock (`files.exclusive_workdir`) while it
  runs; a second sweep on DIR is refused with one line.
- Analysis: if the study declares one, fit the law (`bigmodel.scaling.fit`) into DIR/fit.json
  and draw DIR/plots/ (`bigmodel.scaling.plot`) once the runs are done.
"""

from __future__ import annotations

import dataclasses
import importlib.util
import json
import signal
import sys
import time
import warnings
from collections.abc import Mapping
from pathlib import Path

from bigmodel import exit_codes, files
from bigmodel.config import ConfigError, load_config
from bigmodel.scaling import registry
from bigmodel.scaling.backends import ClusterLost
from bigmodel.scaling.execution import CPU_FLOPS_PER_S, RUN_OVERHEAD_S, estimated_seconds, execute, format_duration
from bigmodel.scaling.expand import expand, format_number, validate_runs
from bigmodel.scaling.ladder import check_ladder, describe_ladder, dry_run_lines, parse_ladder, plan_rungs, planned_rungs, score_rungs
from bigmodel.scaling.registry import DONE, FAILED, STOPPED
from bigmodel.scaling.resources import checked_value, with_overrides
from bigmodel.scaling.study import Run, Study

MAX_EXIT_CODE = 125  # 126+ mean "not executable", "not found" and signals to a shell


# ----------------------------------------------------------------------------- the experiment file


def experiment_and_argument(spec: str | Path) -> tuple[Path, str | None]:
    """"experiments/branches.py:cosine" → (the file, "cosine"), as config specs name a preset;
    a spec without ":" (or whose whole text is a file) has no argument."""
    text = str(spec)
    path, colon, argument = text.rpartition(":")
    if not colon or Path(text).is_file() or not path.endswith(".py"):
        return Path(text), None
    return Path(path), argument


def load_study(spec: str | Path) -> Study:
    """Import the experiment file and call its `get_study()` (`get_study(argument)` for
    FILE:ARGUMENT); every problem is one ConfigError line."""
    path, argument = experiment_and_argument(spec)
    if not path.is_file():
        raise ConfigError(f"experiment file {str(path)!r} not found: pass a path such as experiments/demo.py")
    module_spec = importlib.util.spec_from_file_location(f"_bigmodel_experiment_{path.stem}", path)
    module = importlib.util.module_from_spec(module_spec)
    write_bytecode, sys.dont_write_bytecode = sys.dont_write_bytecode, True  # leave no __pycache__ behind
    try:
        module_spec.loader.exec_module(module)
    except SystemExit as exit_info:  # a study is data: exiting, whatever the code, is not a way to give one
        raise ConfigError(f"experiment file {str(path)!r} called sys.exit({exit_info.code!r}) while loading: "
                          "define get_study() and return a Study") from None
    except Exception as error:  # noqa: BLE001 — any import-time error is the file's problem
        raise ConfigError(f"experiment file {str(path)!r} failed to load: {type(error).__name__}: {error}") from None
    finally:
        sys.dont_write_bytecode = write_bytecode
    if not callable(getattr(module, "get_study", None)):
        raise ConfigError(f"experiment file {str(path)!r} defines no get_study(): return a bigmodel.scaling.sweep.Study")
    try:
        study = module.get_study() if argument is None else module.get_study(argument)
    except ConfigError:
        raise
    except SystemExit as exit_info:
        raise ConfigError(f"{path}: get_study() called sys.exit({exit_info.code!r}): return a Study, or raise to report a problem") from None
    except Exception as error:  # noqa: BLE001 — the experiment's code, reported as one line
        raise ConfigError(f"{path}: get_study() failed: {type(error).__name__}: {error}") from None
    if not isinstance(study, Study):
        raise ConfigError(f"{path}: get_study() returned {type(study).__name__}, expected bigmodel.scaling.sweep.Study")
    return study


def plan_runs(experiment: str | Path, ladder: list[float] | None = None) -> tuple[Study, list[Run]]:
    """Load, expand and validate every run, before anything is written; `ladder` (`--ladder`)
    replaces the study's rungs, which must lie above its grid (`ladder.check_ladder`)."""
    study = load_study(experiment)
    if ladder is not None:
        study = dataclasses.replace(study, ladder=ladder)
    try:
        runs = expand(study)
    except ConfigError:
        raise
    except Exception as error:  # noqa: BLE001 — e.g. a typo in the experiment's rules
        raise ConfigError(f"{experiment}: the study does not expand: {type(error).__name__}: {error}") from None
    validate_runs(runs, n_devices=1)
    check_analysis(study.analysis)
    check_ladder(study, runs)
    return study, runs


# ----------------------------------------------------------------------------- dry run


def dry_run_table(runs: list[Run], workdir: Path, rungs: list[dict] = ()) -> str:
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
    lines += dry_run_lines(list(rungs), workdir)
    total = sum(estimated_seconds(run) for run in runs) + sum(entry["estimated_time_s"] for entry in rungs)
    with_rungs = " (the ladder's rungs included)" if rungs else ""
    lines.append(f"# total ≈ {format_duration(total)}{with_rungs} with --jobs 1 (parallel jobs share the same cores)")
    lines.append(f"# each run, e.g.: {runs[0].command_line(workdir / runs[0].name)}")
    return "\n".join(lines)


def dry_run_json(runs: list[Run], workdir: Path, rungs: list[dict] = ()) -> str:
    """One JSON object per run, then one per ladder rung (with a "rung" key: `ladder.planned_rungs`)."""
    rows = []
    for run in runs:
        row = run.summary()
        row["estimated_time_s"] = round(estimated_seconds(run), 1)
        row["command"] = run.command_line(workdir / run.name)
        rows.append(json.dumps(row))
    rows += [json.dumps({**entry, "estimated_time_s": round(entry["estimated_time_s"], 1)}) for entry in rungs]
    return "\n".join(rows)


# ----------------------------------------------------------------------------- analysis


def describe_fit(fit: dict) -> str:
    """One line for the terminal: the fit library's own summary (law, interval, held-out check)."""
    if isinstance(fit.get("summary"), str):
        return fit["summary"]
    return json.dumps({key: value for key, value in fit.items() if isinstance(value, (int, float, str))})[:300]


def wandb_project(runs: list[Run]) -> str:
    """The W&B project the study's runs log to (`logging.wandb`; "" when off)."""
    from bigmodel.wandb_log import project_of

    return project_of(load_config(runs[0].config_spec, runs[0].overrides)) if runs else ""


def analysis_fit(analysis) -> tuple[str, dict]:
    """A study's `analysis` as (law, the other options of `fit_input`); the law defaults to power."""
    if not isinstance(analysis, Mapping):
        raise ConfigError(f"the study's analysis must be a dict such as {{'law': 'power', 'bootstrap': 200}}, got {type(analysis).__name__}")
    options = dict(analysis)
    return options.pop("law", "power"), options


def check_analysis(analysis) -> None:
    """Refuse at dry-run an analysis the fit would refuse after every run has trained."""
    if analysis is None:
        return
    law, options = analysis_fit(analysis)
    from bigmodel.scaling.fit import check_fit_request

    try:
        check_fit_request(law, options)
    except (ValueError, TypeError) as error:
        raise ConfigError(f"the study's analysis {dict(analysis)!r}: {error}") from None


def run_analysis(analysis: dict, workdir: Path, wandb_project: str = "") -> bool:
    """Fit and plot the finished runs (and log both to W&B when the runs' configs name a project);
    a problem here is reported, never fatal to the runs."""
    law, options = analysis_fit(analysis)
    try:
        from bigmodel.scaling.fit import fit_input
        from bigmodel.scaling.plot import plot_all

        fit = fit_input(workdir, law, **options)
        fit_path = workdir / registry.FIT_FILE
        files.write_json_atomic(fit_path, fit)
        plots_dir = workdir / "plots"
        plot_all(workdir, plots_dir, fit=fit)
        if wandb_project:
            from bigmodel.wandb_log import log_analysis

            log_analysis(wandb_project, workdir, fit_path, plots_dir)
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


def execute_or_stop(runs: list[Run], workdir: Path, backend, retries: int) -> list[dict] | int:
    """The runs' final registry rows, or the exit code of a sweep stopped on the way."""
    registry_path = workdir / registry.REGISTRY_FILE
    previous_handler = signal.signal(signal.SIGTERM, interrupt)  # a preempted sweep stops its runs too
    try:
        return execute(runs, workdir, backend, retries)
    except ClusterLost as error:
        print(f"error: {error}", file=sys.stderr, flush=True)
        return exit_codes.STOPPED
    except KeyboardInterrupt:
        if not backend.outlives_driver:
            print(f"interrupted: unfinished runs are marked stopped in {registry_path}; rerun the same command to resume", file=sys.stderr)
        return exit_codes.STOPPED
    finally:
        signal.signal(signal.SIGTERM, previous_handler)
        signal.signal(signal.SIGINT, signal.default_int_handler)


def report_counts(rows: list[dict], started: float, what: str = "sweep") -> int:
    """Print how the runs ended; return the number that failed."""
    counts = {status: sum(row["status"] == status for row in rows) for status in (DONE, FAILED, STOPPED)}
    print(f"{what} done in {format_duration(time.perf_counter() - started)}: {counts[DONE]} finished, {counts[FAILED]} failed"
          + (f", {counts[STOPPED]} stopped (rerun to resume)" if counts[STOPPED] else ""), flush=True)
    return counts[FAILED]


def climb_ladder(study: Study, runs: list[Run], workdir: Path, backend, retries: int) -> int:
    """Train the fit's recommended run at each rung, then score each forecast into fit.json."""
    fit = registry.read_sweep_fit(workdir)
    planned = plan_rungs(study, fit, str(workdir / registry.FIT_FILE))
    rung_runs = [run for _, rung in planned for run in rung]
    print(f"ladder: {len(planned)} rungs, {len(rung_runs)} runs", flush=True)
    started = time.perf_counter()
    with warnings.catch_warnings():  # the fit loaded JAX here; a launch forks only to exec the trainer, which JAX's warning cannot see
        warnings.filterwarnings("ignore", message=r"os\.fork\(\) was called", category=RuntimeWarning)
        rows = execute_or_stop(runs + rung_runs, workdir, backend, retries)  # the grid's rows stay in the registry (done: skipped)
    if isinstance(rows, int):
        return rows
    failed = report_counts(rows[len(runs):], started, "ladder")
    try:
        fit["ladder"] = score_rungs(workdir, fit, [recommendation for recommendation, _ in planned], dict(study.analysis))
    except ValueError as error:
        print(f"ladder scoring failed: {error}", file=sys.stderr, flush=True)
        return min(failed + 1, MAX_EXIT_CODE)
    fit["summary"] = f"{fit['summary']}; {describe_ladder(fit['ladder'])}"
    files.write_json_atomic(workdir / registry.FIT_FILE, fit)
    print(f"fit: {workdir / registry.FIT_FILE}  {describe_ladder(fit['ladder'])}", flush=True)
    return failed


def run_sweep(study: Study, runs: list[Run], workdir: Path, backend, retries: int = 0, experiment: str = "") -> int:
    """Run, record and analyse the sweep (its directory locked), then climb its ladder; return the exit code."""
    registry_path = workdir / registry.REGISTRY_FILE
    print(f"sweep {experiment}: {len(runs)} runs in {workdir}/ on {backend.name} (registry {registry_path})", flush=True)
    started = time.perf_counter()
    rows = execute_or_stop(runs, workdir, backend, retries)
    if isinstance(rows, int):
        return rows
    failed = report_counts(rows, started)
    analysed = run_analysis(study.analysis, workdir, wandb_project(runs)) if study.analysis else False
    if analysed and study.ladder:
        failed += climb_ladder(study, runs, workdir, backend, retries)
    return min(failed, MAX_EXIT_CODE)


# Failures on one machine are mostly the run's own (a non-finite loss): retrying costs time for
# nothing. On a cluster a node can fail or kill a job under a run that is fine: one more launch.
DEFAULT_RETRIES = {"local": 0, "slurm": 1, "ray": 1}
RESOURCE_FLAGS = {"cpus": "--cpus", "gpus": "--gpus", "hosts": "--hosts", "memory_gb": "--memory-gb", "time_limit_min": "--time-limit"}
SLURM_FLAGS = {"partition": "--partition", "account": "--account", "slurm_option": "--slurm-option"}
RAY_FLAGS = {"ray_address": "--ray-address"}


def resource_overrides(args) -> dict:
    """The resources given on the command line (None: not given), each checked."""
    overrides = {key: getattr(args, flag.removeprefix("--").replace("-", "_")) for key, flag in RESOURCE_FLAGS.items()}
    for key, value in overrides.items():
        if value is not None:
            checked_value(key, value, f"{RESOURCE_FLAGS[key]} {value}")
    return overrides


def check_backend_flags(args) -> None:
    """Flags that make no sense together are one error line, before anything is written."""
    if args.retries is not None and args.retries < 0:
        raise ConfigError(f"--retries must be 0 or more, got {args.retries}")
    for backend, flags in (("slurm", SLURM_FLAGS), ("ray", RAY_FLAGS)):
        for attribute, flag in flags.items():
            if args.backend != backend and getattr(args, attribute):
                raise ConfigError(f"{flag} applies to --backend {backend} only: add --backend {backend} or drop it")
    if args.backend == "slurm":
        from bigmodel.scaling.backends.slurm import parse_slurm_options

        parse_slurm_options(args.slurm_option)


def make_backend(args, runs: list[Run]):
    """The chosen backend, having refused the runs it can never hold."""
    if args.backend == "slurm":
        from bigmodel.scaling.backends.slurm import SlurmBackend, parse_slurm_options  # imports submitit, or says how to install it

        backend = SlurmBackend(args.partition, args.account, parse_slurm_options(args.slurm_option), max_in_flight=args.jobs)
    elif args.backend == "ray":
        from bigmodel.scaling.backends.ray import RayBackend  # imports ray, or says how to install it

        backend = RayBackend(args.ray_address or "auto", max_in_flight=args.jobs)
    else:
        from bigmodel.scaling.backends.local import LocalBackend

        backend = LocalBackend(args.jobs or 1)
    backend.check(runs)
    return backend


def sweep_command(args) -> int:
    """Entry point from `bigmodel.cli`; returns the exit code."""
    if args.json and not args.dry_run:
        raise ConfigError("--json only applies to --dry-run: add --dry-run")
    check_backend_flags(args)
    overrides = resource_overrides(args)
    study, runs = plan_runs(args.experiment, parse_ladder(args.ladder) if args.ladder is not None else None)
    runs = [dataclasses.replace(run, resources=with_overrides(run.resources, overrides)) for run in runs]
    workdir = Path(args.workdir)
    if args.dry_run:
        rungs = planned_rungs(study, runs, workdir)
        print(dry_run_json(runs, workdir, rungs) if args.json else dry_run_table(runs, workdir, rungs), flush=True)
        return 0
    backend = make_backend(args, runs)
    retries = DEFAULT_RETRIES[backend.name] if args.retries is None else args.retries
    lock = lock_workdir(workdir)
    try:
        return run_sweep(study, runs, workdir, backend, retries, args.experiment)
    finally:
        lock.close()
