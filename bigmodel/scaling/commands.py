"""`python -m bigmodel fit` and `python -m bigmodel plot`: a scaling law and the figures.

`tools/fit_scaling.py` and `tools/plot_scaling.py` are the same commands under their old names
(`fit_main`, `plot_main`). Both read a sweep directory (its runs.csv) or a CSV of the user's
own runs (`params,tokens,loss[,flops]`). Every bad input (a missing or malformed file, NaN or
negative cells, too few points, an unknown law, an --out that cannot be written) is one
`error:` line on stderr and exit code 2, with nothing written.

The fitting and plotting modules load JAX and matplotlib, so they are imported only when a
command runs: `python -m bigmodel --help` stays fast.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from bigmodel import exit_codes, files
from bigmodel.arguments import bad_input, bootstrap_replicates, path_text, positive_number, seed, tool_main

INPUT_HELP = ("sweep directory (with runs.csv) or CSV with columns params,tokens,loss[,flops] "
              "(--law hyperparams: flops,learning_rate,batch_size,seq_len,loss)")
FIT_HELP = "fit a scaling law (power, chinchilla, isoflop, hyperparams) to a sweep or a CSV; print it, write JSON"
PLOT_HELP = "draw the scaling plots of a sweep or a CSV (PNG + SVG), with the fit it is given"


def add_fit_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("input", type=path_text, help=INPUT_HELP)
    parser.add_argument("--law", required=True, help="power (L = E + A·X^-α), chinchilla (Approach 3, ~10 s), isoflop (Approach 2) or "
                        "hyperparams (η_opt(C), B_opt(C) from lr × batch-size sweeps at several budgets)")
    parser.add_argument("--x", default="non_embedding_params",
                        help="power law's variable: non_embedding_params (N; 'params' means the same) or flops")
    parser.add_argument("--bootstrap", type=bootstrap_replicates(0), default=0, metavar="K", help="refit K resamples: 95%% intervals and standard errors")
    parser.add_argument("--bootstrap_method", default="noise", help="noise (default: keep the design, redraw each run's noise and "
                        "one shared draw per stable run from the noise model), wild (Rademacher signs on the scaled residuals; "
                        "chinchilla, power), points (resample runs, Hoffmann et al.) or residuals (raw residuals, the old design bootstrap)")
    parser.add_argument("--seed", type=seed, default=0, help="seed of the bootstrap resampling")
    parser.add_argument("--budget", type=positive_number, action="append", default=None, metavar="C",
                        help="chinchilla: N_opt, D_opt, D/N and the loss there at a budget of C FLOPs (on --compute_basis; N non-embedding); "
                        "with --versus: where to compare the recipes (repeatable)")
    parser.add_argument("--compute_basis", default="flops", help="chinchilla --budget: flops (allocate on the runs' own FLOPs per "
                        "token, where every run has FLOPs) or 6ND (Chinchilla's C = 6·N·D)")
    parser.add_argument("--count", default="non_embedding", help="what N counts: non_embedding (default, Kaplan's), total "
                        "(every parameter: embeddings and head) or flops (C/6D: the head's and attention's matmuls too); "
                        "fit.json's n_definition names it")
    parser.add_argument("--unique_tokens", type=float, default=None, metavar="T", help="chinchilla: the training corpus's size "
                        "in tokens (default: what a sweep's runs recorded); fit.json flags a D_opt beyond it (repeated data)")
    parser.add_argument("--holdout", default=None,
                        help="'largest': fit without the largest runs (power: largest N; chinchilla: largest-compute N, D), then predict them")
    parser.add_argument("--predict", action="append", default=None, metavar="N,D",
                        help="chinchilla or power: the law's loss at N non-embedding params and D tokens, with its mean and "
                        "prediction (one new run) intervals (repeatable)")
    parser.add_argument("--versus", type=path_text, default=None, metavar="B", help="compare INPUT (recipe A) with recipe B (a sweep directory, a CSV, "
                        "or REGISTRY:'PATTERN'): both fitted with one shared E; fit.json's versus gives the compute multiplier at each "
                        "--budget, the crossover and the loss gap with intervals; also draws OUT's _versus.png (--law chinchilla, "
                        "or power --x flops)")
    parser.add_argument("--shared_exponents", action="store_true", help="--versus: one α and β (one γ) for both recipes, not only one E")
    parser.add_argument("--floor", type=positive_number, default=None, metavar="E", help="--versus: pin the shared entropy floor E at this loss")
    parser.add_argument("--margin", default=None, metavar="M", help="--versus: what B must clear to be adopted, a compute multiplier "
                        "(1.1x) or a loss gap (0.01nats); one-sided 95%% verdict per budget and overall (needs --bootstrap)")
    parser.add_argument("--out", type=path_text, required=True, help="path of the JSON to write")


def add_plot_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("input", type=path_text, help=INPUT_HELP)
    parser.add_argument("--out", type=path_text, required=True, help="directory for the PNG and SVG files")
    parser.add_argument("--fit", type=path_text, default=None, help="fit.json to draw (default: the sweep's fit.json, else fit here)")


def fit_command(args: argparse.Namespace) -> int:
    """Fit, write `--out` atomically, print the law's one-line summary."""
    out = Path(args.out)
    try:
        if out.is_dir():
            raise ValueError(f"--out {out} is a directory: pass the path of the JSON file to write")
        if args.versus is not None:
            return versus_command(args, out)
        if any(getattr(args, name) not in (None, False) for name in ("floor", "shared_exponents", "margin")):
            raise ValueError("--floor, --shared_exponents and --margin compare two recipes: add --versus B")
        if args.budget and len(args.budget) > 1:
            raise ValueError(f"{len(args.budget)} --budget values: one law takes one budget; several compare recipes with --versus B")
        from bigmodel.scaling.fit import fit_input

        result = fit_input(args.input, args.law, x=args.x, bootstrap=args.bootstrap, seed=args.seed,
                           budget=args.budget[0] if args.budget else None, holdout=args.holdout, bootstrap_method=args.bootstrap_method,
                           predict=args.predict or (), compute_basis=args.compute_basis, count=args.count,
                           unique_tokens=args.unique_tokens)
        files.write_json_atomic(out, result)
    except (ValueError, OSError) as error:
        return bad_input(error)
    print(result["summary"])
    return exit_codes.OK


