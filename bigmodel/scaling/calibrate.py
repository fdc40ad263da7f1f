"""Calibration: do the 95% intervals a fit prints hold the truth 95% of the time on this design?

Given a study design (`calibrate_design.Design`) and a true Chinchilla law (the design's own fit
unless given), it simulates K studies and fits each exactly as `python -m bigmodel fit` does
(`fit.fit_points` with the same bootstrap, method and budget; `holdout.holdout_rows` for the
held-out runs), then counts how often each printed interval holds what it claims to.

The noise: a run's log loss is the true law's plus ε = σ·(√(1−F)·z_run + √F·z_group), z standard
normal; runs with one group label share z_group, so F is the correlation of two runs of one group
(the share of the noise variance they share). Groups (`NOISE_MODELS`): "group" — runs sharing
training (the branches of one stable run); "seed" — runs sharing a seed; "iid" — none (F unused).
σ: the given one, else the design's seed replicates (pooled spread of log loss), else the true
law's residuals on the design, √(Σr²/(n−5)).

What is measured is read from the result dict, not listed here, so an interval a new fit method
adds is measured too: every `ci` entry against the true law's value of it (`true_values`; an entry
the law does not define is compared with a noise-free fit's value and marked so), and every
[low, high] pair of each held-out row against the true mean loss there ("mean") and against the
study's own simulated run there ("run"). Coverage comes with its binomial standard error
√(p(1−p)/K) and the median width.

Study k draws its noise from `numpy.random.default_rng([seed, k])` and its bootstrap seed from the
same generator, so a report is a function of the seed alone, however the studies are spread over
processes (`simulate`: a pool of 2 spawned processes, the machine's cores; each runs JAX's L-BFGS
on its own studies).
"""

from __future__ import annotations

import concurrent.futures
import dataclasses
import math
import multiprocessing
import time

import numpy as np

from bigmodel.scaling import calibrate_design
from bigmodel.scaling.calibrate_design import Design, build_points
from bigmodel.scaling.fit import _chinchilla_parameters, check_options, fit_points
from bigmodel.scaling.holdout import held_out_mask, holdout_rows
from bigmodel.scaling.allocation import flops_per_token_line
from bigmodel.scaling.isoflop_bias import allocation_slopes
from bigmodel.scaling.laws import chinchilla_loss
from bigmodel.scaling.registry import group_budgets
from bigmodel.scaling.noise import DEFAULT_METHOD

LAWS = ("chinchilla", "isoflop")  # what a calibration fits; the truth is always a Chinchilla law
NOISE_MODELS = ("group", "seed", "iid")
LAW_KEYS = ("E", "A", "B", "alpha", "beta")
PROCESSES = 2  # the machine's cores
MAX_STUDIES = 100_000  # coverage SE ≈ 0.0007 there; at ~5 s a study, already a week on 2 cores
FLAGGED = " (flagged: reaches its bound)"  # an interval fit prints flagged (fit.json `interval_flags`), as the table names it
MAX_VARIED = 1_000  # sizes or seeds per size in a design question: past it the design only exhausts memory


@dataclasses.dataclass(frozen=True)
class Settings:
    """How each simulated study is fitted (as `fit` would) and how its noise is drawn."""

    law: str = "chinchilla"
    bootstrap: int = 200
    bootstrap_method: str = DEFAULT_METHOD
    budget: float | None = None
    holdout: str | None = None
    noise_model: str = "group"
    shared_fraction: float = 0.5
    noise_sd: float | None = None  # None: from seed replicates, else from residuals


def check_settings(settings: Settings, studies: int) -> None:
    """Refuse settings that cannot give a coverage, before any fit runs."""
    if settings.law not in LAWS:
        raise ValueError(f"unknown law {settings.law!r} for calibrate: use {' or '.join(LAWS)}")
    check_simulation(studies, settings.bootstrap, settings.noise_model, settings.noise_sd, settings.shared_fraction)
    check_options(settings.law, "non_embedding_params", settings.bootstrap, settings.budget, settings.holdout, **method_option(settings))


