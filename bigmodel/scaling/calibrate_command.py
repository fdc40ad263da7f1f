"""`python -m bigmodel calibrate`: measure how often a fit's intervals hold the truth on a design.

    python -m bigmodel calibrate experiments/demo_results --bootstrap_method residuals \\
        --holdout largest --budget 1e15 --studies 200 --out calibration.json

prints the coverage table (`calibrate.format_table`) and writes the report as JSON. With
`--vary sizes=3,4,6` (or `seeds=1,2,4`) it answers a design question instead: alpha's coverage
and median width on the design with that many sizes (seeds), and which is the first to give an
interval no wider than `--target_width`. With `--versus B` it calibrates `fit DESIGN --versus B`
(`calibrate_versus.py`): the compute multiplier's coverage at each `--budget`, then every interval
the two-recipe fit prints. Bad input is one `error:` line and exit code 2.

The simulation loads JAX, so it is imported only when the command runs.
"""

from __future__ import annotations

import argparse
import math
from pathlib import Path

from bigmodel import exit_codes, files
from bigmodel.arguments import bad_input, bootstrap_replicates, int_in, path_text, positive_number, seed
from bigmodel.scaling.noise import DEFAULT_METHOD

CALIBRATE_HELP = "simulate K studies of a design and measure the coverage of every interval fit prints"
TRUTH_KEYS = ("E", "A", "B", "alpha", "beta")
MAX_PROCESSES = 256  # each worker loads JAX: more than the cores only thrashes


def add_calibrate_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("design", type=path_text, help="sweep directory (or its runs.csv) or CSV with params,tokens,loss[,flops][,seed][,group] rows")
    parser.add_argument("--law", default="chinchilla", help="the fit to calibrate: chinchilla (Approach 3) or isoflop (Approach 2)")
    parser.add_argument("--studies", type=int, default=200, metavar="K", help="simulated studies (coverage SE ≈ 0.015 at K = 200)")
    parser.add_argument("--bootstrap", type=bootstrap_replicates(0), default=200, metavar="R", help="bootstrap replicates of each study's fit, as fit --bootstrap")
    parser.add_argument("--bootstrap_method", default=DEFAULT_METHOD, help="as fit --bootstrap_method (default: fit's default): the method whose intervals are measured")
    parser.add_argument("--budget", type=positive_number, action="append", default=None, metavar="C",
                        help="chinchilla: also measure N_opt, D_opt, loss_opt at C FLOPs; with --versus: where to measure the "
                        "multipliers and the loss gap (repeatable)")
    parser.add_argument("--holdout", default=None, help="'largest': hold out the largest runs as fit does and measure their intervals")
    parser.add_argument("--truth", default=None, metavar="E,A,B,alpha,beta", help="the true law (default: the design's own Chinchilla fit)")
    parser.add_argument("--noise", default="group", help="what shares the noise's shared part: group (branches of one stable run; "
                        "a CSV's group column), seed (runs of one seed) or iid (nothing)")
    parser.add_argument("--noise_sd", type=float, default=None, metavar="S",
                        help="σ of a run's log loss (default: from the design's seed replicates, else from the fit's residuals)")
    parser.add_argument("--shared_fraction", type=float, default=0.5, metavar="F",
                        help="share of the noise variance runs of one group share (their correlation), in [0, 1)")
    parser.add_argument("--seed", type=seed, default=0, help="seed of the simulation (the report is a function of it)")
    parser.add_argument("--processes", type=int_in(1, MAX_PROCESSES, "one per core"), default=2, help="worker processes (one per core)")
    parser.add_argument("--vary", default=None, metavar="sizes=3,4,6|seeds=1,2,4",
                        help="design question: alpha's (isoflop: a's) coverage and median width with this many sizes or seeds")
    parser.add_argument("--target_width", type=positive_number, default=0.2, help="with --vary: the median interval width wanted")
    parser.add_argument("--versus", type=path_text, default=None, metavar="B", help="calibrate `fit DESIGN --versus B`: simulate both "
                        "recipes (B: a sweep directory, a CSV, or REGISTRY:'PATTERN') from their joint fit and measure the compute "
                        "multiplier's interval at each --budget (--law chinchilla or power)")
    parser.add_argument("--shared_exponents", action="store_true", help="--versus: fit one α and β (one γ) for both recipes, as fit does with it")
    parser.add_argument("--out", type=path_text, default=None, help="path of the JSON report to write")


