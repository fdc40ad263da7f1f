"""A `Study` expanded into `Run`s: every grid kind, through one per-size expansion.

Each size is first resolved the same way for every grid (`sizes_of`): its shape, its config (the
base config plus the shape), its counts and the overrides all its runs carry. Counting uses
`bigmodel.flops.run_stats` (the one formula) for every N, D and C here:
steps = round(D / (batch_size · seq_len)), tokens = steps · batch_size · seq_len,
flops = flops_per_token · tokens, so a run's FLOPs are its budget up to the rounding of steps.
Then the grid kind decides the size's runs:

- `SizeGrid`, `IsoFlopGrid` (`grid_runs`): one run per D or budget, batch size, seed and lr.
- `BranchGrid` (`branch_runs`; Hägele et al. 2024, the trainer's side is `bigmodel.branch`): per
  seed and lr, one warmup-stable run and its cooldown branches. A branch of T steps with cooldown
  share f starts from the stable run's checkpoint at S = T - round(T·f) (`optim.wsd_decay_steps`,
  the step where its WSD decay begins), so the stable run trains to the largest S and keeps a
  checkpoint at every S (`checkpoint.keep_steps`). The runner starts a branch once its parent has
  written that checkpoint (`execution`).

Each run is a config spec plus string overrides, so `run.command(workdir)` re-runs it by hand exactly.
"""

from __future__ import annotations

import dataclasses
import math
import numbers
from collections.abc import Iterable, Iterator, Mapping
from pathlib import Path
from typing import Any

from bigmodel.arguments import MAX_SEED, is_positive_number, is_seed
from bigmodel.config import ConfigError, apply_overrides, load_config, validate
from bigmodel.flops import run_stats
from bigmodel.presets import model_shape
from bigmodel.scaling.resources import Resources, resources_from
from bigmodel.scaling.study import BranchGrid, IsoFlopGrid, Run, RunPlan, SizeGrid, Study

REPO_ROOT = Path(__file__).resolve().parents[2]
SHAPE_KEYS = ("n_layers", "d_model", "n_heads", "d_ff")
# Keys the grid owns: a rule that sets them would silently break N, D or C.
GRID_KEYS = tuple(f"model.{key}" for key in SHAPE_KEYS) + ("train.steps", "train.batch_size", "seed")
# Keys a BranchGrid sets on its runs: a rule that set them would break the branches.
BRANCH_KEYS = ("optim.schedule", "optim.decay_fraction", "optim.decay_shape", "train.init_from", "train.init_step",
               "checkpoint.keep_steps")
COOLDOWN_SHAPES = ("linear", "1-sqrt")


# ----------------------------------------------------------------------------- names and override text


def format_number(value: float, digits: int = 3, scientific: bool = False) -> str:
    """Short and exact enough for names: 2100000 → 2.1M, 0.003 → 3e-3, scientific 3e11 → 3e11."""
    if value == 0:
        return "0"
    if not scientific:
        for threshold, suffix in ((1e12, "T"), (1e9, "G"), (1e6, "M"), (1e3, "K"), (1, "")):
            scaled = float(f"{value / threshold:.{digits}g}")  # round first: 999.96K is 1M
            if 1 <= abs(scaled) < 1000:
                return f"{scaled:.6f}".rstrip("0").rstrip(".") + suffix
    mantissa, exponent = f"{value:.{digits - 1}e}".split("e")
    return f"{mantissa.rstrip('0').rstrip('.')}e{int(exponent)}"


def format_override(value: Any) -> str:
    """A value as `--config.key=<text>` writes it; `config._coerce` reads it back exactly."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, float):
        return repr(value)
    if isinstance(value, (list, tuple)):
        return repr(tuple(value))
    return str(value)


def run_name(shape: dict[str, int], tokens: int, learning_rate: float, seed: int, budget: float | None,
             batch_size: int | None = None) -> str:
    """`L4-d128-tok2.1M-lr3e-3-s0`, prefixed `C1e13-` (the budget) in isoFLOP grids; a batch-size
    sweep adds `-b<batch>` after the lr (`...-lr3e-3-b16-s0`)."""
    batch = f"-b{batch_size}" if batch_size is not None else ""
    name = f"L{shape['n_layers']}-d{shape['d_model']}-tok{format_number(tokens)}-lr{format_number(learning_rate)}{batch}-s{seed}"
    return f"C{format_number(budget, 2, scientific=True)}-{name}" if budget is not None else name


def stable_name(shape: dict[str, int], tokens: int, learning_rate: float, seed: int) -> str:
    """`stable-L4-d128-tok2.1M-lr3e-3-s0`: the tokens are those of its last branch point."""
    return "stable-" + run_name(shape, tokens, learning_rate, seed, None)


# ----------------------------------------------------------------------------- the study's parts, checked


def resolve_config_spec(spec: str) -> str:
    """Keep a spec whose file exists from the working directory; else point at the repo's copy."""
    path, sep, arg = spec.partition(":")
    if Path(path).is_file() or not (REPO_ROOT / path).is_file():
        return spec
    return f"{REPO_ROOT / path}{sep}{arg}"


