"""`python -m bigmodel compare A B` (= `tools/compare_runs.py A B`): is B's final eval loss
different from A's? Prints B − A with a 95% interval and a p-value; --json prints one object.

Groups of seeds (≥ 2 runs a side): Welch's t-test on the runs' final eval losses, and the minimal
detectable difference at this many seeds and the seeds a side the observed difference would need,
both from Welch's own power (80%, α = 0.05) with each side's seed SD taken as the pooled one. At
few seeds Welch's test detects far less than the pooled t-test would claim: at 2 seeds a side
its 80%-power difference is 10.4 seed SDs, not 5.65 (docs/compare.md).

One run a side: a paired bootstrap over validation batches. The trainer records only the mean
eval loss, so compare restores each run's newest checkpoint and evaluates both on the same
batches itself (the fixed VALIDATION_SEED, A's eval batch size for both), after checking that
both runs' data settings name the same text. That interval is evaluation noise only: it says
nothing about what another seed would give.

How A and B name runs (a run directory, a quoted glob, REGISTRY:NAME_PATTERN, comma lists):
`bigmodel.scaling.run_groups`. Every bad input is one `error:` line and exit code 2.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys

from bigmodel import exit_codes
from bigmodel.arguments import bad_input, bootstrap_replicates, path_text, positive_int, seed, tool_main
from bigmodel.scaling import run_groups
from bigmodel.scaling.points import loss_unit

COMPARE_HELP = "B − A in final eval loss: 95%% interval, p-value, minimal detectable difference (Welch over seeds, or a paired bootstrap over eval batches)"
CHECKPOINT_DIR = "checkpoints"  # bigmodel.checkpoint.CHECKPOINT_DIR (importing it loads JAX)
POWER_TEST = "welch"  # detectable differences are the power of the test compare runs
GROUP_HELP = ("a run directory, a quoted glob of run directories ('runs/seeds/L2-*'), or REGISTRY:'NAME_PATTERN' "
              "(done rows of a sweep directory or runs.csv); join several with commas")


def add_compare_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("a", type=path_text, metavar="A", help="the baseline: " + GROUP_HELP)
    parser.add_argument("b", type=path_text, metavar="B", help="the candidate, the same way; differences are B − A")
    parser.add_argument("--batches", type=positive_int, default=None,
                        help="one run a side: validation batches to evaluate (default: the runs' eval.batches; at most one pass over the split)")
    parser.add_argument("--bootstrap", type=bootstrap_replicates(1), default=None, metavar="K", help="one run a side: bootstrap resamples (default 10000)")
    parser.add_argument("--seed", type=seed, default=0, help="seed of the bootstrap resampling")
    parser.add_argument("--json", action="store_true", help="print one JSON object instead of the report")


def compare_command(args: argparse.Namespace) -> int:
    try:
        runs_a, runs_b = run_groups.select_runs(args.a, "A"), run_groups.select_runs(args.b, "B")
        shared = {run_groups.identity(run) for run in runs_a} & {run_groups.identity(run) for run in runs_b}
        if shared:
            raise ValueError(f"A and B both hold {sorted(shared)[0]}: a run cannot be compared with itself")
        if len(runs_a) >= 2 and len(runs_b) >= 2:
            if args.batches or args.bootstrap:
                raise ValueError("--batches and --bootstrap apply to one run a side (the paired bootstrap over eval batches); "
                                 "with seeds on both sides drop them")
            result = seed_comparison(runs_a, runs_b)
        elif len(runs_a) == len(runs_b) == 1:
            result = batch_comparison(runs_a[0], runs_b[0], args.batches, args.bootstrap, args.seed)
        else:
            raise ValueError(f"A has {len(runs_a)} run(s) and B {len(runs_b)}: Welch's test needs at least 2 a side "
                             "(seeds), the paired bootstrap exactly 1 a side; add seeds to the side with one")
    except (ValueError, OSError) as error:
        return bad_input(error)
    print(json.dumps(result) if args.json else "\n".join(report(result, args.a, args.b)))
    return exit_codes.OK


# ----------------------------------------------------------------------------- groups of seeds


def group_summary(runs: list[run_groups.RunLoss]) -> dict:
    losses = [run.eval_loss for run in runs]
    return {"runs": [run.label for run in runs], "eval_losses": losses, "mean": statistics.fmean(losses), "sd": statistics.stdev(losses)}


def seed_comparison(runs_a: list[run_groups.RunLoss], runs_b: list[run_groups.RunLoss]) -> dict:
    """Welch's test on the final eval losses, the minimal detectable difference at these seed
    counts and the seeds a side that would detect the difference observed: both from the power
    of that same Welch test, at the pooled seed SD on both sides."""
    from bigmodel.scaling import significance

    run_groups.check_same_validation_data(runs_a + runs_b)
    losses_a, losses_b = [run.eval_loss for run in runs_a], [run.eval_loss for run in runs_b]
    test = significance.welch(losses_a, losses_b)  # refuses groups without any spread, so sd > 0 below
    sd = significance.pooled_sd(losses_a, losses_b)
    return {
        "method": "welch",
        "loss_unit": runs_loss_unit(runs_a + runs_b),
        "a": group_summary(runs_a),
        "b": group_summary(runs_b),
        "difference": test.difference,
        "low": test.low,
        "high": test.high,
        "confidence": test.confidence,
        "p_value": test.p_value,
        "t": test.t,
        "df": test.df,
        "standard_error": test.standard_error,
        "pooled_sd": sd,
        "power_test": POWER_TEST,  # whose power gives minimal_detectable_difference and seeds_needed
        "minimal_detectable_difference": significance.minimal_detectable_difference(sd, len(runs_a), len(runs_b), test=POWER_TEST),
        "power": significance.POWER,
        "alpha": significance.ALPHA,
        "seeds_needed": significance.seeds_needed(test.difference, sd, test=POWER_TEST),
    }


# ----------------------------------------------------------------------------- one run a side


def batch_comparison(run_a: run_groups.RunLoss, run_b: run_groups.RunLoss, batches: int | None, resamples: int | None, seed: int) -> dict:
    """Both runs' newest checkpoints on the same validation batches, then a paired bootstrap."""
    for run in (run_a, run_b):  # the cheap checks, before JAX loads
        if run.workdir is None:
            raise ValueError(f"{run.label} has no run directory beside its registry: one run a side is compared batch by batch "
                             "from its checkpoint; give at least 2 seeds a side for Welch's test instead")
    run_groups.check_same_validation_data([run_a, run_b])
    for run in (run_a, run_b):
        if not (run.workdir / CHECKPOINT_DIR).is_dir():
            raise ValueError(f"{run.label} has no checkpoint to evaluate: one run a side is compared batch by batch from each run's "
                             "newest checkpoint; give at least 2 seeds a side for Welch's test instead")
    from bigmodel import runtime
    from bigmodel.data import load_dataset
    from bigmodel.restore import open_run
    from bigmodel.scaling import significance
    from bigmodel.train import VALIDATION_SEED

    runtime.enable_compilation_cache()
    opened = [open_run(run.workdir) for run in (run_a, run_b)]  # one error line: not a run, no checkpoint
    config_a = opened[0][0]
    batch_size = config_a.train.batch_size // config_a.train.grad_accum
    validation = load_dataset(config_a.data, "validation", seed=VALIDATION_SEED)  # one object: both see the same arrays
    n_batches = batches_to_evaluate(batches, max(config.eval.batches for config, _ in opened), batch_size, validation)
    evaluated = [checkpoint_batch_losses(config, manager, validation, batch_size, n_batches) for config, manager in opened]
    test = significance.paired_bootstrap(evaluated[0][1], evaluated[1][1], resamples or significance.BOOTSTRAP_RESAMPLES, seed=seed)
    return {
        "method": "paired_bootstrap",
        "loss_unit": runs_loss_unit([run_a, run_b]),
        "a": evaluated_side(run_a, *evaluated[0]),
        "b": evaluated_side(run_b, *evaluated[1]),
        "difference": test.difference,
        "low": test.low,
        "high": test.high,
        "confidence": test.confidence,
        "p_value": test.p_value,
        "standard_error": test.standard_error,
        "batches": test.batches,
        "batch_size": batch_size,
        "seq_len": config_a.data.seq_len,
        "resamples": test.resamples,
        "minimal_detectable_difference": None,  # no seed-to-seed SD from one run a side
    }


