"""Calibration of `fit A --versus B`: do the compute multiplier's 95% intervals hold the truth?

Two designs (recipe A's runs and recipe B's: sweep directories, their runs.csv, or CSVs;
`calibrate_design.load_design`) and two true laws with one E (default: the joint fit of the
designs' own measured losses, as `fit --versus` finds it). Each simulated study draws both
recipes' losses as the true law's times exp(ε), ε as in `calibrate.py` (a per-run part and a part
shared by a group, e.g. one stable run's branches; groups stay within a recipe), and fits them
exactly as `fit --versus` does (`versus_input.fit_versus_points`, the same bootstrap). Measured:
at every budget the compute, parameter and data multipliers and the loss gap against the true
laws' values (`versus.comparison` on the same compute basis), and each law's E and exponents.
Coverage and median widths come from `calibrate.coverage_table`; the studies run on
`calibrate.simulate`'s process pool, each a function of (seed, index) alone.
"""

from __future__ import annotations

import dataclasses
import math
import time
from pathlib import Path

import numpy as np

from bigmodel.scaling import calibrate_design, versus
from bigmodel.scaling.calibrate import (
    PROCESSES,
    check_simulation,
    coverage_table,
    format_table,
    noise_labels,
    shared_noise,
    simulate,
)
from bigmodel.scaling.calibrate_design import (
    Design,
    build_points,
    load_design,
    synthetic_design,
)
from bigmodel.scaling.laws import chinchilla_loss, power_law
from bigmodel.scaling.points import Points
from bigmodel.scaling.versus_input import (
    check_same_data,
    check_versus_options,
    fit_versus_points,
    load_recipe,
    on_one_basis,
    recipe_lines,
)

NUMBERS = ("compute_multiplier", "parameter_multiplier", "data_multiplier", "loss_gap")
MAX_SETTLE_SEEDS = 64  # a `to_settle` past this many seeds per point is counted, not simulated
LAW_KEYS = {"chinchilla": ("E", "A", "B", "alpha", "beta"), "power": ("E", "A", "alpha")}


@dataclasses.dataclass(frozen=True)
class VersusPlan:
    """Both designs on one compute basis, the true laws and their numbers, the noise, how to fit."""

    points: dict  # side → Points (losses replaced in simulation)
    groups: dict  # side → group labels per run (what the fit sees)
    labels: dict  # side → integer noise labels (what shares the noise's shared part)
    laws: dict  # side → true law
    truth: dict  # interval name → true value
    noise: dict  # sd, source, model, shared_fraction
    law: str
    budgets: tuple
    bootstrap: int
    method: str
    shared_exponents: bool

    def true_loss(self, side: str) -> np.ndarray:
        points, law = self.points[side], self.laws[side]
        if self.law == "power":
            return power_law(points.compute(), law["E"], law["A"], law["alpha"])
        return chinchilla_loss(points.non_embedding_params, points.tokens, *(law[key] for key in LAW_KEYS["chinchilla"]))


def check_versus_settings(law: str, budgets, studies: int, bootstrap: int, method: str, noise_model: str, noise_sd: float | None,
                          shared_fraction: float) -> None:
    """Refuse what `calibrate A --versus B` cannot measure, before any design is read."""
    if law not in versus.LAWS:
        raise ValueError(f"calibrate --versus measures laws of compute: use --law chinchilla, or --law power (the frontier "
                         f"L(C) = E + A·C^-γ), got --law {law}")
    check_versus_options(law, "flops", budgets, bootstrap, method, None, None, None, ())
    check_simulation(studies, bootstrap, noise_model, noise_sd, shared_fraction)


def load_recipe_designs(spec_a: str, spec_b: str) -> tuple[Design, Design]:
    """Both recipes' designs, read as `fit A --versus B` reads them (a sweep directory, a CSV, or
    REGISTRY:'PATTERN', whose matching runs keep their groups and seeds) and checked alike."""
    recipes = [load_recipe(spec, side) for spec, side in ((spec_a, "A"), (spec_b, "B"))]
    check_same_data(*recipes)
    designs = []
    for recipe in recipes:
        if recipe.directory is None or Path(recipe.spec).exists():
            designs.append(load_design(recipe.spec))
            continue
        whole, chosen = load_design(recipe.directory), set(recipe.points.names)
        designs.append(dataclasses.replace(whole.select(np.array([name in chosen for name in whole.points.names])), source=recipe.spec))
    return designs[0], designs[1]