def versus_command(args: argparse.Namespace, out: Path) -> int:
    """`fit A --versus B`: fit.json with its `versus` object, and the figure beside it."""
    from bigmodel.scaling.versus_input import fit_versus_input

    result = fit_versus_input(args.input, args.versus, args.law, args.budget or [], x=args.x, bootstrap=args.bootstrap, seed=args.seed,
                              bootstrap_method=args.bootstrap_method, compute_basis=args.compute_basis,
                              shared_exponents=args.shared_exponents, floor=args.floor, margin=args.margin, holdout=args.holdout,
                              predict=args.predict)
    files.write_json_atomic(out, result)
    from bigmodel.scaling.plot_versus import plot_versus

    paths = plot_versus(result, out.parent, out.stem + "_versus")
    print(result["summary"])
    print(f"wrote {out} and {paths[0]} (+ .svg)")
    return exit_codes.OK


def plot_command(args: argparse.Namespace) -> int:
    """Draw every figure the input supports into `--out`; a note for each one skipped."""
    from bigmodel.scaling.plot import plot_all

    try:
        paths = plot_all(args.input, args.out, fit=args.fit, note=lambda text: print(f"note: {text}"))
    except (ValueError, OSError) as error:
        return bad_input(error)
    for path in paths:
        if path.suffix == ".png":
            print(f"wrote {path} (+ .svg)")
    return exit_codes.OK


def fit_main(argv: list[str] | None = None) -> int:
    """tools/fit_scaling.py: the `fit` command under its old name."""
    return tool_main("tools/fit_scaling.py", FIT_HELP, add_fit_arguments, fit_command, argv)


def plot_main(argv: list[str] | None = None) -> int:
    """tools/plot_scaling.py: the `plot` command under its old name."""
    return tool_main("tools/plot_scaling.py", PLOT_HELP, add_plot_arguments, plot_command, argv)
