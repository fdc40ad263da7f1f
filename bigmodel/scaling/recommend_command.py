"""`python -m bigmodel recommend FIT_JSON --budget C`: what a Chinchilla fit says to train at C.

Prints the compute-optimal N and D at C with their intervals (on the fit's compute basis, named),
the preset-family shape nearest N with its own N and the D that then spends C, the learning rate
and batch (from `--study`'s rules, from a `--hyperparams` fit's laws, or neither: said), and the
loss the law predicts for that run with its prediction interval (`recommend.py`). `--json`: one
JSON object. A missing or unreadable fit.json, a fit without a Chinchilla law, or a budget outside
(0, ∞) is one `error:` line and exit 2.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from bigmodel import exit_codes, files
from bigmodel.arguments import bad_input
from bigmodel.config import ConfigError
from bigmodel.scaling.recommend import check_budget, check_fit, describe, recommend, with_hyperparameters

RECOMMEND_HELP = "what a chinchilla fit.json recommends at a compute budget: N, D, shape, lr, batch, predicted loss"


def add_recommend_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("fit", metavar="FIT_JSON", help="a fit.json with a chinchilla law (python -m bigmodel fit DIR --law chinchilla "
                        "--bootstrap 200, or a sweep's)")
    parser.add_argument("--budget", type=float, required=True, metavar="C", help="training compute in FLOPs, on the fit's compute basis")
    parser.add_argument("--study", default=None, metavar="EXPERIMENT",
                        help="experiments/NAME.py[:ARG]: its config's FLOPs per token set D, its rules the learning rate and batch")
    parser.add_argument("--hyperparams", default=None, metavar="FIT_JSON",
                        help="a --law hyperparams fit.json: the learning rate and batch tokens of its fitted laws at C")
    parser.add_argument("--json", action="store_true", help="print one JSON object")


def load_fit(path: str) -> dict:
    if not Path(path).is_file():
        raise ValueError(f"{path} does not exist: pass the fit.json a sweep or python -m bigmodel fit DIR --law chinchilla --out FILE wrote")
    try:
        fit = files.read_json(path)
    except (ValueError, UnicodeDecodeError):
        fit = None
    return check_fit(fit, path)


def fitted_hyperparameters(recommendation: dict, path: str, budget: float) -> dict:
    """The learning rate and batch tokens of a hyperparams fit's laws at C."""
    from bigmodel.scaling.hyperparams import fitted_rule

    rule = fitted_rule(path)
    batch = {"tokens": rule.batch_tokens(budget)} if rule.k_batch is not None else None
    low, high = rule.flops_range
    where = "inside" if low <= budget <= high else "extrapolated beyond"
    return with_hyperparameters(recommendation, rule.learning_rate(budget), batch,
                                f"fitted hyperparameter laws of {path} ({where} their {low:.3g}–{high:.3g} FLOPs)")


def study_hyperparameters(recommendation: dict, fit: dict, experiment: str, budget: float) -> dict:
    """The run the study would train at C: its D and the learning rate and batch its rules choose."""
    from bigmodel.scaling.ladder import study_recommendation
    from bigmodel.scaling.runner import load_study

    chosen, _ = study_recommendation(load_study(experiment), fit, 1, budget)
    chosen.pop("name")
    hyper = chosen["hyperparameters"]
    return {**chosen, "hyperparameters": {**hyper, "source": f"{hyper['source']} ({experiment})"}}


def recommend_command(args: argparse.Namespace) -> int:
    try:
        if args.study and args.hyperparams:
            raise ValueError("give --study (its rules choose the lr and batch) or --hyperparams (fitted laws), not both")
        budget = check_budget(args.budget)
        fit = load_fit(args.fit)
        result = recommend(fit, budget)
        if args.study:
            result = study_hyperparameters(result, fit, args.study, budget)
        elif args.hyperparams:
            result = fitted_hyperparameters(result, args.hyperparams, budget)
        else:
            result = with_hyperparameters(result, None, None, "not chosen: pass --study EXPERIMENT or --hyperparams FIT_JSON")
    except (ValueError, ConfigError) as error:
        return bad_input(error)
    print(json.dumps(result, indent=1) if args.json else "\n".join(describe(result)))
    return exit_codes.OK
