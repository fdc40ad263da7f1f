"""`python -m bigmodel <command>`: train, eval, generate, serve, export, finetune, bench, plan, prepare, presets, sweep, status, fit, plot, calibrate, compare, recommend.

Every command is one row of `COMMANDS`: its --help line, its arguments, what runs it and the
runtime it needs. Argument declarations load no JAX (the modules that declare their own import
it only when they run), so `presets` and `--help` answer at once.
Any `--config.group.key=value` argument overrides the config file (big_vision style).
Exit codes are those of `bigmodel.exit_codes`: 0 done, 1 failed, 2 bad input (one `error:`
line, nothing written), 74 storage failed mid-run, 75 stopped by a signal (resumable).
"""

from __future__ import annotations

import argparse
import dataclasses
import os
import sys
from typing import Callable

from bigmodel import exit_codes
from bigmodel.arguments import (OneLineErrorParser, int_in, non_negative_int, one_of, path_text, positive_int,
                                positive_number)
from bigmodel.config import ConfigError, parse_override
from bigmodel.data import prepare_command as prepare
from bigmodel.finetune import command as finetune
from bigmodel.inference import export, generate, serve
from bigmodel.memory import TARGETS
from bigmodel.presets import FAMILIES
from bigmodel.scaling import calibrate_command, commands as scaling_commands, compare, recommend_command

OVERRIDES_HELP = ("Any config key can be overridden with --config.group.key=value "
                  "(e.g. --config.train.steps=200 --config.model.d_model=128); configs/lm.py lists the keys.")
FINETUNE_OVERRIDES_HELP = "Any key of configs/finetune.py can be overridden with --config.group.key=value."
# plan --devices: 4,096 fake CPU devices take ~15 s and 0.6 GB just to start (2 CPU cores, 2026-12-07);
# 65,536 grow memory for minutes. A TPU v4 pod is 4,096 chips: plan larger meshes on their own devices.
MAX_PLAN_DEVICES = 4096


@dataclasses.dataclass(frozen=True)
class Command:
    """One `python -m bigmodel` command."""

    help: str
    add_arguments: Callable[[argparse.ArgumentParser], None]
    run: Callable[[argparse.Namespace, dict[str, str]], int]  # (arguments, --config.* overrides) → exit code
    overrides_help: str | None = None  # takes --config.* overrides; this epilog says which keys
    accelerator: bool = False  # GPU memory share and compilation cache, set before JAX loads
    multi_host: bool = False  # --coordinator/--num_processes/--process_id, and the processes joined
    stops_early: bool = False  # a signal before the trainer's own handler still stops it cleanly


def without_overrides(command: Callable[[argparse.Namespace], int]):
    """`run` for a command that takes its arguments alone (main refuses overrides for it)."""
    return lambda args, overrides: command(args)


def add_train_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--config", type=path_text, required=True, help="path/to/config.py[:arg]")
    parser.add_argument("--workdir", type=path_text, required=True, help="run directory; an existing one is resumed")
    parser.add_argument("--stop_at_step", type=positive_int, default=None, help="checkpoint and exit after this step (resume later)")


def run_train(args: argparse.Namespace, overrides: dict[str, str]) -> int:
    from bigmodel.train import train_command

    return train_command(args.config, overrides, args.workdir, args.stop_at_step)


def add_eval_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--workdir", type=path_text, required=True, help="a train run's directory; its newest readable checkpoint is evaluated")
    parser.add_argument("--batches", type=positive_int, default=None, help="validation batches (default: the run's eval.batches)")
    parser.add_argument("--all", action="store_true", dest="every_checkpoint",
                        help="every kept checkpoint, oldest first: one JSON line each, DIR/eval_curve.json and eval_curve.png")


def run_eval(args: argparse.Namespace, overrides: dict[str, str]) -> int:
    from bigmodel.evaluate import eval_command

    return eval_command(args.workdir, args.batches, args.every_checkpoint)


def add_bench_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--config", type=path_text, required=True, help="path/to/config.py[:arg]")
    parser.add_argument("--steps", type=positive_int, default=10, help="timed steps after warm-up")
    parser.add_argument("--warmup", type=non_negative_int, default=2, help="untimed steps after compilation")
    parser.add_argument("--peak_flops", type=positive_number, default=None, help="peak FLOP/s per device (overrides the table)")
    parser.add_argument("--profile", type=path_text, default=None, metavar="DIR",
                        help="record the timed steps with jax.profiler into DIR (open with xprof or TensorBoard)")


def run_bench(args: argparse.Namespace, overrides: dict[str, str]) -> int:
    from bigmodel.bench import bench_command

    return bench_command(args.config, overrides, args.steps, args.warmup, args.peak_flops, args.profile)


def add_plan_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--config", type=path_text, required=True, help="path/to/config.py[:arg]")
    parser.add_argument("--devices", type=int_in(1, MAX_PLAN_DEVICES, "a TPU v4 pod; each fake CPU device costs memory and compile time"),
                        default=None, help="plan for N fake CPU devices instead of the devices present")
    parser.add_argument("--target", type=one_of(TARGETS), default=None, help="device to check the fit against: " + ", ".join(TARGETS) + "; also searches the largest batch that fits")
    parser.add_argument("--json", action="store_true", help="print one JSON object")


