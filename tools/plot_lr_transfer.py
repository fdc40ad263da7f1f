"""Loss against learning rate per width, SP beside muP, from the two sweeps of
experiments/lr_transfer.py: does the best learning rate move as the model widens?

  python tools/plot_lr_transfer.py --sp runs/lr_transfer_sp --mup runs/lr_transfer_mup --out experiments/lr_transfer_results

--sp/--mup take a sweep directory or its runs.csv; each run's width and learning rate come from
the study itself (`--experiment`, expanded as the sweep expanded it), not from its name. Writes
OUT/lr_transfer.png and OUT/lr_transfer.json: per parametrization and width the final eval loss
at each learning rate, the best grid learning rate, a sub-grid estimate (the vertex of a parabola
in log lr through the best point and its two neighbours) and runs that failed (diverged); and
per parametrization the drift, how many grid steps the best learning rate moves across widths.
"""

from __future__ import annotations

import argparse
import csv
import json
import math
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))  # run from a checkout without installing

import numpy as np  # noqa: E402

from bigmodel import exit_codes  # noqa: E402
from bigmodel.config import ConfigError  # noqa: E402

PARAMETRIZATIONS = ("sp", "mup")
TITLES = {"sp": "SP", "mup": "muP"}


def registry_rows(source: Path) -> list[dict]:
    """The rows of a sweep's runs.csv (`source` is the sweep directory or the file)."""
    path = source / "runs.csv" if source.is_dir() else source
    if not path.is_file():
        raise ConfigError(f"{source} has no runs.csv: pass a sweep --workdir of experiments/lr_transfer.py or its runs.csv")
    with path.open(newline="") as handle:
        return list(csv.DictReader(handle))


def study_grid(experiment: str, parametrization: str) -> dict[str, tuple[int, float]]:
    """Run name → (d_model, learning rate), as the sweep expanded the study."""
    from bigmodel.scaling.runner import plan_runs

    _, runs = plan_runs(f"{experiment}:{parametrization}")
    return {run.name: (int(run.overrides["model.d_model"]), run.learning_rate) for run in runs}


def losses_by_width(rows: list[dict], grid: dict[str, tuple[int, float]]) -> dict[int, dict]:
    """{width: {"losses": {lr: final eval loss}, "diverged": [lr, ...]}} over the study's runs;
    a failed run (a non-finite loss stops the trainer) counts as diverged, a missing one as neither."""
    table = {width: {"losses": {}, "diverged": []} for width, _ in sorted(set(grid.values()))}
    for row in rows:
        if row["name"] not in grid:
            continue
        width, learning_rate = grid[row["name"]]
        loss = float(row["final_eval_loss"]) if row.get("final_eval_loss") else math.nan
        if row["status"] == "done" and math.isfinite(loss):
            table[width]["losses"][learning_rate] = loss
        elif row["status"] == "failed":
            table[width]["diverged"].append(learning_rate)
    return table


def vertex_learning_rate(losses: dict[float, float]) -> float | None:
    """The minimum of a parabola in log lr through the best grid point and its two neighbours;
    None when the best point is at the edge of the grid (the optimum may lie beyond it)."""
    rates = sorted(losses)
    best = min(range(len(rates)), key=lambda index: losses[rates[index]])
    if best == 0 or best == len(rates) - 1:
        return None
    x = np.log([rates[best - 1], rates[best], rates[best + 1]])
    a, b, _ = np.polyfit(x, [losses[rates[index]] for index in (best - 1, best, best + 1)], 2)
    return float(np.exp(-b / (2 * a))) if a > 0 else rates[best]