def resolve_shape(size: str | Mapping[str, int]) -> dict[str, int]:
    if isinstance(size, str):
        try:
            return model_shape(size)
        except ValueError as error:
            raise ConfigError(str(error)) from None
    missing = [key for key in SHAPE_KEYS if key not in size]
    if missing:
        raise ConfigError(f"size {dict(size)} lacks {', '.join(missing)}: give a preset like 'L4' or all of {', '.join(SHAPE_KEYS)}")
    return {key: int(size[key]) for key in SHAPE_KEYS}


def is_positive_whole(value) -> bool:
    """A batch size as a value: a whole number ≥ 1 (numpy's too, not a bool)."""
    return isinstance(value, numbers.Integral) and not isinstance(value, bool) and value >= 1


def check_positive(where: str, values) -> None:
    """A grid's or study's numbers (one or a list): each finite and > 0."""
    bad = [value for value in as_list(values) if not is_positive_number(value)]
    if bad:
        raise ConfigError(f"{where}={values!r}: {bad[0]!r} is not a finite number > 0")


def check_ratio_range(grid: IsoFlopGrid | BranchGrid) -> None:
    """(low, high): 0 < low <= high; high may be infinite (no upper bound)."""
    span = grid.tokens_per_param_range
    pair = tuple(span) if isinstance(span, (tuple, list)) else ()
    if len(pair) != 2 or not is_positive_number(pair[0]) or not (pair[1] == math.inf or is_positive_number(pair[1])) or pair[1] < pair[0]:
        raise ConfigError(f"{type(grid).__name__} tokens_per_param_range={span!r} must be (low, high) with 0 < low <= high, e.g. (1, 1000)")


def check_values(study: Study) -> None:
    """Every number of the grid and study that no config check sees: tokens, ratios, budgets,
    seeds and the learning-rate sweep (a bad one would train nonsense, or fail at the end)."""
    grid = study.grid
    for field in ("tokens", "tokens_per_param", "budgets"):
        if getattr(grid, field, None) is not None:
            check_positive(f"{type(grid).__name__} {field}", getattr(grid, field))
    if isinstance(grid, (IsoFlopGrid, BranchGrid)):
        check_ratio_range(grid)
    seeds = as_list(study.seeds)
    if not seeds or not all(is_seed(seed) for seed in seeds):
        raise ConfigError(f"Study seeds={study.seeds!r} must be a list of whole numbers from 0 to {MAX_SEED}, e.g. [0, 1, 2]")
    if study.learning_rates is not None:
        if not as_list(study.learning_rates):
            raise ConfigError("Study learning_rates=[] sweeps nothing: list the rates, or leave it None to keep the rules' lr")
        check_positive("Study learning_rates", study.learning_rates)


def check_grid(study: Study) -> None:
    """The grid's kind, its numbers, and a BranchGrid's choices, before any config is loaded."""
    grid = study.grid
    if isinstance(grid, (SizeGrid, IsoFlopGrid, BranchGrid)):
        check_values(study)
    if isinstance(grid, BranchGrid):
        if study.batch_sizes is not None:
            raise ConfigError("batch_sizes=[...] sweeps SizeGrid and IsoFlopGrid runs, not a BranchGrid (its branches share "
                              "their stable run's batch): use an IsoFlopGrid, or one batch_size")
        if sum(choice is not None for choice in (grid.tokens, grid.tokens_per_param, grid.budgets)) != 1:
            raise ConfigError("BranchGrid needs exactly one of tokens=[...], tokens_per_param=[...] or budgets=[...]")
        if not 0.0 < grid.cooldown < 1.0:
            raise ConfigError(f"BranchGrid cooldown={grid.cooldown!r} must be a share of each branch's steps in (0, 1), e.g. 0.2")
        if grid.shape not in COOLDOWN_SHAPES:
            raise ConfigError(f"BranchGrid shape={grid.shape!r} must be one of {', '.join(COOLDOWN_SHAPES)}")
    elif not isinstance(grid, (SizeGrid, IsoFlopGrid)):
        raise ConfigError(f"Study.grid must be a SizeGrid, IsoFlopGrid or BranchGrid, got {type(grid).__name__}")