def check_simulation(studies: int, bootstrap: int, noise_model: str, noise_sd: float | None, shared_fraction: float) -> None:
    """What every calibration needs, of one law or of two recipes: studies, replicates, a noise model."""
    if not 0 < studies <= MAX_STUDIES:
        raise ValueError(f"--studies must be a positive number of simulated studies, at most {MAX_STUDIES:,}, got {studies}")
    if bootstrap < 2:
        raise ValueError(f"--bootstrap must be at least 2 replicates (the intervals calibrate measures), got {bootstrap}")
    if noise_model not in NOISE_MODELS:
        raise ValueError(f"unknown noise model {noise_model!r}: use one of {', '.join(NOISE_MODELS)}")
    if noise_sd is not None and not (math.isfinite(noise_sd) and noise_sd >= 0):
        raise ValueError(f"--noise_sd must be 0 or more (σ of log loss), got {noise_sd}")
    if not 0 <= shared_fraction < 1:
        raise ValueError(f"--shared_fraction must be in [0, 1) (the share of noise variance runs of a group share), got {shared_fraction}")


def method_option(settings: Settings) -> dict:
    """The bootstrap method as a keyword for `fit`, none where fit's own default is meant."""
    return {} if settings.bootstrap_method is None else {"bootstrap_method": settings.bootstrap_method}


# ----------------------------------------------------------------------------- the truth


def true_values(law: dict, budget: float | None) -> dict:
    """Every number a Chinchilla fit reports, as the true law has it (allocation at `budget` too)."""
    with np.errstate(divide="ignore"):  # E = 0 is a law too: log E = −inf
        theta = [np.log(law["E"]), np.log(law["A"]), np.log(law["B"]), law["alpha"], law["beta"]]
    values = _chinchilla_parameters(theta, budget)
    values.pop("budget", None)
    return values


def noise_labels(design: Design, model: str) -> np.ndarray:
    """An integer label per run; runs with one label share the noise's shared part."""
    if model == "iid":
        return np.arange(len(design.points))
    keys = design.groups if model == "group" else design.seeds
    return np.unique(np.asarray([str(key) for key in keys]), return_inverse=True)[1]


def shared_noise(rng: np.random.Generator, labels: np.ndarray, sd: float, shared_fraction: float) -> np.ndarray:
    """ε per run: σ·(√(1−F)·z_run + √F·z_group); the correlation within a group is F."""
    own = rng.standard_normal(labels.size)
    shared = rng.standard_normal(int(labels.max()) + 1)[labels]
    return sd * (math.sqrt(1.0 - shared_fraction) * own + math.sqrt(shared_fraction) * shared)


@dataclasses.dataclass(frozen=True)
class Plan:
    """Everything one study needs: the design, what it fits, the truth and the noise."""

    design: Design
    fitted: np.ndarray  # runs each study fits; the rest are held out
    law: dict  # E, A, B, alpha, beta
    truth: dict  # interval name → true value (`true_values`; stand-ins added by `fill_stand_in_truth`)
    truth_source: dict  # interval name → "law" or "noise-free fit"
    labels: np.ndarray
    noise: dict  # sd, source, model, shared_fraction
    settings: Settings

    def true_loss(self) -> np.ndarray:
        points = self.design.points
        return chinchilla_loss(points.non_embedding_params, points.tokens, *(self.law[key] for key in LAW_KEYS))


def design_law(design: Design, fitted: np.ndarray) -> dict:
    """The design's own Chinchilla fit (of the runs a study fits): the default truth."""
    result = fit_points(design.select(fitted).points, "chinchilla")
    return {key: float(result[key]) for key in LAW_KEYS}


