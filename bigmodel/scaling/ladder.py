"""A ladder that checks its forecasts: `Study(..., ladder=[C1, C2])` or `sweep --ladder C1,C2`.

After the study's grid is trained and fitted (its analysis: a chinchilla law with a bootstrap),
each rung C gets the run the fit recommends there (`recommend.py`): the preset-family shape nearest
the compute-optimal N, trained on the tokens that spend C at the study's own FLOPs per token of
that shape, with the learning rate and batch the study's rules choose for it. The rung is trained
the way the grid's points were: a BranchGrid study's rung is a warmup-stable run and one cooldown
branch off it (the grid's cooldown share and shape), any other study's a plain run; one seed (the
study's first), no lr or batch-size sweep. Then each measured rung is scored as a held-out row
(`holdout.holdout_rows`: its prediction interval, whether it covered the measurement, and the
baselines fitted to the same points as the law), written to fit.json's `ladder` and its summary.

A rung must lie above the grid's largest run (else it checks interpolation, not a forecast): a
study that asks otherwise is refused before anything runs, as is a ladder without a chinchilla
analysis with a bootstrap (no prediction interval to score). Rung runs are named
`rung<i>-<run name>` and recorded with role `rung`: never points of the fit, so refitting the
grid (a resumed sweep) gives the same fit, the same recommendation and the same rung runs.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path

import numpy as np

from bigmodel.config import ConfigError
from bigmodel.scaling.execution import CPU_FLOPS_PER_S, RUN_OVERHEAD_S, estimated_seconds, format_duration
from bigmodel.scaling.expand import expand, sizes_of
from bigmodel.scaling.holdout import describe_holdout, held_out_mask, holdout_rows
from bigmodel.scaling.points import join_points
from bigmodel.scaling.recommend import check_budget, check_fit, recommend, with_hyperparameters, with_run
from bigmodel.scaling.registry import RUNG, STABLE, load_points, read_sweep_fit, sweep_points
from bigmodel.scaling.study import BranchGrid, Run, SizeGrid, Study


# ----------------------------------------------------------------------------- the study's ladder, checked


def grids_of(study: Study) -> list:
    return list(study.grid) if isinstance(study.grid, (list, tuple)) else [study.grid]


def largest_fitted_compute(runs: list[Run]) -> Run:
    """The grid's largest-compute run that is a point of the fit (a stable run is not)."""
    return max((run for run in runs if run.role not in (STABLE, RUNG)), key=lambda run: run.flops)


def check_ladder(study: Study, runs: list[Run]) -> None:
    """Every rung a budget above the grid's largest run, and an analysis that can score it; else one ConfigError."""
    if not study.ladder:
        return
    analysis = dict(study.analysis or {})
    if analysis.get("law") != "chinchilla" or not analysis.get("bootstrap"):
        raise ConfigError("a ladder scores the fit's forecasts against their prediction intervals: give the study "
                          "analysis={'law': 'chinchilla', 'bootstrap': 200, ...}")
    try:
        budgets = [check_budget(value, "ladder rung") for value in study.ladder]
    except ValueError as error:
        raise ConfigError(str(error)) from None
    if len(set(budgets)) < len(budgets):
        raise ConfigError(f"the ladder {list(study.ladder)} repeats a rung: list each compute budget once")
    largest = largest_fitted_compute(runs)
    low = min(budgets)
    if low <= largest.flops:
        raise ConfigError(f"ladder rung {low:.3g} FLOPs is below the fitted compute: the grid's largest run {largest.name} has "
                          f"{largest.flops:.3g}; a rung checks a forecast beyond the grid: give rungs above {largest.flops:.3g} FLOPs")


def parse_ladder(text: str) -> list[float]:
    """`--ladder 1e13,3e13` → [1e13, 3e13]; anything else is one ConfigError line."""
    try:
        values = [float(part) for part in text.split(",")]
    except ValueError:
        raise ConfigError(f"--ladder {text!r} is not a list of compute budgets: give FLOPs separated by commas, e.g. --ladder 1e13,3e13") from None
    return values


# ----------------------------------------------------------------------------- a rung's runs


