"""Coordinate check (Yang et al. 2022, Tensor Programs V, Fig. 5): does an activation's size
depend on width during training? Under muP it should not; under SP the logits and the residual
branches grow with width once Adam's updates dominate the initialisation.

For each width (d_model at a fixed depth and head_dim 32, `shape_of`) and each parametrization,
trains a few steps of the run's model and optimizer on kjv at one fixed learning rate,
and after every step measures the RMS of four activations on one fixed validation batch:
the token embedding's output, the attention and MLP outputs (the residual branches, all layers),
and the logits. The slope of log RMS against log width, fitted over the widths at each step, is
the number to read: ≈ 0 means width-stable, 1 means ∝ width.

  python tools/coord_check.py --out runs/coord_check                  # 5 widths 32..512, 10 steps: ~4 min of CPU
  python tools/coord_check.py --out /tmp/cc --widths 64,128,256 --steps 5 --lr 3e-2

Writes OUT/coord_check.json (RMS per parametrization, activation, width and step; slopes) and
OUT/coord_check.png (RMS against width, one line per step, SP above muP), and prints the slopes.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))  # run from a checkout without installing

import jax  # noqa: E402
import numpy as np  # noqa: E402

from bigmodel import exit_codes  # noqa: E402
from bigmodel.config import ConfigError, load_config  # noqa: E402
from bigmodel.data.pipeline import load_dataset  # noqa: E402
from bigmodel.scaling.sweep import shape_of  # noqa: E402

ACTIVATIONS = ("embedding", "attention_out", "mlp_out", "logits")
PARAMETRIZATIONS = ("sp", "mup")
DPI_SMALL = 100  # 8 panels: 1500 × 760 px, about 200 KB


def run_config(parametrization: str, width: int, args: argparse.Namespace):
    """The run config of one coord-check model: L2's settings at this width, a constant lr."""
    overrides = {f"model.{key}": value for key, value in shape_of(args.n_layers, width).items()}
    overrides.update({
        "model.parametrization": parametrization, "model.mup_base_width": args.base_width,
        "optim.lr": args.lr, "optim.warmup_steps": 0, "optim.schedule": "constant",
        "train.steps": args.steps, "train.batch_size": args.batch_size, "data.seq_len": args.seq_len,
        "data.dataset": args.dataset, "data.data_dir": args.data_dir, "seed": args.seed,
    })
    return load_config("configs/lm.py:L2", {key: str(value) for key, value in overrides.items()})


def train_and_measure(config, steps: int) -> list[dict[str, float]]:
    """Activation RMS on one fixed validation batch at init and after each of `steps` steps of
    the run's own model, loss and optimizer (`make_optimizer`: muP's lr groups included). One
    jitted function measures and then steps, so each width compiles once."""
    import flax.linen as nn
    import optax

    from bigmodel.model import Transformer, model_config
    from bigmodel.optim import make_optimizer

    model = Transformer(model_config(config))
    optimizer, _ = make_optimizer(config.optim, config.train.steps, model.config)
    batch_size = config.train.batch_size
    data, validation = load_dataset(config.data, "train", config.seed), load_dataset(config.data, "validation", 0)
    probe = validation.batch(0, batch_size)[:, :-1]
    params = nn.unbox(jax.jit(model.init)(jax.random.key(config.seed), probe)["params"])

    @jax.jit
    def measure_then_step(params, opt_state, batch):
        rms = activation_rms(model, params, probe)
        grads = jax.grad(lambda params: model.apply({"params": params}, batch[:, :-1], targets=batch[:, 1:]))(params)
        updates, opt_state = optimizer.update(grads, opt_state, params)
        return optax.apply_updates(params, updates), opt_state, rms

    opt_state, history = optimizer.init(params), []
    for step in range(steps + 1):  # the last call only measures: its step is never used
        params, opt_state, rms = measure_then_step(params, opt_state, data.batch(step, batch_size))
        history.append(rms)
    return [{name: float(value) for name, value in record.items()} for record in jax.device_get(history)]


def activation_rms(model, params, tokens) -> dict:
    """RMS of each of ACTIVATIONS on `tokens`, read with flax's capture_intermediates (the layer
    scan stacks its layers' outputs, so a branch's RMS is over all its layers)."""
    import jax.numpy as jnp

    from bigmodel.model import Attention, Mlp

    def wanted(module, method_name: str) -> bool:
        return method_name == "__call__" and (isinstance(module, (Attention, Mlp)) or module.name == "token_embedding" or module.parent is None)

    logits, state = model.apply({"params": params}, tokens, capture_intermediates=wanted, mutable=["intermediates"])
    captured = state["intermediates"]
    arrays = {
        "embedding": captured["token_embedding"]["__call__"][0],
        "attention_out": captured["layers"]["attention"]["__call__"][0][0],  # (output, layer_cache)
        "mlp_out": captured["layers"]["mlp"]["__call__"][0],
        "logits": logits,
    }
    return {name: jnp.sqrt(jnp.mean(jnp.square(array.astype(jnp.float32)))) for name, array in arrays.items()}


def log_slope(widths, values) -> float:
    """Least-squares slope of log(value) against log(width)."""
    return float(np.polyfit(np.log(np.asarray(widths, float)), np.log(np.asarray(values, float)), 1)[0])