def _noise(design: Design, settings: Settings, law: dict, true_loss: np.ndarray) -> dict:
    if settings.noise_sd is not None:
        found = {"sd": float(settings.noise_sd), "source": "given"}
    else:
        found = calibrate_design.seed_sd(design) or calibrate_design.residual_sd(design, np.log(true_loss))
    shared = 0.0 if settings.noise_model == "iid" else settings.shared_fraction
    return {**found, "model": settings.noise_model, "shared_fraction": shared}


def _noise_free_values(plan: Plan) -> dict:
    """The fit's own numbers on the true law's losses: the stand-in truth of an entry the law does
    not define (an estimator's target, e.g. a key a new method adds). {} where it cannot fit."""
    points = dataclasses.replace(plan.design.points, loss=plan.true_loss())
    try:
        result = fit_points(points.select(plan.fitted), plan.settings.law, budget=plan.settings.budget)
    except ValueError:
        return {}
    return {key: float(value) for key, value in result.items() if isinstance(value, (int, float)) and not isinstance(value, bool)}


def isoflop_truth(law: dict, points) -> dict:
    """Approach 2's a and b as the true law has them on the design: the slopes, in log–log over the
    design's budgets, of the law's compute-optimal N and D at each budget on the runs' own FLOPs
    per token (`allocation.allocation_at`), the basis Approach 2 measures along. {} without FLOPs."""
    line = flops_per_token_line(points.non_embedding_params, points.tokens, points.flops)
    labels = group_budgets(points.flops)
    budgets = [float(np.exp(np.mean(np.log(points.flops[labels == label])))) for label in np.unique(labels[labels >= 0])]
    if line is None or len(budgets) < 2:
        return {}
    return allocation_slopes(law, budgets, line)


def law_truth(plan: Plan) -> tuple[dict, dict]:
    """The true value of every number the law defines, and its source. The allocation at the budget
    is taken from the fit of the noise-free design where that fit recovers the law (α and β within
    1e-3), so it is solved on whatever compute basis the fit uses; else under C = 6ND."""
    budget = plan.settings.budget
    truth = true_values(plan.law, None)
    sources = dict.fromkeys(truth, "law")
    if plan.settings.law == "isoflop":  # the 6ND exponents are not what Approach 2 estimates on real FLOPs
        slopes = isoflop_truth(plan.law, plan.design.select(plan.fitted).points)
        truth.update(slopes)
        sources.update(dict.fromkeys(slopes, "law (runs' FLOPs)"))
    allocation = {key: value for key, value in true_values(plan.law, budget).items() if key not in truth}
    if not allocation:
        return truth, sources
    noise_free = _noise_free_values(plan)
    recovered = all(abs(noise_free.get(key, math.inf) - truth[key]) <= 1e-3 for key in ("alpha", "beta"))
    for key, value in allocation.items():
        truth[key] = noise_free[key] if recovered and key in noise_free else value
        sources[key] = "law" if recovered and key in noise_free else "law (C = 6ND)"
    return truth, sources


def prepare(design: Design, settings: Settings, law: dict | None = None, noise: dict | None = None,
            fitted: np.ndarray | None = None) -> Plan:
    """The plan of a calibration: held-out runs, the true law (given, else the design's fit), σ."""
    calibrate_design.check_design(design)
    if fitted is None:
        fitted = ~held_out_mask(design.points, settings.law) if settings.holdout else np.ones(len(design.points), dtype=bool)
    law = law or design_law(design, fitted)
    plan = Plan(design=design, fitted=fitted, law=law, truth={}, truth_source={}, labels=noise_labels(design, settings.noise_model),
                noise={}, settings=settings)
    noise = noise or _noise(design, settings, law, plan.true_loss())
    truth, sources = law_truth(plan)
    return dataclasses.replace(plan, truth=truth, truth_source=sources, noise=noise)


# ----------------------------------------------------------------------------- one study


def _is_interval(value) -> bool:
    return isinstance(value, (list, tuple)) and len(value) == 2 and all(isinstance(v, (int, float)) for v in value)