def rung_grid(study: Study, shape: dict, tokens: float):
    """One size at one D, trained as the grid's points were (module docstring)."""
    branch = next((grid for grid in grids_of(study) if isinstance(grid, BranchGrid)), None)
    if branch is not None:
        return BranchGrid([shape], tokens=[tokens], cooldown=branch.cooldown, shape=branch.shape)
    return SizeGrid([shape], tokens=tokens)


def shape_flops_per_token(study: Study, shape: dict) -> int:
    """FLOPs per token of `shape` in the study's config (the one formula, `flops.run_stats`)."""
    size = next(sizes_of(dataclasses.replace(study, grid=SizeGrid([shape], tokens=1))))
    return size.stats["flops_per_token"]


def rung_runs(study: Study, index: int, budget: float, shape: dict) -> list[Run]:
    """The runs of rung `index` (1, 2, …): `shape` on the tokens that spend `budget`; the measured one has role `rung`."""
    shape = {key: shape[key] for key in ("n_layers", "d_model", "n_heads", "d_ff")}
    tokens = budget / shape_flops_per_token(study, shape)
    single = dataclasses.replace(study, grid=rung_grid(study, shape, tokens), seeds=tuple(study.seeds)[:1], learning_rates=None,
                                 batch_sizes=None, ladder=None)
    prefix = f"rung{index}-"
    return [dataclasses.replace(run, name=prefix + run.name, parent=prefix + run.parent if run.parent else "",
                                role=run.role if run.role == STABLE else RUNG, budget=float(budget))
            for run in expand(single)]


def hyperparameter_source(study: Study) -> str:
    """Where a study's rung gets its learning rate and batch, in words."""
    from bigmodel.scaling.hyperparams import FittedRule

    fitted = isinstance(study.rules, FittedRule) or isinstance(getattr(study.batch_size, "__self__", None), FittedRule)
    lr = "fitted hyperparameter laws (the study's fitted_rule)" if fitted else (
        "the study's rules" if study.rules is not None else "the study's config")
    batch = "the study's batch_size" if study.batch_size is not None else "the study's config (base config and overrides)"
    return f"learning rate from {lr}, batch from {batch}"


def study_recommendation(study: Study, fit: dict, index: int, budget: float) -> tuple[dict, list[Run]]:
    """The fit's recommendation at `budget` as this study would train it, and the rung's runs."""
    recommendation = recommend(fit, budget)
    runs = rung_runs(study, index, budget, recommendation["shape"])
    measured = next(run for run in runs if run.role == RUNG)
    recommendation = with_run(recommendation, fit, measured.tokens, measured.flops,
                              "steps × batch × seq_len, spending C at the study's FLOPs per token of the shape")
    recommendation = with_hyperparameters(recommendation, measured.learning_rate,
                                          {"sequences": measured.batch_size, "seq_len": measured.seq_len}, hyperparameter_source(study))
    return {**recommendation, "name": measured.name}, runs


def plan_rungs(study: Study, fit: dict, where: str = "fit.json") -> list[tuple[dict, list[Run]]]:
    """(recommendation, runs) per rung, in ladder order."""
    try:
        check_fit(fit, where)
        return [study_recommendation(study, fit, index, float(budget)) for index, budget in enumerate(study.ladder, 1)]
    except ValueError as error:
        raise ConfigError(str(error)) from None


# ----------------------------------------------------------------------------- scoring


def score_rungs(workdir: Path, fit: dict, recommendations: list[dict], analysis: dict) -> dict:
    """fit.json's `ladder`: each measured rung as a held-out row beside its recommendation; the
    baselines are fitted to the points the law was (the grid's, less any it held out)."""
    fitted = load_points(workdir)
    if analysis.get("holdout"):
        fitted = fitted.select(~held_out_mask(fitted, "chinchilla"))
    measured = sweep_points(workdir, rungs=True)
    by_name = {recommendation["name"]: recommendation for recommendation in recommendations}
    done = [name for name in measured.names if name in by_name]
    ladder = {"largest_fitted_flops": float(np.max(fitted.compute())), "rungs": [],
              "not_measured": [r["name"] for r in recommendations if r["name"] not in done]}
    if not done:
        return ladder
    measured = measured.select(np.array([name in by_name for name in measured.names]))
    both = join_points(fitted, measured)
    rows = holdout_rows(both, np.arange(len(both)) >= len(fitted), fit)
    rows = rows if isinstance(rows, list) else [rows]
    for name, row in zip(measured.names, rows):
        recommendation = by_name[name]
        row.update(name=name, budget=recommendation["budget"], recommendation={key: recommendation[key] for key in (
            "optimum", "shape", "hyperparameters", "compute_basis") if key in recommendation})
    covered = [row["inside_prediction_interval"] for row in rows if "inside_prediction_interval" in row]
    ladder.update(rungs=rows, covered=int(sum(covered)), scored=len(covered), verdict=rows[0].get("verdict"))
    return ladder


