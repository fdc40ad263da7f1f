"""A `BranchGrid` expanded into runs: per size, seed and learning rate, one warmup-stable run and
its cooldown branches (Hägele et al. 2024; the trainer's side is `bigmodel.branch`).

A branch of T steps with cooldown share f starts from the stable run's checkpoint at
S = T - round(T·f) (`optim.wsd_decay_steps`, the step where its WSD decay begins), so the stable
run trains to the largest S and keeps a checkpoint at every S (`checkpoint.keep_steps`). The
runner starts a branch once its parent has written that checkpoint (`execution`).
"""

from __future__ import annotations

from bigmodel.config import ConfigError, apply_overrides, load_config
from bigmodel.flops import run_stats
from bigmodel.optim import wsd_decay_steps
from bigmodel.scaling.sweep import (BranchGrid, Run, RunPlan, Study, batch_size_for, check_names, format_override,
                                    resolve_config_spec, resolve_shape, rule_overrides, run_name, run_resources)

# Keys the branch grid sets on its runs: a rule that set them would break the branches.
BRANCH_KEYS = ("optim.schedule", "optim.decay_fraction", "optim.decay_shape", "train.init_from", "train.init_step",
               "checkpoint.keep_steps")
SHAPES = ("linear", "1-sqrt")


def check_grid(grid: BranchGrid) -> None:
    if sum(choice is not None for choice in (grid.tokens, grid.tokens_per_param, grid.budgets)) != 1:
        raise ConfigError("BranchGrid needs exactly one of tokens=[...], tokens_per_param=[...] or budgets=[...]")
    if not 0.0 < grid.cooldown < 1.0:
        raise ConfigError(f"BranchGrid cooldown={grid.cooldown!r} must be a share of each branch's steps in (0, 1), e.g. 0.2")
    if grid.shape not in SHAPES:
        raise ConfigError(f"BranchGrid shape={grid.shape!r} must be one of {', '.join(SHAPES)}")


def branch_targets(grid: BranchGrid, stats: dict) -> list[tuple[float | None, float]]:
    """(budget, tokens wanted) per branch of one size; budgets outside the size's
    tokens-per-param range are dropped, as in an IsoFlopGrid."""
    if grid.tokens is not None:
        return [(None, float(tokens)) for tokens in grid.tokens]
    if grid.tokens_per_param is not None:
        return [(None, ratio * stats["params"]) for ratio in grid.tokens_per_param]
    low, high = grid.tokens_per_param_range
    wanted = [(float(budget), budget / stats["flops_per_token"]) for budget in grid.budgets]
    return [(budget, tokens) for budget, tokens in wanted if low <= tokens / stats["params"] <= high]


def branch_points(lengths: list[int], cooldown: float) -> list[tuple[int, int]]:
    """(T, S) per branch length T: S is where its cooldown starts, the stable run's checkpoint."""
    return [(steps, steps - wsd_decay_steps(steps, cooldown)) for steps in sorted(set(lengths))]


def stable_name(shape: dict[str, int], tokens: int, learning_rate: float, seed: int) -> str:
    """`stable-L4-d128-tok2.1M-lr3e-3-s0`: the tokens are those of its last branch point."""
    return "stable-" + run_name(shape, tokens, learning_rate, seed, None)


def expand_branches(study: Study) -> list[Run]:
    grid = study.grid
    check_grid(grid)
    spec = resolve_config_spec(study.base_config)
    base_overrides = {key: format_override(value) for key, value in study.overrides.items()}
    base = load_config(spec, base_overrides)
    runs = []
    for size in grid.sizes:
        shape = resolve_shape(size)
        shape_overrides = {f"model.{key}": str(value) for key, value in shape.items()}
        config = apply_overrides(base, shape_overrides)
        stats = run_stats(config)
        stats.update(n_layers=shape["n_layers"], d_model=shape["d_model"])
        batch_size, seq_len = batch_size_for(study, stats, config.train.batch_size), config.data.seq_len
        step_budget = {max(1, round(tokens / (batch_size * seq_len))): budget for budget, tokens in branch_targets(grid, stats)}
        if not step_budget:
            continue  # no budget of an isoFLOP branch grid suits this size
        points = branch_points(list(step_budget), grid.cooldown)
        stable_steps = max(start for _, start in points)
        for seed in study.seeds:
            plan = RunPlan(n_layers=shape["n_layers"], d_model=shape["d_model"], params=stats["params"],
                           non_embedding_params=stats["non_embedding_params"], flops_per_token=stats["flops_per_token"],
                           tokens=stable_steps * batch_size * seq_len, steps=stable_steps, batch_size=batch_size, seq_len=seq_len,
                           budget=None, seed=seed)
            chosen = rule_overrides(study, plan)  # one set for the stable run and all its branches
            owned = [key for key in chosen if key in BRANCH_KEYS]
            if owned:
                raise ConfigError(f"rules set {owned[0]}, which a BranchGrid decides for its stable runs and branches")
            warmup = int(chosen.get("optim.warmup_steps", config.optim.warmup_steps))
            early = [steps for steps, start in points if start < max(warmup, 1)]
            if early:
                raise ConfigError(f"L{shape['n_layers']}-d{shape['d_model']}: a branch of {early[0]} steps would start its cooldown "
                                  f"at step {early[0] - wsd_decay_steps(early[0], grid.cooldown)}, before warmup ends ({warmup} steps): "
                                  "ask for more tokens or a shorter warmup")
            resources = run_resources(study, plan)
            for learning_rate in study.learning_rates or [chosen.get("optim.lr", config.optim.lr)]:
                common = {**base_overrides, **shape_overrides, "train.batch_size": str(batch_size), "seed": str(seed),
                          **{key: format_override(value) for key, value in chosen.items()},
                          "optim.lr": format_override(float(learning_rate))}

                def make_run(name: str, steps: int, overrides: dict, **role) -> Run:
                    tokens = steps * batch_size * seq_len
                    return Run(name=name, config_spec=spec, overrides={**common, "train.steps": str(steps), **overrides},
                               params=stats["params"], non_embedding_params=stats["non_embedding_params"],
                               flops_per_token=stats["flops_per_token"], tokens=tokens, flops=stats["flops_per_token"] * tokens,
                               steps=steps, batch_size=batch_size, seq_len=seq_len, learning_rate=float(learning_rate), seed=seed,
                               resources=resources, **role)

                parent = stable_name(shape, stable_steps * batch_size * seq_len, float(learning_rate), seed)
                keep = format_override(tuple(start for _, start in points))
                runs.append(make_run(parent, stable_steps, {"optim.schedule": "constant", "checkpoint.keep_steps": keep}, role="stable"))
                for steps, start in points:
                    cooldown = {"optim.schedule": "wsd", "optim.decay_fraction": format_override(float(grid.cooldown)),
                                "optim.decay_shape": grid.shape, "train.init_step": str(start)}
                    budget = step_budget[steps]
                    name = f"{run_name(shape, steps * batch_size * seq_len, float(learning_rate), seed, budget)}-cd{round(grid.cooldown * 100)}"
                    runs.append(make_run(name, steps, cooldown, role="branch", parent=parent, init_step=start, budget=budget))
    check_names(runs)
    return runs