def runs_loss_unit(runs: list[run_groups.RunLoss]) -> str:
    """nats/byte where every run's tokens are bytes (its eval_bpb says so), else nats/token (`points.loss_unit`)."""
    return loss_unit([run.bytes_per_token for run in runs])


def evaluated_side(run: run_groups.RunLoss, step: int, losses) -> dict:
    return {"run": run.label, "step": step, "eval_loss": float(losses.mean()), "final_eval_loss": run.eval_loss}


def batches_to_evaluate(requested: int | None, configured: int, batch_size: int, validation) -> int:
    """At most one pass over the validation split: past it the windows repeat, and repeated
    batches would narrow the bootstrap interval without adding information."""
    from bigmodel.data.pipeline import batches_in_one_pass, check_batches

    one_pass = batches_in_one_pass(validation, batch_size)  # None: synthetic data, fresh tokens per batch
    if one_pass is not None and validation.num_windows < 2 * batch_size:
        raise ValueError(f"the validation split holds {validation.num_windows} windows, fewer than 2 batches of {batch_size}: too few to resample")
    if requested is not None:
        check_batches(requested, validation, batch_size)
        return requested
    if one_pass is not None and configured > one_pass:
        print(f"note: evaluating {one_pass} batches (one pass over the validation split), not eval.batches={configured}", file=sys.stderr)
        return one_pass
    return max(configured, 2)