def summarise(table: dict[int, dict], learning_rates: list[float]) -> dict:
    """Best lr per width and the drift in grid steps (max − min of the best lr's grid index)."""
    widths = {}
    for width, entry in table.items():
        losses = entry["losses"]
        best = min(losses, key=losses.get)
        widths[str(width)] = {"best_lr": best, "best_loss": losses[best], "vertex_lr": vertex_learning_rate(losses),
                              "losses": {repr(rate): loss for rate, loss in sorted(losses.items())}, "diverged": sorted(entry["diverged"])}
    indices = [learning_rates.index(entry["best_lr"]) for entry in widths.values()]
    return {"widths": widths, "best_lr_grid_index": indices, "drift_grid_steps": max(indices) - min(indices)}


def plot(summaries: dict, out: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from bigmodel.scaling.plot_style import DPI, STYLE, WIDE_FIGURE_SIZE_INCHES

    with plt.rc_context(STYLE):
        figure, axes = plt.subplots(1, len(summaries), figsize=WIDE_FIGURE_SIZE_INCHES, sharey=True, squeeze=False)
        for ax, (parametrization, summary) in zip(axes[0], summaries.items()):
            widths = sorted(summary["widths"], key=int)
            colors = plt.get_cmap("viridis")(np.linspace(0, 0.88, len(widths)))
            for color, width in zip(colors, widths):
                entry = summary["widths"][width]
                rates = [float(rate) for rate in entry["losses"]]
                ax.plot(rates, list(entry["losses"].values()), "o-", color=color, markersize=4, label=f"d_model {width}")
                ax.plot([entry["best_lr"]], [entry["best_loss"]], "*", color=color, markersize=16, markeredgecolor="black")
            rates = sorted({float(rate) for entry in summary["widths"].values() for rate in entry["losses"]})
            ax.set_xscale("log")
            ax.set_xticks(rates, [f"{rate:g}" for rate in rates], rotation=30)
            ax.minorticks_off()
            ax.set_xlabel("learning rate (peak)")
            ax.set_title(f"{TITLES[parametrization]}: best lr moves {summary['drift_grid_steps']} grid step(s) across widths")
            ax.legend(loc="upper center")
        axes[0][0].set_ylabel("final eval loss (nats/byte)")
        low = min(entry["best_loss"] for summary in summaries.values() for entry in summary["widths"].values())
        axes[0][0].set_ylim(low - 0.05, low + 1.0)  # the valleys; diverging rates leave the top
        figure.suptitle("learning-rate transfer across width (★ = best of the grid)")
        figure.tight_layout()
        figure.savefig(out / "lr_transfer.png", dpi=DPI)
        plt.close(figure)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--sp", required=True, help="the SP sweep directory (or its runs.csv)")
    parser.add_argument("--mup", required=True, help="the muP sweep directory (or its runs.csv)")
    parser.add_argument("--out", required=True, help="directory for lr_transfer.png and lr_transfer.json")
    parser.add_argument("--experiment", default="experiments/lr_transfer.py")
    args = parser.parse_args(argv)
    out = Path(args.out)
    try:
        if out.is_file():
            raise ConfigError(f"--out {out} is a file: pass a directory")
        summaries = {}
        for parametrization in PARAMETRIZATIONS:
            grid = study_grid(args.experiment, parametrization)
            table = losses_by_width(registry_rows(Path(getattr(args, parametrization))), grid)
            if not all(entry["losses"] for entry in table.values()):
                raise ConfigError(f"--{parametrization} has a width without finished runs: run its sweep to the end first")
            summaries[parametrization] = summarise(table, sorted({rate for _, rate in grid.values()}))
    except ConfigError as error:
        print(f"error: {error}", file=sys.stderr)
        return exit_codes.BAD_INPUT
    out.mkdir(parents=True, exist_ok=True)
    (out / "lr_transfer.json").write_text(json.dumps(summaries, indent=1))
    plot(summaries, out)
    for parametrization, summary in summaries.items():
        best = ", ".join(f"d{width}: {entry['best_lr']:.3g}" for width, entry in summary["widths"].items())
        print(f"{parametrization:>4}: best lr {best}; drift {summary['drift_grid_steps']} grid step(s)")
    print(f"wrote {out / 'lr_transfer.png'} and {out / 'lr_transfer.json'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
