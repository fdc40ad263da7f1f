"""`python -m bigmodel <command>`: train, eval, bench, presets, sweep.

Commands import their modules lazily so `presets` and `--help` answer without loading JAX.
Any `--config.group.key=value` argument overrides the config file (big_vision style).
"""

from __future__ import annotations

import argparse
import sys

from bigmodel.config import ConfigError, parse_override


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
    import ml_collections

    from bigmodel.flops import model_stats
    from bigmodel.presets import PRESETS, model_shape

    data = ml_collections.ConfigDict({"vocab_size": args.vocab_size, "seq_len": args.seq_len})
    header = f"{'preset':>6} {'d_model':>7} {'n_layers':>8} {'n_heads':>7} {'d_ff':>6} {'params':>14} {'non_emb_params':>14} {'flops/token':>14}"
    print(f"# vocab_size={args.vocab_size} seq_len={args.seq_len} untied head, rope; d_model = 32*n_layers, head_dim 32, d_ff = 4*d_model")
    print(header)
    for name in PRESETS:
        model = ml_collections.ConfigDict(model_shape(name))
        model.update(max_seq_len=1024, positions="rope", tie_embeddings=False)
        stats = model_stats(model, data)
        print(
            f"{name:>6} {model.d_model:>7} {model.n_layers:>8} {model.n_heads:>7} {model.d_ff:>6} "
            f"{stats['params']:>14,} {stats['non_embedding_params']:>14,} {stats['flops_per_token']:>14,}"
        )
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="bigmodel", description=__doc__.splitlines()[0])
    commands = parser.add_subparsers(dest="command", required=True)

    train = commands.add_parser("train", help="train (or resume) a model in --workdir")
    train.add_argument("--config", required=True, help="path/to/config.py[:arg]")
    train.add_argument("--workdir", required=True, help="run directory; an existing one is resumed")
    train.add_argument("--stop_at_step", type=int, default=None, help="checkpoint and exit after this step (resume later)")

    evaluate = commands.add_parser("eval", help="evaluate the latest checkpoint of a run")
    evaluate.add_argument("--workdir", required=True)
    evaluate.add_argument("--batches", type=int, default=None, help="validation batches (default: the run's eval.batches)")

    bench = commands.add_parser("bench", help="time training steps; print one JSON line")
    bench.add_argument("--config", required=True)
    bench.add_argument("--steps", type=int, default=10, help="timed steps after warm-up")
    bench.add_argument("--warmup", type=int, default=2, help="untimed steps after compilation")
    bench.add_argument("--peak_flops", type=float, default=None, help="peak FLOP/s per device (overrides the table)")

    presets = commands.add_parser("presets", help="list model size presets with params and FLOPs/token")
    presets.add_argument("--vocab_size", type=int, default=256)
    presets.add_argument("--seq_len", type=int, default=256)

    for command in (train, evaluate):  # multi-host: every process runs the same command with its own id
        command.add_argument("--coordinator", default=None, help="host:port of process 0 (jax.distributed)")
        command.add_argument("--num_processes", type=int, default=None)
        command.add_argument("--process_id", type=int, default=None)

    sweep = commands.add_parser("sweep", help="run a scaling study: experiments/<name>.py")
    sweep.add_argument("experiment", help="path/to/experiment.py")
    sweep.add_argument("--workdir", required=True)
    sweep.add_argument("--dry-run", action="store_true", help="print the runs and write nothing")
    sweep.add_argument("--json", action="store_true", help="with --dry-run: one JSON object per run")
    sweep.add_argument("--jobs", type=int, default=1, help="runs in parallel (processes)")
    return parser


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    try:
        rest, overrides = _split_overrides(argv)
        args = build_parser().parse_args(rest)
        if args.command == "presets":
            return _print_presets(args)
        if args.command in ("train", "eval"):
            from bigmodel.sharding import maybe_initialize_distributed

            maybe_initialize_distributed(args.coordinator, args.num_processes, args.process_id)
        if args.command == "train":
            from bigmodel.train import train_command

            return train_command(args.config, overrides, args.workdir, args.stop_at_step)
        if args.command == "eval":
            from bigmodel.evaluate import eval_command

            return eval_command(args.workdir, args.batches)
        if args.command == "bench":
            from bigmodel.bench import bench_command

            return bench_command(args.config, overrides, args.steps, args.warmup, args.peak_flops)
        if args.command == "sweep":
            from bigmodel.scaling.runner import sweep_command

            return sweep_command(args)
    except ConfigError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    return 2