def checkpoint_batch_losses(config, manager, validation, batch_size: int, n_batches: int):
    """(step, per-batch mean losses) of the newest readable checkpoint, on validation batches
    0 … n_batches−1 of `batch_size` rows: the trainer's `validation_loss` without the averaging."""
    import jax
    import numpy as np

    from bigmodel import config as config_lib, sharding
    from bigmodel.restore import config_for_these_devices, restore_params
    from bigmodel.train import make_eval_step

    config = config_for_these_devices(config_lib.apply_overrides(config, {"train.batch_size": str(batch_size), "train.grad_accum": "1"}))
    setup, params, step = restore_params(config, manager)  # compare only reads
    eval_step = make_eval_step(setup)
    losses = [eval_step(params, sharding.global_batch(validation.batch(index, batch_size, jax.process_index(), jax.process_count()), setup.batch_sharding))
              for index in range(n_batches)]
    return step, np.asarray(jax.device_get(losses), dtype=float)


# ----------------------------------------------------------------------------- the report


def verdict(p_value: float, alpha: float = 0.05) -> str:
    return f"significant at α = {alpha:g}" if p_value < alpha else f"not significant at α = {alpha:g}"


def report(result: dict, spec_a: str, spec_b: str) -> list[str]:
    """The human-readable lines of a result, in its `loss_unit` (nats/byte where the runs' tokens are bytes)."""
    unit = result["loss_unit"]
    difference = (f"B − A = {result['difference']:+.5f} {unit}, {result['confidence']:.0%} CI "
                  f"[{result['low']:+.5f}, {result['high']:+.5f}], p = {result['p_value']:.3g}")
    if result["method"] == "welch":
        from bigmodel.scaling.significance import TEST_NAMES as significance_names

        lines = [f"{name}: {len(side['runs'])} runs of {spec}: final eval loss {side['mean']:.5f} (mean), seed SD {side['sd']:.5f}"
                 for name, side, spec in (("A", result["a"], spec_a), ("B", result["b"], spec_b))]
        lines.append(f"{difference} (Welch t = {result['t']:.3f}, df = {result['df']:.2f}; {verdict(result['p_value'])})")
        n_a, n_b = len(result["a"]["runs"]), len(result["b"]["runs"])
        seeds = result["seeds_needed"]
        needed = (f"|B − A| = {abs(result['difference']):.5f} would need {seeds} seeds a side" if seeds
                  else "the observed difference is too small to detect with any practical number of seeds")
        lines.append(f"minimal detectable difference at {n_a} vs {n_b} seeds ({significance_names[result['power_test']]}, {result['power']:.0%} power, α = {result['alpha']:g}): "
                     f"{result['minimal_detectable_difference']:.5f} {unit} (both sides at the pooled seed SD {result['pooled_sd']:.5f}); {needed}")
        return lines
    lines = [f"{name}: {side['run']} at step {side['step']}: eval loss {side['eval_loss']:.5f} on these batches (summary.json: {side['final_eval_loss']:.5f})"
             for name, side in (("A", result["a"]), ("B", result["b"]))]
    lines.append(f"{difference} (studentized paired bootstrap over {result['batches']} validation batches of {result['batch_size']}×{result['seq_len']} tokens, "
                 f"{result['resamples']} resamples; {verdict(result['p_value'])})")
    lines.append("evaluation noise only: both runs saw the same batches, so this says nothing about another seed; "
                 "minimal detectable difference: needs ≥ 2 seeds a side")
    return lines


def compare_main(argv: list[str] | None = None) -> int:
    """tools/compare_runs.py: the `compare` command under a tool's name."""
    return tool_main("tools/compare_runs.py", COMPARE_HELP.replace("%%", "%"), add_compare_arguments, compare_command, argv)