def parse_truth(text: str) -> dict:
    """`E,A,B,alpha,beta` → the law; E may be 0, the rest must be positive."""
    try:
        values = [float(part) for part in text.split(",")]
    except ValueError:
        values = []
    if len(values) != len(TRUTH_KEYS) or not all(math.isfinite(value) for value in values) or values[0] < 0 or min(values[1:]) <= 0:
        raise ValueError(f"--truth {text!r}: give five numbers E,A,B,alpha,beta (E ≥ 0, the rest > 0), e.g. 1.7,400,410,0.34,0.28")
    return dict(zip(TRUTH_KEYS, values))


def parse_vary(text: str) -> tuple[str, list[int]]:
    """`sizes=3,4,6` → ("sizes", [3, 4, 6])."""
    name, _, values = text.partition("=")
    try:
        numbers = [int(value) for value in values.split(",")]
    except ValueError:
        numbers = []
    if not numbers:
        raise ValueError(f"--vary {text!r}: write sizes=3,4,6 or seeds=1,2,4 (whole numbers)")
    return name, numbers


def calibrate_command(args: argparse.Namespace) -> int:
    """Simulate, print the table (or the design question's), write `--out` atomically."""
    out = Path(args.out) if args.out else None
    try:
        if out is not None and out.is_dir():
            raise ValueError(f"--out {out} is a directory: pass the path of the JSON file to write")
        result, text = versus_calibration(args) if args.versus is not None else one_law_calibration(args)
        if out is not None:
            files.write_json_atomic(out, result)
    except (ValueError, OSError) as error:
        return bad_input(error)
    print(text)
    return exit_codes.OK


def one_law_calibration(args: argparse.Namespace) -> tuple[dict, str]:
    """`calibrate DESIGN`: one law's intervals, or a design question with `--vary`; (report, its text)."""
    if args.shared_exponents:
        raise ValueError("--shared_exponents calibrates two recipes: add --versus B")
    if args.budget and len(args.budget) > 1:
        raise ValueError(f"{len(args.budget)} --budget values: one law takes one budget; several calibrate two recipes with --versus B")
    from bigmodel.scaling import calibrate
    from bigmodel.scaling.calibrate_design import load_design

    settings = calibrate.Settings(law=args.law, bootstrap=args.bootstrap, bootstrap_method=args.bootstrap_method,
                                  budget=args.budget[0] if args.budget else None, holdout=args.holdout, noise_model=args.noise,
                                  shared_fraction=args.shared_fraction, noise_sd=args.noise_sd)
    calibrate.check_settings(settings, args.studies)
    law = parse_truth(args.truth) if args.truth else None
    vary = parse_vary(args.vary) if args.vary else None
    design = load_design(args.design)
    options = {"seed": args.seed, "law": law, "processes": args.processes}
    if vary:
        result = calibrate.design_question(design, settings, *vary, args.studies, target_width=args.target_width, **options)
        return result, calibrate.format_question(result)
    result = calibrate.calibrate(design, settings, args.studies, **options)
    return result, calibrate.format_table(result)


def versus_calibration(args: argparse.Namespace) -> tuple[dict, str]:
    """`calibrate A --versus B`: the two-recipe harness on the user's designs; (report, its text)."""
    unused = [flag for flag, value in (("--holdout", args.holdout), ("--truth", args.truth), ("--vary", args.vary)) if value]
    if unused:
        raise ValueError(f"{', '.join(unused)} calibrate one law: drop {'them' if len(unused) > 1 else 'it'} with --versus "
                         "(the truth is the recipes' joint fit)")
    from bigmodel.scaling import calibrate_versus

    budgets = args.budget or []
    calibrate_versus.check_versus_settings(args.law, budgets, args.studies, args.bootstrap, args.bootstrap_method, args.noise,
                                           args.noise_sd, args.shared_fraction)
    designs = calibrate_versus.load_recipe_designs(args.design, args.versus)
    plan = calibrate_versus.prepare_versus(*designs, budgets, law=args.law, noise_sd=args.noise_sd, noise_model=args.noise,
                                           shared_fraction=args.shared_fraction, bootstrap=args.bootstrap, method=args.bootstrap_method,
                                           shared_exponents=args.shared_exponents)
    report = calibrate_versus.calibrate_versus(plan, args.studies, seed=args.seed, processes=args.processes)
    report["designs"] = {"A": args.design, "B": args.versus}
    return report, calibrate_versus.format_versus(report)