def interval_name(key: str, budget: float) -> str:
    return f"{key} at {budget:.3g}"


def true_numbers(laws: dict, law: str, points: dict, budgets) -> dict:
    """Every number whose interval is measured, as the true laws have it."""
    compute = np.concatenate([p.compute() for p in points.values()])
    lines = recipe_lines(points["A"], points["B"], law)
    numbers = versus.comparison(laws, law, lines, list(budgets), versus.search_range(compute, list(budgets)))
    truth = {interval_name(key, budget): float(numbers[key][index]) for index, budget in enumerate(budgets) for key in NUMBERS}
    truth.update({f"{side}.{key}": float(laws[side][key]) for side in versus.SIDES for key in LAW_KEYS[law] if key != "A" and key != "B"})
    return truth


def _pooled_sd(designs: list[Design]) -> dict | None:
    found = [calibrate_design.seed_sd(design) for design in designs]
    found = [entry for entry in found if entry]
    if not found:
        return None
    return {"sd": float(np.sqrt(np.mean([entry["sd"] ** 2 for entry in found]))), "source": "; ".join(entry["source"] for entry in found)}


def prepare_versus(design_a: Design, design_b: Design, budgets, *, law: str = "chinchilla", laws: dict | None = None,
                   noise_sd: float | None = None, noise_model: str = "group", shared_fraction: float = 0.5, bootstrap: int = 200,
                   method: str = "noise", shared_exponents: bool = False) -> VersusPlan:
    """The plan: both designs on one basis, the true laws (given, else the designs' joint fit), σ
    (given, else the designs' seed replicates pooled, else the true laws' residuals)."""
    if law == "chinchilla":  # the frontier law needs only compute values (fit_versus_points checks them)
        for design in (design_a, design_b):
            calibrate_design.check_design(design)
    points_a, points_b, _ = on_one_basis(design_a.points, design_b.points, "flops")
    points = {"A": points_a, "B": points_b}
    if laws is None:
        fitted = fit_versus_points(points_a, points_b, law, list(budgets), shared_exponents=shared_exponents)["laws"]
        laws = {side: {key: float(fitted[side][key]) for key in LAW_KEYS[law]} for side in versus.SIDES}
    plan = VersusPlan(points=points, groups={"A": design_a.groups, "B": design_b.groups},
                      labels={"A": noise_labels(design_a, noise_model), "B": noise_labels(design_b, noise_model)}, laws=laws,
                      truth=true_numbers(laws, law, points, budgets), noise={}, law=law, budgets=tuple(budgets), bootstrap=bootstrap,
                      method=method, shared_exponents=shared_exponents)
    if noise_sd is not None:
        found = {"sd": float(noise_sd), "source": "given"}
    else:
        found = _pooled_sd([design_a, design_b]) or _residual_sd(plan)
    shared = 0.0 if noise_model == "iid" else shared_fraction
    return dataclasses.replace(plan, noise={**found, "model": noise_model, "shared_fraction": shared})


def _residual_sd(plan: VersusPlan) -> dict:
    residuals = np.concatenate([np.log(plan.points[side].loss) - np.log(plan.true_loss(side)) for side in versus.SIDES])
    freedom = max(residuals.size - 2 * len(LAW_KEYS[plan.law]) + 1, 1)
    return {"sd": float(np.sqrt(np.sum(residuals**2) / freedom)), "source": f"residuals of the true laws ({freedom} degrees of freedom)"}


def simulated_recipe(plan: VersusPlan, side: str, rng: np.random.Generator) -> Points:
    points = plan.points[side]
    loss = plan.true_loss(side) * np.exp(shared_noise(rng, plan.labels[side], plan.noise["sd"], plan.noise["shared_fraction"]))
    arrays = {name: getattr(points, name) for name in ("non_embedding_params", "tokens", "flops")}
    return build_points({**arrays, "loss": loss}, points.loss_name, points.names, plan.groups[side])