def holdout_intervals(rows: dict | list[dict], true_mean: np.ndarray) -> dict:
    """name → (low, high, truth) for every interval of every held-out row, against what it claims
    to hold: a prediction interval the run the study measured there, any other (the mean interval)
    the true mean loss there. `interval`, the older name of `mean_interval`, is counted once."""
    rows = [rows] if isinstance(rows, dict) else rows
    found = {}
    for index, row in enumerate(rows):
        where = "held-out" if len(rows) == 1 else f"held-out {index + 1}"
        for key, value in row.items():
            if not _is_interval(value) or (key == "interval" and "mean_interval" in row):
                continue
            if "prediction" in key:
                found[f"{where} run: {key}"] = (*value, float(row["measured_loss"]))
            else:
                sides = " (one-sided)" if row.get("mean_interval_one_sided") else ""
                found[f"{where} mean: {key}{sides}"] = (*value, float(true_mean[index]))
    return found


def simulated_points(plan: Plan, rng: np.random.Generator):
    """Every run of the design with a simulated loss: the true law's times exp(ε)."""
    design = plan.design
    loss = plan.true_loss() * np.exp(shared_noise(rng, plan.labels, plan.noise["sd"], plan.noise["shared_fraction"]))
    arrays = {name: getattr(design.points, name) for name in ("non_embedding_params", "tokens", "flops")}
    return build_points({**arrays, "loss": loss}, design.points.loss_name, design.points.names, design.groups)


def run_study(plan: Plan, seed: int, index: int) -> dict:
    """Simulate study `index` and fit it as `fit` would: {"intervals": name → (low, high, truth),
    "cpu_s": its CPU time}, or {"error": why} where the fit refused the simulated data. The truth
    of an entry the true law does not define is NaN here (`fill_stand_in_truth`)."""
    started = time.process_time()
    rng = np.random.default_rng([seed, index])
    settings = plan.settings
    points = simulated_points(plan, rng)
    try:
        result = fit_points(points.select(plan.fitted), settings.law, bootstrap=settings.bootstrap, seed=int(rng.integers(2**31)),
                            budget=settings.budget, **method_option(settings))
    except ValueError as error:
        return {"error": str(error)}
    flagged = result.get("interval_flags", {})  # counted apart: what such an interval holds is measured on its own
    intervals = {name + (FLAGGED if name in flagged else ""): (*bounds, plan.truth.get(name, math.nan)) for name, bounds in result.get("ci", {}).items()}
    if not plan.fitted.all():
        intervals.update(holdout_intervals(holdout_rows(points, ~plan.fitted, result), plan.true_loss()[~plan.fitted]))
    return {"intervals": {name: tuple(float(v) for v in value) for name, value in intervals.items()},
            "cpu_s": time.process_time() - started}


def fill_stand_in_truth(plan: Plan, records: list[dict]) -> tuple[Plan, list[dict]]:
    """Give entries without a true value the noise-free fit's (`_noise_free_values`); entries
    that has not either are dropped. Fits only where some entry needs it."""
    missing = {name for record in records for name, value in record.get("intervals", {}).items() if math.isnan(value[2])}
    if not missing:
        return plan, records
    stand_in = {name: value for name, value in _noise_free_values(plan).items() if name in missing}
    plan = dataclasses.replace(plan, truth={**plan.truth, **stand_in},
                               truth_source={**plan.truth_source, **dict.fromkeys(stand_in, "noise-free fit")})
    filled = []
    for record in records:
        intervals = {name: (low, high, stand_in.get(name, math.nan) if math.isnan(truth) else truth)
                     for name, (low, high, truth) in record.get("intervals", {}).items()}
        filled.append({**record, "intervals": {name: value for name, value in intervals.items() if not math.isnan(value[2])}}
                      if "intervals" in record else record)
    return plan, filled