def as_list(value) -> list:
    """A grid field that may be one value or several."""
    return list(value) if isinstance(value, Iterable) and not isinstance(value, str) else [value]


def token_targets(grid: SizeGrid | IsoFlopGrid | BranchGrid, stats: dict) -> list[tuple[float | None, float]]:
    """(budget, tokens wanted) pairs for one size, any grid kind: fixed tokens, tokens-per-param
    ratios (D = ratio · params), or budgets (D = C / flops_per_token), a budget kept only where
    the size's tokens-per-param ratio lies in the grid's tokens_per_param_range."""
    if isinstance(grid, SizeGrid) and (grid.tokens is None) == (grid.tokens_per_param is None):
        raise ConfigError("SizeGrid needs exactly one of tokens= or tokens_per_param=")
    tokens, ratios = getattr(grid, "tokens", None), getattr(grid, "tokens_per_param", None)  # an IsoFlopGrid has budgets only
    if tokens is not None:
        return [(None, float(value)) for value in as_list(tokens)]
    if ratios is not None:
        return [(None, ratio * stats["params"]) for ratio in as_list(ratios)]
    low, high = grid.tokens_per_param_range
    wanted = [(float(budget), budget / stats["flops_per_token"]) for budget in grid.budgets]
    return [(budget, tokens) for budget, tokens in wanted if low <= tokens / stats["params"] <= high]


def batch_size_for(study: Study, stats: dict, base_batch_size: int) -> int:
    if study.batch_size is None:
        return base_batch_size
    value = study.batch_size(stats) if callable(study.batch_size) else study.batch_size
    if not is_positive_whole(value):
        raise ConfigError(f"the study's batch_size must be a positive int, got {value!r}")
    return int(value)  # numpy's too: it goes into names and JSON


def batch_sizes_for(study: Study, stats: dict, base_batch_size: int) -> list[int]:
    """The batch sizes one (size, D) trains at: the study's batch_sizes sweep, else its one batch size."""
    if study.batch_sizes is None:
        return [batch_size_for(study, stats, base_batch_size)]
    if study.batch_size is not None:
        raise ConfigError("the study gives both batch_size and batch_sizes: batch_sizes=[...] sweeps in place of batch_size, drop one")
    values = [int(value) if is_positive_whole(value) else value for value in study.batch_sizes]
    if not values or not all(is_positive_whole(value) for value in values):
        raise ConfigError(f"the study's batch_sizes must be a list of positive ints, got {study.batch_sizes!r}")
    if len(set(values)) < len(values):
        raise ConfigError(f"the study's batch_sizes {values} repeat a value: list each batch size once")
    return values


def rule_overrides(study: Study, plan: RunPlan, owned: tuple[str, ...] = ()) -> dict[str, Any]:
    """What the study's rules choose for a run; none of the keys the grid decides (GRID_KEYS and `owned`)."""
    overrides = dict(study.rules(plan)) if study.rules else {}
    for keys, owner in ((GRID_KEYS, "the grid decides: use Study.batch_size or the grid instead"),
                        (owned, "a BranchGrid decides for its stable runs and branches")):
        taken = [key for key in overrides if key in keys]
        if taken:
            raise ConfigError(f"rules set {taken[0]}, which {owner}")
    return overrides


def run_resources(study: Study, plan: RunPlan) -> Resources:
    if study.resources is None:
        return Resources()
    where = f"the study's resources for L{plan.n_layers}-d{plan.d_model}"
    return resources_from(study.resources(plan), where)


def learning_rates(study: Study, chosen: Mapping[str, Any], config) -> list[float]:
    """The study's lr sweep, else the lr the rules chose, else the base config's."""
    chosen_lr = [chosen.get("optim.lr", config.optim.lr)]
    return [float(value) for value in (as_list(study.learning_rates) if study.learning_rates is not None else chosen_lr)]


# ----------------------------------------------------------------------------- one size, every grid kind


@dataclasses.dataclass(frozen=True)
class Size:
    """What every run of one size shares, whatever the grid."""

    spec: str  # the base config spec, as each run's command names it
    shape: dict[str, int]
    config: Any  # the base config with this shape
    stats: dict  # run_stats of `config`, with n_layers and d_model
    overrides: dict[str, str]  # the study's overrides, then the shape's

    @property
    def seq_len(self) -> int:
        return self.config.data.seq_len