def run_versus_study(plan: VersusPlan, seed: int, index: int) -> dict:
    """Simulate study `index` and fit it as `fit --versus` would: name → (low, high, truth), CPU s."""
    started = time.process_time()
    rng = np.random.default_rng([seed, index])
    points_a, points_b = (simulated_recipe(plan, side, rng) for side in versus.SIDES)
    try:
        result = fit_versus_points(points_a, points_b, plan.law, list(plan.budgets), bootstrap=plan.bootstrap,
                                   seed=int(rng.integers(2**31)), bootstrap_method=plan.method, shared_exponents=plan.shared_exponents)
    except ValueError as error:
        return {"error": str(error)}
    intervals = {}
    for row in result["budgets"]:
        for key in NUMBERS:
            entry = row.get(key) or {}
            name = interval_name(key, row["budget"])
            if entry.get("interval") and None not in entry["interval"] and name in plan.truth:
                intervals[name] = (*entry["interval"], plan.truth[name])
    for side in versus.SIDES:
        for key, bounds in (result["laws"][side].get("ci") or {}).items():
            if f"{side}.{key}" in plan.truth:
                intervals[f"{side}.{key}"] = (*bounds, plan.truth[f"{side}.{key}"])
    return {"intervals": {name: tuple(float(v) for v in value) for name, value in intervals.items()}, "cpu_s": time.process_time() - started}


def calibrate_versus(plan: VersusPlan, studies: int, *, seed: int = 0, processes: int = PROCESSES, progress: bool = True) -> dict:
    """The coverage report of `fit --versus`'s intervals on the plan's two designs over `studies` studies."""
    if studies <= 0:
        raise ValueError(f"--studies must be a positive number of simulated studies, got {studies}")
    records = simulate(plan, studies, seed, processes=processes, progress=progress, study=run_versus_study)
    errors = [record["error"] for record in records if "error" in record]
    cpu = [record["cpu_s"] for record in records if "cpu_s" in record]
    return {"law": plan.law, "runs": {side: len(plan.points[side]) for side in versus.SIDES}, "budgets": list(plan.budgets),
            "bootstrap": plan.bootstrap, "bootstrap_method": plan.method, "shared_exponents": plan.shared_exponents,
            "studies": studies, "seed": seed, "true_laws": plan.laws, "noise": plan.noise, "failed_studies": len(errors),
            "failures": sorted(set(errors))[:5], "cpu_s_per_study": float(np.mean(cpu)) if cpu else math.nan,
            "coverage": coverage_table(records)}


def format_versus(report: dict) -> str:
    """The compute multiplier's coverage per budget (± its binomial SE, median width, truth), then
    every measured interval as `calibrate` prints one law's."""
    rows = {row["interval"]: row for row in report["coverage"]}
    noise = report["noise"]
    lines = [(f"compute multiplier's 95% interval over {report['studies']} simulated pairs of studies (A {report['runs']['A']} runs, "
              f"B {report['runs']['B']}; {report['law']}; σ {noise['sd']:.3g} of log loss, {noise['model']} noise, shared "
              f"{noise['shared_fraction']:g}; {report['cpu_s_per_study']:.1f} CPU s a study)"),
             f"{'budget (FLOPs)':>15} {'coverage ± SE':>15} {'median width':>13} {'true multiplier':>16}"]
    for budget in report["budgets"]:
        row = rows.get(interval_name("compute_multiplier", budget))
        if row is None:
            lines.append(f"{budget:>15.3g} {'no study printed an interval':>46}")
            continue
        lines.append(f"{budget:>15.3g} {row['coverage']:>7.3f} ± {row['se']:.3f} {row['median_width']:>13.4g} {row['median_truth']:>16.4g}"
                     + (f"  (of {row['studies']} studies)" if row["studies"] != report["studies"] else ""))
    return "\n".join(lines) + "\n\n" + format_table(report)


# ----------------------------------------------------------------------------- does to_settle settle it?


@dataclasses.dataclass(frozen=True)
class SettlePlan:
    """The design as it is (`plan`), its two designs to repeat at more seeds, the margin judged."""

    plan: VersusPlan
    designs: dict  # side → Design
    margin: dict  # versus_gate.parse_margin