def coord_check(args: argparse.Namespace) -> dict:
    """{"rms": {parametrization: {activation: [[rms per step] per width]}}, "slopes":
    {parametrization: {activation: [slope per step]}}, and the settings}."""
    rms, slopes = {}, {}
    for parametrization in args.parametrizations:
        per_width = [train_and_measure(run_config(parametrization, width, args), args.steps) for width in args.widths]
        rms[parametrization] = {name: [[record[name] for record in history] for history in per_width] for name in ACTIVATIONS}
        slopes[parametrization] = {name: [log_slope(args.widths, [history[step] for history in rms[parametrization][name]])
                                          for step in range(args.steps + 1)] for name in ACTIVATIONS}
    settings = {key: getattr(args, key) for key in ("widths", "steps", "lr", "batch_size", "seq_len", "n_layers", "base_width", "dataset", "seed")}
    return {**settings, "activations": list(ACTIVATIONS), "rms": rms, "slopes": slopes}


def plot(result: dict, path: Path) -> None:
    """RMS against width (log-log), one line per step coloured from early to late; one row per
    parametrization, one column per activation, the last step's slope in each title."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from bigmodel.scaling.plot_style import STYLE

    parametrizations, steps = list(result["rms"]), result["steps"]
    with plt.rc_context(STYLE):
        figure, axes = plt.subplots(len(parametrizations), len(ACTIVATIONS), figsize=(15, 3.8 * len(parametrizations)), squeeze=False)
        colors = plt.get_cmap("viridis")(np.linspace(0, 0.88, steps + 1))
        for row, parametrization in enumerate(parametrizations):
            for column, name in enumerate(ACTIVATIONS):
                ax = axes[row][column]
                per_width = np.asarray(result["rms"][parametrization][name])  # [width, step]
                for step in range(steps + 1):
                    ax.plot(result["widths"], per_width[:, step], "o-", color=colors[step], markersize=3, linewidth=1.2,
                            label=f"step {step}" if step in (0, steps) else None)
                ax.set_xscale("log", base=2)
                ax.set_yscale("log")
                ax.set_title(f"{parametrization.upper()} {name}: slope {result['slopes'][parametrization][name][-1]:+.2f}")
                ax.set_xlabel("width (d_model)")
                if column == 0:
                    ax.set_ylabel("activation RMS")
                    ax.legend(loc="best")
        figure.suptitle(f"coordinate check: {result['n_layers']} layers, Adam lr {result['lr']:g}, "
                        f"muP base width {result['base_width']}, steps 0–{steps} on {result['dataset']}")
        figure.tight_layout()
        figure.savefig(path, dpi=DPI_SMALL)
        plt.close(figure)


def slope_table(result: dict) -> list[str]:
    """The last step's slope per parametrization and activation, as printed."""
    lines = [f"slope of log RMS vs log width after {result['steps']} steps (0 = width-stable, 1 = ∝ width)",
             f"{'':>5} " + " ".join(f"{name:>14}" for name in ACTIVATIONS)]
    for parametrization, slopes in result["slopes"].items():
        lines.append(f"{parametrization:>5} " + " ".join(f"{slopes[name][-1]:>+14.3f}" for name in ACTIVATIONS))
    return lines


def parse_args(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", required=True, help="directory for coord_check.json and coord_check.png")
    parser.add_argument("--widths", default="32,64,128,256,512", help="d_model values, multiples of 32 (head_dim 32)")
    parser.add_argument("--parametrizations", default="sp,mup")
    parser.add_argument("--steps", type=int, default=10)
    parser.add_argument("--lr", type=float, default=1e-2, help="Adam lr, constant, no warmup (the muP base width's lr)")
    parser.add_argument("--batch_size", type=int, default=16)
    parser.add_argument("--seq_len", type=int, default=128)
    parser.add_argument("--n_layers", type=int, default=2)
    parser.add_argument("--base_width", type=int, default=64, help="model.mup_base_width")
    parser.add_argument("--dataset", default="kjv")
    parser.add_argument("--data_dir", default="", help="tfds data dir ('' = the default cache)")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    try:
        args.widths = [int(width) for width in args.widths.split(",")]
    except ValueError:
        parser.error(f"--widths takes comma-separated integers, got {args.widths!r}")
    args.parametrizations = args.parametrizations.split(",")
    if len(args.widths) < 2 or any(width < 32 or width % 32 for width in args.widths):
        parser.error(f"--widths needs at least two multiples of 32 (head_dim 32), got {args.widths}")
    if any(name not in PARAMETRIZATIONS for name in args.parametrizations):
        parser.error(f"--parametrizations takes sp and/or mup, got {args.parametrizations}")
    if args.steps < 1 or args.lr <= 0:
        parser.error("--steps must be >= 1 and --lr > 0")
    return args


def main(argv=None) -> int:
    args = parse_args(argv)
    out = Path(args.out)
    if out.is_file():
        print(f"error: --out {out} is a file: pass a directory", file=sys.stderr)
        return exit_codes.BAD_INPUT
    try:
        result = coord_check(args)
    except ConfigError as error:
        print(f"error: {error}", file=sys.stderr)
        return exit_codes.BAD_INPUT
    out.mkdir(parents=True, exist_ok=True)
    (out / "coord_check.json").write_text(json.dumps(result, indent=1))
    plot(result, out / "coord_check.png")
    print("\n".join(slope_table(result)))
    print(f"wrote {out / 'coord_check.json'} and {out / 'coord_check.png'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
