"""`python -m bigmodel <command>`: train, eval, generate, serve, export, finetune, bench, plan, presets, sweep, status, fit, plot, calibrate, compare.

Commands import their modules lazily so `presets` and `--help` answer without loading JAX.
Any `--config.group.key=value` argument overrides the config file (big_vision style).
Exit codes are those of `bigmodel.exit_codes`: 0 done, 1 failed, 2 bad input (one `error:`
line, nothing written), 74 storage failed mid-run, 75 stopped by a signal (resumable).
"""

from __future__ import annotations

import argparse
import os
import sys

from bigmodel import exit_codes
from bigmodel.config import ConfigError, parse_override

OVERRIDES_HELP = ("Any config key can be overridden with --config.group.key=value "
                  "(e.g. --config.train.steps=200 --config.model.d_model=128); configs/lm.py lists the keys.")
COMMANDS_WITH_OVERRIDES = ("train", "bench", "plan", "finetune")

PLAN_TARGETS = ("h100-80gb", "h200-141gb", "a100-40gb", "a100-80gb", "tpu-v4", "tpu-v5e", "tpu-v5p")  # bigmodel.plan.TARGETS


def positive_int(text: str) -> int:
    """argparse type: an integer ≥ 1 (a step, a count of batches, of jobs)."""
    try:
        value = int(text)
    except ValueError:
        value = 0
    if value < 1:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {text!r}")
    return value


class OneLineErrorParser(argparse.ArgumentParser):
    """argparse with the project's error shape: one `error:` line naming the fix, exit 2."""

    def error(self, message: str):
        self.exit(exit_codes.BAD_INPUT, f"error: {message}: see `{self.prog} --help`\n")


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