def run_plan(args: argparse.Namespace, overrides: dict[str, str]) -> int:
    if args.devices:  # a mesh the fake devices cannot hold is refused before JAX makes them
        from bigmodel.config import load_config, validate

        validate(load_config(args.config, overrides), args.devices, platform="cpu", device_kind="cpu")
    from bigmodel.plan import plan_command

    return plan_command(args.config, overrides, args.target, args.json)


def add_presets_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--vocab_size", type=positive_int, default=256)
    parser.add_argument("--seq_len", type=positive_int, default=256)
    parser.add_argument("--family", choices=FAMILIES, default="lm",
                        help="lm: the GPT-style block of configs/lm.py; llama: SwiGLU and grouped-query attention (configs/llama.py)")


def run_presets(args: argparse.Namespace, overrides: dict[str, str]) -> int:
    from bigmodel.presets import presets_table

    print("\n".join(presets_table(args.vocab_size, args.seq_len, args.family)))
    return exit_codes.OK


def add_sweep_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("experiment", type=path_text, help="path/to/experiment.py, or path/to/experiment.py:ARG for get_study(ARG)")
    parser.add_argument("--workdir", type=path_text, required=True)
    parser.add_argument("--dry-run", action="store_true", help="print the runs and write nothing")
    parser.add_argument("--json", action="store_true", help="with --dry-run: one JSON object per run")
    parser.add_argument("--ladder", default=None, metavar="C1,C2",
                        help="compute budgets (FLOPs) above the grid: after the fit, train its recommended run at each and "
                             "score the forecast (replaces the study's ladder)")
    parser.add_argument("--jobs", type=positive_int, default=None,
                        help="runs at once: local processes (default 1), or Slurm/Ray jobs queued (default all)")
    parser.add_argument("--backend", choices=("local", "slurm", "ray"), default="local",
                        help="where runs execute: subprocesses here, one Slurm job each (pip install -e '.[slurm]'), "
                             "or one Ray job each (pip install -e '.[ray]')")
    parser.add_argument("--retries", type=int, default=None, metavar="N",
                        help="relaunch a failed run up to N times, resuming from its checkpoint (default: 0 local, 1 slurm and ray)")
    cluster = parser.add_argument_group("resources of every run (override the study's resources; per host)")
    cluster.add_argument("--gpus", type=int, default=None, help="GPUs per host (local: each run gets its own)")
    cluster.add_argument("--hosts", type=int, default=None, help="hosts (Slurm nodes) per run, one process each")
    cluster.add_argument("--cpus", type=int, default=None, help="CPUs per host (Slurm --cpus-per-task)")
    cluster.add_argument("--memory-gb", type=float, default=None, help="memory per host (Slurm --mem)")
    cluster.add_argument("--time-limit", type=float, default=None, metavar="MIN", help="minutes per launch (Slurm --time)")
    slurm = parser.add_argument_group("Slurm (--backend slurm)")
    slurm.add_argument("--partition", default=None)
    slurm.add_argument("--account", default=None)
    slurm.add_argument("--slurm-option", action="append", default=[], metavar="KEY[=VALUE]",
                       help="any other sbatch option, repeatable: --slurm-option qos=high --slurm-option exclusive")
    ray = parser.add_argument_group("Ray (--backend ray)")
    ray.add_argument("--ray-address", default=None, metavar="ADDRESS",
                     help="the cluster: auto (default: RAY_ADDRESS, else the one started on this machine), "
                          "ray://HEAD:10001 or http://HEAD:8265 (its dashboard)")


def run_sweep(args: argparse.Namespace, overrides: dict[str, str]) -> int:
    from bigmodel.scaling.runner import sweep_command

    return sweep_command(args)


def add_status_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("workdir", type=path_text, help="the sweep's --workdir")
    parser.add_argument("--watch", type=float, default=None, metavar="S", help="refresh every S seconds until Ctrl-C")
    parser.add_argument("--json", action="store_true", help="one JSON object per run")


def run_status(args: argparse.Namespace, overrides: dict[str, str]) -> int:
    from bigmodel.scaling.status import status_command

    return status_command(args.workdir, args.watch, args.json)


def add_process_arguments(parser: argparse.ArgumentParser) -> None:
    """Multi-host: every process runs the same command. Under Slurm (srun), Open MPI (mpirun) or on
    a multi-host TPU VM the processes find each other; elsewhere name process 0 and each one's id."""
    parser.add_argument("--coordinator", default=None, help="host:port of process 0 (jax.distributed); auto-detected under Slurm, Open MPI, TPU VMs")
    parser.add_argument("--num_processes", type=positive_int, default=None)
    parser.add_argument("--process_id", type=non_negative_int, default=None)