def sizes_of(study: Study) -> Iterator[Size]:
    """The study's sizes in grid order, each resolved as it is reached."""
    spec = resolve_config_spec(study.base_config)
    base_overrides = {key: format_override(value) for key, value in study.overrides.items()}
    base = load_config(spec, base_overrides)
    for size in study.grid.sizes:
        shape = resolve_shape(size)
        shape_overrides = {f"model.{key}": str(value) for key, value in shape.items()}
        config = apply_overrides(base, shape_overrides)
        stats = run_stats(config)
        stats.update(n_layers=shape["n_layers"], d_model=shape["d_model"])
        yield Size(spec, shape, config, stats, {**base_overrides, **shape_overrides})


def plan_for(size: Size, steps: int, batch_size: int, budget: float | None, seed: int) -> RunPlan:
    return RunPlan(n_layers=size.shape["n_layers"], d_model=size.shape["d_model"], params=size.stats["params"],
                   non_embedding_params=size.stats["non_embedding_params"], flops_per_token=size.stats["flops_per_token"],
                   tokens=steps * batch_size * size.seq_len, steps=steps, batch_size=batch_size, seq_len=size.seq_len,
                   budget=budget, seed=seed)


def run_overrides(size: Size, batch_size: int, seed: int, chosen: Mapping[str, Any], learning_rate: float,
                  steps: int | None = None) -> dict[str, str]:
    """A run's overrides in the order its command line shows them. A SizeGrid or IsoFlopGrid run
    names its steps before its batch size; a BranchGrid's runs share all but their steps, which
    each run adds after these (steps=None)."""
    return {**size.overrides, **({"train.steps": str(steps)} if steps is not None else {}),
            "train.batch_size": str(batch_size), "seed": str(seed),
            **{key: format_override(value) for key, value in chosen.items()},
            "optim.lr": format_override(learning_rate)}


def make_run(size: Size, name: str, steps: int, batch_size: int, learning_rate: float, seed: int,
             overrides: dict[str, str], resources: Resources, **role) -> Run:
    """One run of `size`; `role` carries a BranchGrid run's role, parent and init_step, and a budget."""
    tokens = steps * batch_size * size.seq_len
    return Run(name=name, config_spec=size.spec, overrides=overrides, params=size.stats["params"],
               non_embedding_params=size.stats["non_embedding_params"], flops_per_token=size.stats["flops_per_token"],
               tokens=tokens, flops=size.stats["flops_per_token"] * tokens, steps=steps, batch_size=batch_size,
               seq_len=size.seq_len, learning_rate=learning_rate, seed=seed, resources=resources, **role)


def batch_targets(study: Study, size: Size) -> list[tuple[float | None, float, int]]:
    """(budget, tokens wanted, batch size) for one size: every D or budget at each batch size.
    A batch-size function also sees the run's seq_len, budget and wanted tokens and flops."""
    targets = []
    for budget, tokens in token_targets(study.grid, size.stats):
        wanted = {**size.stats, "seq_len": size.seq_len, "budget": budget, "tokens": tokens, "flops": tokens * size.stats["flops_per_token"]}
        targets += [(budget, tokens, batch_size) for batch_size in batch_sizes_for(study, wanted, size.config.train.batch_size)]
    return targets


def grid_runs(study: Study, size: Size) -> list[Run]:
    """A SizeGrid's or IsoFlopGrid's runs of one size: per D or budget, batch size, seed and lr."""
    runs = []
    for budget, wanted_tokens, batch_size in batch_targets(study, size):
        steps = max(1, round(wanted_tokens / (batch_size * size.seq_len)))
        for seed in map(int, as_list(study.seeds)):  # numpy seeds become ints: they go into JSON
            plan = plan_for(size, steps, batch_size, budget, seed)
            chosen, resources = rule_overrides(study, plan), run_resources(study, plan)
            for learning_rate in learning_rates(study, chosen, size.config):
                name = run_name(size.shape, plan.tokens, learning_rate, seed, budget, batch_size if study.batch_sizes else None)
                overrides = run_overrides(size, batch_size, seed, chosen, learning_rate, steps=steps)
                runs.append(make_run(size, name, steps, batch_size, learning_rate, seed, overrides, resources, budget=budget))
    return runs


def branch_points(lengths: list[int], cooldown: float) -> list[tuple[int, int]]:
    """(T, S) per branch length T: S is where its cooldown starts, the stable run's checkpoint."""
    from bigmodel.optim import wsd_decay_steps  # the trainer's own rule; optim loads JAX, so only a BranchGrid pays for it

    return [(steps, steps - wsd_decay_steps(steps, cooldown)) for steps in sorted(set(lengths))]