def describe_ladder(ladder: dict) -> str:
    """The ladder's part of the fit's summary line."""
    parts = [f"rung C={row['budget']:.3g} {row['recommendation']['shape']['preset']}: {describe_holdout(row)}" for row in ladder["rungs"]]
    if ladder.get("scored"):
        parts.append(f"{ladder['covered']} of {ladder['scored']} rungs inside their prediction interval")
    if ladder["not_measured"]:
        parts.append(f"not measured: {', '.join(ladder['not_measured'])}")
    return "ladder: " + "; ".join(parts)


# ----------------------------------------------------------------------------- the dry run


def planned_rungs(study: Study, runs: list[Run], workdir: Path) -> list[dict]:
    """What `sweep --dry-run` says of each rung: its budget, how far above the grid's largest run,
    its estimated seconds and, where the workdir already has the grid's fit.json, its shape and runs."""
    largest = largest_fitted_compute(runs).flops
    fit = read_sweep_fit(workdir)
    planned = plan_rungs(study, fit, str(workdir / "fit.json")) if isinstance(fit, dict) and fit.get("law") == "chinchilla" else None
    per_rung = 2 if any(isinstance(grid, BranchGrid) for grid in grids_of(study)) else 1  # a stable run and its branch
    entries = []
    for index, budget in enumerate(study.ladder or (), 1):
        entry = {"rung": f"rung{index}", "budget": float(budget), "compute_ratio": budget / largest, "largest_fitted_flops": largest,
                 "estimated_time_s": per_rung * RUN_OVERHEAD_S + budget / CPU_FLOPS_PER_S}
        if planned:
            recommendation, rung = planned[index - 1]
            shape, prediction = recommendation["shape"], recommendation["prediction"]
            entry.update(estimated_time_s=sum(estimated_seconds(run) for run in rung), runs=[run.name for run in rung],
                         shape={key: shape[key] for key in ("preset", "n_layers", "d_model", "n_heads", "d_ff", "non_embedding_params")},
                         tokens=recommendation["run"]["tokens"], learning_rate=recommendation["hyperparameters"]["learning_rate"],
                         predicted_loss=prediction["predicted_loss"], prediction_interval=prediction.get("prediction_interval"))
        entries.append(entry)
    return entries


def rung_line(entry: dict) -> str:
    """One rung of the dry run's table."""
    head = f"{entry['rung']} C={entry['budget']:.3g} ({entry['compute_ratio']:.3g}× the largest fitted compute {entry['largest_fitted_flops']:.3g})"
    if "shape" not in entry:
        return f"{head}: est {format_duration(entry['estimated_time_s'])}"
    shape, band = entry["shape"], entry["prediction_interval"]
    return (f"{head}: {shape['preset']} ({shape['n_layers']} layers, d_model {shape['d_model']}, {shape['n_heads']} heads), "
            f"N {shape['non_embedding_params']:,}, D {entry['tokens']:.3g}, lr {entry['learning_rate']:.3g}, predicted {entry['predicted_loss']:.4f}"
            + (f" [{band[0]:.4f}, {band[1]:.4f}]" if band else "") + f", {len(entry['runs'])} runs, est {format_duration(entry['estimated_time_s'])}")


def dry_run_lines(entries: list[dict], workdir: Path) -> list[str]:
    """The ladder's lines of `sweep --dry-run`: a header, then one line per rung."""
    if not entries:
        return []
    count = f"{len(entries)} rung{'s' if len(entries) > 1 else ''}"
    shapes = "" if "shape" in entries[0] else f" (shapes chosen by the fit; {workdir / 'fit.json'} does not exist yet)"
    return [f"# ladder: {count} after the fit, each scored against its prediction interval{shapes}", *map(rung_line, entries)]