def _print_presets(args) -> int:
    from bigmodel.presets import presets_table

    print("\n".join(presets_table(args.vocab_size, args.seq_len)))
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = OneLineErrorParser(prog="bigmodel", description=__doc__.splitlines()[0])
    commands = parser.add_subparsers(dest="command", required=True, parser_class=OneLineErrorParser)

    train = commands.add_parser("train", help="train (or resume) a model in --workdir", epilog=OVERRIDES_HELP)
    train.add_argument("--config", required=True, help="path/to/config.py[:arg]")
    train.add_argument("--workdir", required=True, help="run directory; an existing one is resumed")
    train.add_argument("--stop_at_step", type=positive_int, default=None, help="checkpoint and exit after this step (resume later)")

    evaluate = commands.add_parser("eval", help="evaluate the latest checkpoint of a run (--all: every kept one)")
    evaluate.add_argument("--workdir", required=True, help="a train run's directory; its newest readable checkpoint is evaluated")
    evaluate.add_argument("--batches", type=positive_int, default=None, help="validation batches (default: the run's eval.batches)")
    evaluate.add_argument("--all", action="store_true", dest="every_checkpoint",
                          help="every kept checkpoint, oldest first: one JSON line each, DIR/eval_curve.json and eval_curve.png")

    bench = commands.add_parser("bench", help="time training steps; print one JSON line", epilog=OVERRIDES_HELP)
    bench.add_argument("--config", required=True, help="path/to/config.py[:arg]")
    bench.add_argument("--steps", type=positive_int, default=10, help="timed steps after warm-up")
    bench.add_argument("--warmup", type=int, default=2, help="untimed steps after compilation")
    bench.add_argument("--peak_flops", type=float, default=None, help="peak FLOP/s per device (overrides the table)")
    bench.add_argument("--profile", default=None, metavar="DIR",
                       help="record the timed steps with jax.profiler into DIR (open with xprof or TensorBoard)")

    plan = commands.add_parser("plan", help="compile the train step on abstract state: per-device memory, FLOPs, what fits",
                               epilog=OVERRIDES_HELP)
    plan.add_argument("--config", required=True, help="path/to/config.py[:arg]")
    plan.add_argument("--devices", type=positive_int, default=None, help="plan for N fake CPU devices instead of the devices present")
    plan.add_argument("--target", default=None, help="device to check the fit against: " + ", ".join(PLAN_TARGETS) + "; also searches the largest batch that fits")
    plan.add_argument("--json", action="store_true", help="print one JSON object")

    from bigmodel import generate  # argparse only: JAX loads when the command runs

    generate.add_generate_arguments(commands.add_parser("generate", help=generate.GENERATE_HELP))
    from bigmodel import export, serve  # argparse only: JAX, FastAPI and safetensors load when the command runs

    serve.add_serve_arguments(commands.add_parser("serve", help=serve.SERVE_HELP))
    export.add_export_arguments(commands.add_parser("export", help=export.EXPORT_HELP))

    presets = commands.add_parser("presets", help="list model size presets with params and FLOPs/token")
    presets.add_argument("--vocab_size", type=int, default=256)
    presets.add_argument("--seq_len", type=int, default=256)

    # Multi-host: every process runs the same command. Under Slurm (srun), Open MPI (mpirun) or on a
    # multi-host TPU VM the processes find each other; elsewhere name process 0 and each one's id.
    for command in (train, evaluate, bench):
        command.add_argument("--coordinator", default=None, help="host:port of process 0 (jax.distributed); auto-detected under Slurm, Open MPI, TPU VMs")
        command.add_argument("--num_processes", type=positive_int, default=None)
        command.add_argument("--process_id", type=int, default=None)

    sweep = commands.add_parser("sweep", help="run a scaling study: experiments/<name>.py")
    sweep.add_argument("experiment", help="path/to/experiment.py, or path/to/experiment.py:ARG for get_study(ARG)")
    sweep.add_argument("--workdir", required=True)
    sweep.add_argument("--dry-run", action="store_true", help="print the runs and write nothing")
    sweep.add_argument("--json", action="store_true", help="with --dry-run: one JSON object per run")
    sweep.add_argument("--jobs", type=positive_int, default=None,
                       help="runs at once: local processes (default 1), or Slurm/Ray jobs queued (default all)")
    sweep.add_argument("--backend", choices=("local", "slurm", "ray"), default="local",
                       help="where runs execute: subprocesses here, one Slurm job each (pip install -e '.[slurm]'), "
                            "or one Ray job each (pip install -e '.[ray]')")
    sweep.add_argument("--retries", type=int, default=None, metavar="N",
                       help="relaunch a failed run up to N times, resuming from its checkpoint (default: 0 local, 1 slurm and ray)")
    cluster = sweep.add_argument_group("resources of every run (override the study's resources; per host)")
    cluster.add_argument("--gpus", type=int, default=None, help="GPUs per host (local: each run gets its own)")
    cluster.add_argument("--hosts", type=int, default=None, help="hosts (Slurm nodes) per run, one process each")
    cluster.add_argument("--cpus", type=int, default=None, help="CPUs per host (Slurm --cpus-per-task)")
    cluster.add_argument("--memory-gb", type=float, default=None, help="memory per host (Slurm --mem)")
    cluster.add_argument("--time-limit", type=float, default=None, metavar="MIN", help="minutes per launch (Slurm --time)")
    slurm = sweep.add_argument_group("Slurm (--backend slurm)")
    slurm.add_argument("--partition", default=None)
    slurm.add_argument("--account", default=None)
    slurm.add_argument("--slurm-option", action="append", default=[], metavar="KEY[=VALUE]",
                       help="any other sbatch option, repeatable: --slurm-option qos=high --slurm-option exclusive")
    ray = sweep.add_argument_group("Ray (--backend ray)")
    ray.add_argument("--ray-address", default=None, metavar="ADDRESS",
                     help="the cluster: auto (default: RAY_ADDRESS, else the one started on this machine), "
                          "ray://HEAD:10001 or http://HEAD:8265 (its dashboard)")

    status = commands.add_parser("status", help="where each run of a sweep stands: step, loss, tokens/s, ETA")
    status.add_argument("workdir", help="the sweep's --workdir")
    status.add_argument("--watch", type=float, default=None, metavar="S", help="refresh every S seconds until Ctrl-C")
    status.add_argument("--json", action="store_true", help="one JSON object per run")

    from bigmodel.scaling import commands as scaling_commands  # argparse only: fitting and plotting load later

    scaling_commands.add_fit_arguments(commands.add_parser("fit", help=scaling_commands.FIT_HELP))
    scaling_commands.add_plot_arguments(commands.add_parser("plot", help=scaling_commands.PLOT_HELP))
    from bigmodel.scaling import calibrate_command  # argparse only: the simulation loads later

    calibrate_command.add_calibrate_arguments(commands.add_parser("calibrate", help=calibrate_command.CALIBRATE_HELP))
    from bigmodel.scaling import compare  # argparse only: statistics and checkpoints load later

    compare.add_compare_arguments(commands.add_parser("compare", help=compare.COMPARE_HELP))
    from bigmodel.finetune import command as finetune  # argparse only: JAX loads when the command runs

    finetune.add_finetune_arguments(commands.add_parser("finetune", help=finetune.FINETUNE_HELP,
                                                        epilog="Any key of configs/finetune.py can be overridden with --config.group.key=value."))
    return parser


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    try:
        rest, overrides = _split_overrides(argv)
        args = build_parser().parse_args(rest)
        if overrides and args.command not in COMMANDS_WITH_OVERRIDES:
            raise ConfigError(f"--config.* overrides apply to {', '.join(COMMANDS_WITH_OVERRIDES)} only, not {args.command}: drop them")
        if args.command == "presets":
            return _print_presets(args)
        if args.command == "train":
            from bigmodel import runtime

            runtime.note_early_stop_requests()  # until the trainer installs its own handler (train.StopRequest)
        if args.command in ("train", "eval", "bench", "plan"):
            from bigmodel import runtime

            runtime.set_gpu_memory_fraction()
            if args.command == "plan" and args.devices:  # fake CPU devices: set before jax is imported
                os.environ["JAX_PLATFORMS"] = "cpu"
                os.environ["XLA_FLAGS"] = f"{os.environ.get('XLA_FLAGS', '')} --xla_force_host_platform_device_count={args.devices}".strip()
            if args.command != "plan":
                runtime.join_processes(args.coordinator, args.num_processes, args.process_id)
            runtime.enable_compilation_cache()
        if args.command == "train":
            from bigmodel.train import train_command

            return train_command(args.config, overrides, args.workdir, args.stop_at_step)
        if args.command == "eval":
            from bigmodel.evaluate import eval_command

            return eval_command(args.workdir, args.batches, args.every_checkpoint)
        if args.command == "plan":
            from bigmodel.plan import plan_command

            return plan_command(args.config, overrides, args.target, args.json)
        if args.command == "bench":
            from bigmodel.bench import bench_command

            return bench_command(args.config, overrides, args.steps, args.warmup, args.peak_flops, args.profile)
        if args.command == "generate":
            from bigmodel import runtime
            from bigmodel.generate import generate_command

            runtime.set_gpu_memory_fraction()
            runtime.enable_compilation_cache()
            return generate_command(args)
        if args.command in ("serve", "export"):
            from bigmodel import runtime

            runtime.set_gpu_memory_fraction()
            runtime.enable_compilation_cache()
            if args.command == "serve":
                from bigmodel.serve import serve_command

                return serve_command(args)
            from bigmodel.export import export_command

            return export_command(args)
        if args.command == "sweep":
            from bigmodel.scaling.runner import sweep_command

            return sweep_command(args)
        if args.command == "status":
            from bigmodel.scaling.status import status_command

            return status_command(args.workdir, args.watch, args.json)
        if args.command == "fit":
            from bigmodel.scaling.commands import fit_command

            return fit_command(args)
        if args.command == "plot":
            from bigmodel.scaling.commands import plot_command

            return plot_command(args)
        if args.command == "calibrate":
            from bigmodel.scaling.calibrate_command import calibrate_command

            return calibrate_command(args)
        if args.command == "finetune":
            from bigmodel import runtime
            from bigmodel.finetune.command import finetune_command

            runtime.note_early_stop_requests()  # until the loop installs train.StopRequest
            runtime.set_gpu_memory_fraction()
            runtime.enable_compilation_cache()
            return finetune_command(args, overrides)
        if args.command == "compare":
            from bigmodel.scaling.compare import compare_command

            return compare_command(args)
    except ConfigError as error:
        print(f"error: {error}", file=sys.stderr)
        return exit_codes.BAD_INPUT
    except BrokenPipeError:  # `bigmodel presets | head`: the reader left; that is not an error
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())  # so the exit flush is silent too
        return exit_codes.OK
    return exit_codes.BAD_INPUT