def _single_threaded() -> None:
    """Pool workers: one XLA thread each, so two workers use the two cores without contention."""
    import os

    os.environ["XLA_FLAGS"] = f"{os.environ.get('XLA_FLAGS', '')} --xla_cpu_multi_thread_eigen=false intra_op_parallelism_threads=1".strip()


def simulate(plan, studies: int, seed: int = 0, *, processes: int = PROCESSES, progress: bool = True, study=None) -> list[dict]:
    """`study(plan, seed, index)` (default `run_study`; the two-recipe harness passes its own) for
    studies 0..K−1, in order, on `processes` spawned processes (1: here)."""
    from tqdm import tqdm

    study = study or run_study
    bar = tqdm(total=studies, desc="studies", unit="study", disable=not progress, leave=False)
    if processes <= 1:
        records = []
        for index in range(studies):
            records.append(study(plan, seed, index))
            bar.update()
        bar.close()
        return records
    context = multiprocessing.get_context("spawn")  # JAX's threads do not survive a fork
    with concurrent.futures.ProcessPoolExecutor(processes, mp_context=context, initializer=_single_threaded) as pool:
        futures = {pool.submit(study, plan, seed, index): index for index in range(studies)}
        records = [None] * studies
        for future in concurrent.futures.as_completed(futures):
            records[futures[future]] = future.result()
            bar.update()
    bar.close()
    return records


# ----------------------------------------------------------------------------- coverage


def coverage_table(records: list[dict], truth_source: dict | None = None) -> list[dict]:
    """Per interval: how many studies printed it, the share that covered the truth with its
    binomial standard error, and the median width. Intervals in first-printed order."""
    fitted = [record["intervals"] for record in records if "intervals" in record]
    names = list(dict.fromkeys(name for intervals in fitted for name in intervals))
    table = []
    for name in names:
        values = np.array([intervals[name] for intervals in fitted if name in intervals], dtype=float)
        low, high, truth = values.T
        covered = (low <= truth) & (truth <= high)
        share = float(covered.mean())
        with np.errstate(invalid="ignore"):
            width = float(np.nanmedian(high - low))
        table.append({"interval": name, "studies": int(covered.size), "coverage": share,
                      "se": math.sqrt(share * (1 - share) / covered.size), "median_width": width,
                      "median_truth": float(np.median(truth)), "truth": (truth_source or {}).get(name, "simulated run" if " run: " in name else "law")})
    return table


def calibrate(design: Design, settings: Settings, studies: int, *, seed: int = 0, law: dict | None = None,
              processes: int = PROCESSES, progress: bool = True) -> dict:
    """The coverage report of `settings`' intervals on `design` over `studies` simulated studies."""
    check_settings(settings, studies)
    plan = prepare(design, settings, law)
    records = simulate(plan, studies, seed, processes=processes, progress=progress)
    return report(*fill_stand_in_truth(plan, records), seed)


def report(plan: Plan, records: list[dict], seed: int) -> dict:
    """The JSON-ready report of finished studies."""
    errors = [record["error"] for record in records if "error" in record]
    return {"design": plan.design.source, "runs": len(plan.design.points), "fitted_runs": int(plan.fitted.sum()),
            **dataclasses.asdict(plan.settings), "studies": len(records), "seed": seed, "true_law": plan.law, "noise": plan.noise,
            "failed_studies": len(errors), "failures": sorted(set(errors))[:5],
            "cpu_s_per_study": float(np.mean([record["cpu_s"] for record in records if "cpu_s" in record] or [math.nan])),
            "coverage": coverage_table(records, plan.truth_source)}