def check_warmup(size: Size, chosen: Mapping[str, Any], points: list[tuple[int, int]]) -> None:
    """Every branch must start its cooldown after warmup ends."""
    warmup = int(chosen.get("optim.warmup_steps", size.config.optim.warmup_steps))
    early = [(steps, start) for steps, start in points if start < max(warmup, 1)]
    if early:
        (steps, start), *_ = early
        raise ConfigError(f"L{size.shape['n_layers']}-d{size.shape['d_model']}: a branch of {steps} steps would start its cooldown "
                          f"at step {start}, before warmup ends ({warmup} steps): ask for more tokens or a shorter warmup")


def branch_runs(study: Study, size: Size) -> list[Run]:
    """A BranchGrid's runs of one size: per seed and lr, its stable run, then a branch per point.
    The stable run and its branches share every hyperparameter the rules choose (the rules see
    the stable run's plan): a branch must continue its parent exactly."""
    grid = study.grid
    batch_size = batch_size_for(study, size.stats, size.config.train.batch_size)
    step_budget = {max(1, round(tokens / (batch_size * size.seq_len))): budget for budget, tokens in token_targets(grid, size.stats)}
    if not step_budget:
        return []  # no budget of an isoFLOP branch grid suits this size
    points = branch_points(list(step_budget), grid.cooldown)
    stable_steps = max(start for _, start in points)
    keep = format_override(tuple(start for _, start in points))
    runs = []
    for seed in map(int, as_list(study.seeds)):  # numpy seeds become ints: they go into JSON
        plan = plan_for(size, stable_steps, batch_size, None, seed)
        chosen = rule_overrides(study, plan, owned=BRANCH_KEYS)  # one set for the stable run and all its branches
        check_warmup(size, chosen, points)
        resources = run_resources(study, plan)
        for learning_rate in learning_rates(study, chosen, size.config):
            common = run_overrides(size, batch_size, seed, chosen, learning_rate)
            parent = stable_name(size.shape, plan.tokens, learning_rate, seed)
            stable = {**common, "train.steps": str(stable_steps), "optim.schedule": "constant", "checkpoint.keep_steps": keep}
            runs.append(make_run(size, parent, stable_steps, batch_size, learning_rate, seed, stable, resources, role="stable"))
            for steps, start in points:
                budget = step_budget[steps]
                name = f"{run_name(size.shape, steps * batch_size * size.seq_len, learning_rate, seed, budget)}-cd{round(grid.cooldown * 100)}"
                cooldown = {**common, "train.steps": str(steps), "optim.schedule": "wsd",
                            "optim.decay_fraction": format_override(float(grid.cooldown)), "optim.decay_shape": grid.shape,
                            "train.init_step": str(start)}
                runs.append(make_run(size, name, steps, batch_size, learning_rate, seed, cooldown, resources,
                                     role="branch", parent=parent, init_step=start, budget=budget))
    return runs


# ----------------------------------------------------------------------------- the study


def expand(study: Study) -> list[Run]:
    """Every run of the study, in grid order (sizes, then budgets, batch sizes, seeds, lrs); a
    BranchGrid's stable run comes right before its branches."""
    if isinstance(study.grid, (list, tuple)):  # several grids, e.g. the fitted ones and a held-out run
        runs = [run for grid in study.grid for run in expand(dataclasses.replace(study, grid=grid))]
        check_names(runs)
        return runs
    check_grid(study)
    runs_of_size = branch_runs if isinstance(study.grid, BranchGrid) else grid_runs
    runs = [run for size in sizes_of(study) for run in runs_of_size(study, size)]
    if isinstance(study.grid, IsoFlopGrid):
        runs.sort(key=lambda run: run.budget)  # stable: sizes stay in order within a budget
    check_names(runs)
    return runs


def check_names(runs: list[Run]) -> None:
    if not runs:
        raise ConfigError("the study expands to no runs: give sizes (and, for isoFLOP, budgets whose tokens-per-param ratio falls in range)")
    seen = {}
    for run in runs:
        if run.name in seen:
            raise ConfigError(f"two runs are both named {run.name!r}: the grid repeats a size, seed, lr or batch size")
        seen[run.name] = run


def validate_runs(runs: list[Run], n_devices: int = 1) -> None:
    """Load and validate every run's full config, so a bad one stops the sweep before it starts."""
    for run in runs:
        overrides = {**run.overrides, "train.init_from": run.parent} if run.parent else run.overrides  # the folder: at launch
        try:
            validate(load_config(run.config_spec, overrides), n_devices=n_devices)
        except ConfigError as error:
            raise ConfigError(f"run {run.name}: {error}") from None