def _verdicts(plan: VersusPlan, rng: np.random.Generator, margin: dict) -> list[dict]:
    """Simulate one study of the plan, fit it as `fit --versus --margin` does: the margin's rows."""
    points_a, points_b = (simulated_recipe(plan, side, rng) for side in versus.SIDES)
    result = fit_versus_points(points_a, points_b, plan.law, list(plan.budgets), bootstrap=plan.bootstrap, seed=int(rng.integers(2**31)),
                               bootstrap_method=plan.method, shared_exponents=plan.shared_exponents, margin=margin)
    return result["margin"]["budgets"]


def more_seeds(settle: SettlePlan, seeds: int, budget: float) -> VersusPlan:
    """The plan's designs with every (N, D) at `seeds` seeds (each seed its own stable run), the same truth and noise."""
    plan = settle.plan
    designs = [synthetic_design(settle.designs[side], np.ones(len(settle.designs[side].points), dtype=bool), seeds=seeds)[0]
               for side in versus.SIDES]
    return prepare_versus(*designs, (budget,), law=plan.law, laws=plan.laws, noise_sd=plan.noise["sd"], noise_model=plan.noise["model"],
                          shared_fraction=plan.noise["shared_fraction"], bootstrap=plan.bootstrap, method=plan.method,
                          shared_exponents=plan.shared_exponents)


def settle_study(settle: SettlePlan, seed: int, index: int) -> dict:
    """Study `index` of the design as it is, judged against the margin; at each undecided budget
    whose `to_settle` names seeds per point, a fresh study at that many seeds, judged again."""
    started = time.process_time()
    rng = np.random.default_rng([seed, index])
    try:
        rows = []
        for budget, row in zip(settle.plan.budgets, _verdicts(settle.plan, rng, settle.margin)):
            entry = {"budget": budget, "verdict": row["verdict"], "seeds_per_point": (row.get("to_settle") or {}).get("seeds_per_point")}
            if entry["seeds_per_point"] and entry["seeds_per_point"] <= MAX_SETTLE_SEEDS:
                entry["verdict_after"] = _verdicts(more_seeds(settle, entry["seeds_per_point"], budget), rng, settle.margin)[0]["verdict"]
            rows.append(entry)
    except ValueError as error:
        return {"error": str(error)}
    return {"budgets": rows, "cpu_s": time.process_time() - started}


def settle_report(settle: SettlePlan, studies: int, *, seed: int = 0, processes: int = PROCESSES, progress: bool = True) -> dict:
    """Per budget: how many studies were undecided, and of those whose suggested seeds were
    simulated, the share that the new study decided (and decided right: adopt where the true
    multiplier clears the margin)."""
    records = simulate(settle, studies, seed, processes=processes, progress=progress, study=settle_study)
    fitted = [record for record in records if "budgets" in record]
    rows = []
    for index, budget in enumerate(settle.plan.budgets):
        truth = settle.plan.truth[interval_name(settle.margin["kind"], budget)]
        right = "adopt" if truth > settle.margin["value"] else "reject"
        entries = [record["budgets"][index] for record in fitted]
        undecided = [entry for entry in entries if entry["verdict"] == "undecided"]
        tried = [entry for entry in undecided if "verdict_after" in entry]
        settled = [entry for entry in tried if entry["verdict_after"] != "undecided"]
        share = len(settled) / len(tried) if tried else math.nan
        rows.append({"budget": budget, "truth": truth, "right_verdict": right, "studies": len(entries), "undecided": len(undecided),
                     "suggested_seeds": sorted(entry["seeds_per_point"] for entry in undecided if entry["seeds_per_point"]),
                     "tried": len(tried), "settled": len(settled), "share_settled": share,
                     "se": math.sqrt(share * (1 - share) / len(tried)) if tried else math.nan,
                     "settled_right": sum(entry["verdict_after"] == right for entry in settled)})
    return {"margin": settle.margin["text"], "studies": studies, "seed": seed, "bootstrap": settle.plan.bootstrap,
            "failed_studies": len(records) - len(fitted), "cpu_s_per_study": float(np.mean([r["cpu_s"] for r in fitted])) if fitted else math.nan,
            "budgets": rows}