def format_table(report: dict) -> str:
    """The coverage table as text: interval, coverage ± SE, median width, the true value."""
    lines = [f"{'interval':<34} {'coverage ± SE':>15} {'median width':>13} {'truth':>11}  (of {report['studies']} studies)"]
    for row in report["coverage"]:
        truth = f"{row['median_truth']:.4g}" + {"noise-free fit": "*", "law (C = 6ND)": "†", "law (runs' FLOPs)": "‡"}.get(row["truth"], "")
        lines.append(f"{row['interval']:<34} {row['coverage']:>7.3f} ± {row['se']:.3f} {row['median_width']:>13.4g} {truth:>11}")
    if any(row["truth"] == "noise-free fit" for row in report["coverage"]):
        lines.append("* no true value in the law: compared with the fit of the noise-free design")
    if any(row["truth"] == "law (runs' FLOPs)" for row in report["coverage"]):
        lines.append("‡ the true law's allocation slope over the design's budgets on the runs' FLOPs per token (what Approach 2 measures)")
    if any(row["truth"] == "law (C = 6ND)" for row in report["coverage"]):
        lines.append("† the noise-free fit did not recover the law: the true allocation is taken under C = 6ND")
    if report["failed_studies"]:
        lines.append(f"{report['failed_studies']} studies could not be fitted: {report['failures'][0]}")
    return "\n".join(lines)


# ----------------------------------------------------------------------------- design questions

VARIED = ("sizes", "seeds")


def design_question(design: Design, settings: Settings, vary: str, values: list[int], studies: int, *, seed: int = 0,
                    law: dict | None = None, parameter: str | None = None, target_width: float = 0.2,
                    processes: int = PROCESSES, progress: bool = True) -> dict:
    """How `parameter`'s interval (alpha; isoflop: a) narrows as the design gets more sizes or
    seeds: its coverage and median width on `calibrate_design.synthetic_design` for each value,
    with the truth and σ of `design`, and the first value whose median width is ≤ `target_width`."""
    check_settings(settings, studies)
    if vary not in VARIED:
        raise ValueError(f"--vary {vary!r}: vary one of {', '.join(VARIED)} (e.g. --vary sizes=3,4,6)")
    smallest = 2 if vary == "sizes" else 1
    if not values or min(values) < smallest or max(values) > MAX_VARIED:
        raise ValueError(f"--vary {vary} needs whole numbers from {smallest} to {MAX_VARIED:,}, got {values}")
    parameter = parameter or ("alpha" if settings.law == "chinchilla" else "a")
    base = prepare(design, settings, law)
    rows = []
    for value in values:
        changed, fitted = calibrate_design.synthetic_design(design, base.fitted, **{vary: value})
        plan = prepare(changed, settings, base.law, base.noise, fitted)
        records = simulate(plan, studies, seed, processes=processes, progress=progress)
        table = {row["interval"]: row for row in coverage_table(fill_stand_in_truth(plan, records)[1])}
        row = table.get(parameter, {"studies": 0, "coverage": math.nan, "se": math.nan, "median_width": math.nan})
        rows.append({vary: value, "runs": int(fitted.sum()), **{key: row[key] for key in ("studies", "coverage", "se", "median_width")}})
    answer = next((row[vary] for row in rows if row["median_width"] <= target_width), None)
    return {"design": design.source, "vary": vary, "parameter": parameter, "target_width": target_width, "studies": studies,
            "seed": seed, **dataclasses.asdict(settings), "true_law": base.law, "noise": base.noise, "rows": rows, "answer": answer}


def format_question(answer: dict) -> str:
    """The design question's table and its one-line answer."""
    vary, name = answer["vary"], answer["parameter"]
    lines = [f"{vary:>6} {'fitted runs':>12} {name + ' coverage ± SE':>22} {'median width':>13}"]
    lines += [f"{row[vary]:>6} {row['runs']:>12} {row['coverage']:>14.3f} ± {row['se']:.3f} {row['median_width']:>13.4g}" for row in answer["rows"]]
    if answer["answer"] is None:
        lines.append(f"none of these {vary} gives {name}'s interval ≤ {answer['target_width']:g} wide (median)")
    else:
        lines.append(f"{answer['answer']} {vary} give {name}'s interval ≤ {answer['target_width']:g} wide (median)")
    return "\n".join(lines)