# The order of --help.
COMMANDS = {
    "train": Command("train (or resume) a model in --workdir", add_train_arguments, run_train,
                     overrides_help=OVERRIDES_HELP, accelerator=True, multi_host=True, stops_early=True),
    "eval": Command("evaluate the latest checkpoint of a run (--all: every kept one)", add_eval_arguments, run_eval,
                    accelerator=True, multi_host=True),
    "bench": Command("time training steps; print one JSON line", add_bench_arguments, run_bench,
                     overrides_help=OVERRIDES_HELP, accelerator=True, multi_host=True),
    "plan": Command("compile the train step on abstract state: per-device memory, FLOPs, what fits", add_plan_arguments, run_plan,
                    overrides_help=OVERRIDES_HELP, accelerator=True),
    "generate": Command(generate.GENERATE_HELP, generate.add_generate_arguments, without_overrides(generate.generate_command),
                        accelerator=True),
    "serve": Command(serve.SERVE_HELP, serve.add_serve_arguments, without_overrides(serve.serve_command), accelerator=True),
    "export": Command(export.EXPORT_HELP, export.add_export_arguments, without_overrides(export.export_command), accelerator=True),
    "prepare": Command(prepare.PREPARE_HELP, prepare.add_prepare_arguments, without_overrides(prepare.prepare_command)),
    "presets": Command("list model size presets with params and FLOPs/token", add_presets_arguments, run_presets),
    "sweep": Command("run a scaling study: experiments/<name>.py", add_sweep_arguments, run_sweep),
    "status": Command("where each run of a sweep stands: step, loss, tokens/s, ETA", add_status_arguments, run_status),
    "fit": Command(scaling_commands.FIT_HELP, scaling_commands.add_fit_arguments, without_overrides(scaling_commands.fit_command)),
    "plot": Command(scaling_commands.PLOT_HELP, scaling_commands.add_plot_arguments, without_overrides(scaling_commands.plot_command)),
    "calibrate": Command(calibrate_command.CALIBRATE_HELP, calibrate_command.add_calibrate_arguments,
                         without_overrides(calibrate_command.calibrate_command)),
    "compare": Command(compare.COMPARE_HELP, compare.add_compare_arguments, without_overrides(compare.compare_command)),
    "recommend": Command(recommend_command.RECOMMEND_HELP, recommend_command.add_recommend_arguments,
                         without_overrides(recommend_command.recommend_command)),
    "finetune": Command(finetune.FINETUNE_HELP, finetune.add_finetune_arguments, finetune.finetune_command,
                        overrides_help=FINETUNE_OVERRIDES_HELP, accelerator=True, stops_early=True),
}


def build_parser() -> argparse.ArgumentParser:
    parser = OneLineErrorParser(prog="bigmodel", description=__doc__.splitlines()[0])
    subparsers = parser.add_subparsers(dest="command", required=True, parser_class=OneLineErrorParser)
    for name, command in COMMANDS.items():
        subparser = subparsers.add_parser(name, help=command.help, epilog=command.overrides_help)
        command.add_arguments(subparser)
        if command.multi_host:
            add_process_arguments(subparser)
    return parser


def _split_overrides(argv: list[str]) -> tuple[list[str], dict[str, str]]:
    """Separate `--config.a.b=v` / `--config.a.b v` overrides from ordinary arguments."""
    rest, overrides = [], {}
    index = 0
    while index < len(argv):
        arg = argv[index]
        if arg.startswith("--config.") and "=" not in arg and index + 1 < len(argv):
            arg = f"{arg}={argv[index + 1]}"
            index += 1
        if arg.startswith("--config."):
            key, value = parse_override(arg)
            overrides[key] = value
        else:
            rest.append(arg)
        index += 1
    return rest, overrides


def prepare_runtime(command: Command, args: argparse.Namespace) -> None:
    """What a command on an accelerator needs before JAX loads, in this order."""
    if not command.accelerator:
        return
    from bigmodel import runtime

    if command.stops_early:
        runtime.note_early_stop_requests()  # until the trainer installs its own handler (train.StopRequest)
    runtime.set_gpu_memory_fraction()
    if getattr(args, "devices", None):  # plan --devices N
        runtime.use_fake_cpu_devices(args.devices)
    if command.multi_host:
        runtime.join_processes(args.coordinator, args.num_processes, args.process_id)
    runtime.enable_compilation_cache()


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    try:
        rest, overrides = _split_overrides(argv)
        args = build_parser().parse_args(rest)
        command = COMMANDS[args.command]
        if overrides and command.overrides_help is None:
            takers = ", ".join(name for name, each in COMMANDS.items() if each.overrides_help)
            raise ConfigError(f"--config.* overrides apply to {takers} only, not {args.command}: drop them")
        prepare_runtime(command, args)
        return command.run(args, overrides)
    except ConfigError as error:
        print(f"error: {error}", file=sys.stderr)
        return exit_codes.BAD_INPUT
    except exit_codes.Failed as error:
        print(f"error: {error}", file=sys.stderr)
        return exit_codes.FAILED
    except exit_codes.StorageFailed as error:
        print(f"error: {error}", file=sys.stderr)
        return exit_codes.STORAGE_ERROR
    except BrokenPipeError:  # `bigmodel presets | head`: the reader left; that is not an error
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())  # so the exit flush is silent too
        return exit_codes.OK
