"""A scaling study as data, expanded into a list of fully specified training runs.

An experiment file (`experiments/*.py`) defines `get_study()` returning a `Study`: a base config
(`configs/lm.py:<preset>` plus overrides), a grid of model sizes (`SizeGrid` at a fixed token
budget or tokens-per-parameter ratio, or `IsoFlopGrid` over compute budgets), optional seeds and
learning rates, and per-run rules written as plain functions in the experiment file (lr as a
power of N, warmup as a share of steps, ...). `expand(study)` turns it into `Run`s; each run is
a config spec plus string overrides, so `run.command(workdir)` re-runs it by hand exactly.

Counting uses `bigmodel.flops.run_stats` (the one formula) for every N, D and C here:
steps = round(D / (batch_size · seq_len)), tokens = steps · batch_size · seq_len,
flops = flops_per_token · tokens, so a run's FLOPs are its budget up to the rounding of steps.
"""

from __future__ import annotations

import dataclasses
import shlex
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

from bigmodel.config import ConfigError, apply_overrides, load_config, validate
from bigmodel.flops import run_stats
from bigmodel.presets import FF_MULT, HEAD_DIM, model_shape, shape_for_params
from bigmodel.scaling.resources import Resources, as_dict, resources_from

REPO_ROOT = Path(__file__).resolve().parents[2]
SHAPE_KEYS = ("n_layers", "d_model", "n_heads", "d_ff")
# Keys the grid owns: a rule that sets them would silently break N, D or C.
GRID_KEYS = tuple(f"model.{key}" for key in SHAPE_KEYS) + ("train.steps", "train.batch_size", "seed")


# ----------------------------------------------------------------------------- the study format


@dataclasses.dataclass(frozen=True)
class SizeGrid:
    """Model sizes trained on a fixed token budget or a fixed tokens-per-parameter ratio.

    sizes: presets ("L1", "L4") or shape dicts; `sizes_between` makes a log-spaced list.
    tokens: the same training tokens for every size (Kaplan-style L(N) at fixed D), or
    tokens_per_param: D = ratio · params (all parameters, Chinchilla's convention).
    Either may be a list: every size trains at each (an N × D grid for L(N, D)).
    """

    sizes: Sequence[str | Mapping[str, int]]
    tokens: float | Sequence[float] | None = None
    tokens_per_param: float | Sequence[float] | None = None


@dataclasses.dataclass(frozen=True)
class IsoFlopGrid:
    """Compute budgets C (FLOPs); per budget every size whose D = C / flops_per_token(N) gives a
    tokens-per-parameter ratio inside `tokens_per_param_range` (too few tokens: the run is all
    warm-up; too many: the size is far from the budget's optimum and only costs time)."""

    budgets: Sequence[float]
    sizes: Sequence[str | Mapping[str, int]]
    tokens_per_param_range: tuple[float, float] = (1.0, 1000.0)


@dataclasses.dataclass(frozen=True)
class BranchGrid:
    """Cooldown branches (Hägele et al. 2024; `bigmodel.branch`): per size, one warmup-stable run
    (constant learning rate after warmup) to the last branch point, keeping a checkpoint at every
    branch point, and from each a branch that cools down (WSD) to its own length. A size's
    losses at every D then cost about its longest run, not the sum of its runs.

    sizes: as in SizeGrid.
    tokens: each branch's training tokens (the stable part plus its cooldown), or
    tokens_per_param: ratios, D = ratio · params, or
    budgets: training FLOPs per branch, D = C / flops_per_token(N) as in IsoFlopGrid (a size
      keeps the budgets whose tokens-per-param ratio lies in tokens_per_param_range): isoFLOP
      profiles from one stable run per size (experiments/isoflop.py:branches).
    cooldown: the share of each branch's steps spent cooling down (optim.decay_fraction).
    shape: the cooldown's shape, "linear" or "1-sqrt" (optim.decay_shape).
    The stable run and its branches share every hyperparameter the rules choose (the rules see
    the stable run's plan): a branch must continue its parent exactly.
    """

    sizes: Sequence[str | Mapping[str, int]]
    tokens: Sequence[float] | None = None
    tokens_per_param: Sequence[float] | None = None
    budgets: Sequence[float] | None = None
    tokens_per_param_range: tuple[float, float] = (1.0, 1000.0)
    cooldown: float = 0.2
    shape: str = "linear"


@dataclasses.dataclass(frozen=True)
class RunPlan:
    """What a rule sees about one run before its overrides are fixed."""

    n_layers: int
    d_model: int
    params: int
    non_embedding_params: int
    flops_per_token: int
    tokens: int
    steps: int
    batch_size: int
    seq_len: int
    budget: float | None
    seed: int


@dataclasses.dataclass(frozen=True)
class Study:
    """base_config: "configs/lm.py:L4" (a path relative to the working directory or the repo).
    grid: one grid, or a list of grids whose runs are concatenated (e.g. branches to fit and a
      larger run to hold out).
    overrides: {"train.log_every": 5, ...} applied to every run.
    batch_size: sequences per step, a number or a function of the model stats
      (dict with params, non_embedding_params, flops_per_token, n_layers, d_model; in a SizeGrid or
      IsoFlopGrid also the run's seq_len, budget and wanted tokens and flops, e.g. a fitted
      rule's B_opt(C): `bigmodel.scaling.hyperparams.fitted_rule`); None keeps the base config's.
    batch_sizes: a list to sweep (SizeGrid, IsoFlopGrid), e.g. [8, 16, 32], in place of batch_size:
      every (size, D or budget) trains at each, its steps = tokens / (batch · seq_len), and run
      names get a `-b<batch>` part (only then, so existing names stay as they are).
    rules: RunPlan → {"optim.lr": ..., "optim.warmup_steps": ...}, the visible per-size rules.
    learning_rates: a list to sweep; it replaces the lr the rules chose.
    analysis: e.g. {"law": "power", "x": "params", "holdout": "largest", "bootstrap": 200}.
    resources: RunPlan → {"gpus": 1, "hosts": 1, "cpus": 8, "memory_gb": 32, "time_limit_min": 60},
      what each run asks of the machines (`bigmodel.scaling.resources`); None: one host, GPUs not managed.
    """

    base_config: str
    grid: SizeGrid | IsoFlopGrid | BranchGrid | Sequence[SizeGrid | IsoFlopGrid | BranchGrid]
    overrides: Mapping[str, Any] = dataclasses.field(default_factory=dict)
    batch_size: int | Callable[[dict], int] | None = None
    rules: Callable[[RunPlan], Mapping[str, Any]] | None = None
    seeds: Sequence[int] = (0,)
    learning_rates: Sequence[float] | None = None
    batch_sizes: Sequence[int] | None = None
    analysis: Mapping[str, Any] | None = None
    resources: Callable[[RunPlan], Mapping[str, Any]] | None = None


@dataclasses.dataclass(frozen=True)
class Run:
    """One training run: `config_spec` + `overrides` is its whole config."""

    name: str
    config_spec: str
    overrides: dict[str, str]
    params: int
    non_embedding_params: int
    flops_per_token: int
    tokens: int
    flops: int
    steps: int
    batch_size: int
    seq_len: int
    learning_rate: float
    seed: int
    budget: float | None = None
    resources: Resources = Resources()
    role: str = ""  # "stable": a BranchGrid's warmup-stable run (not a point of the fit); "branch": its cooldowns
    parent: str = ""  # a branch's stable run, a sibling folder of its own in the sweep directory
    init_step: int = 0  # where a branch starts from its parent

    def command(self, workdir: str | Path, python: str = "python") -> list[str]:
        """The argv that trains this run into `workdir` (resuming if it exists); a branch starts
        from its parent's folder beside `workdir`."""
        flags = [f"--config.{key}={value}" for key, value in self.overrides.items()]
        if self.parent:
            flags.append(f"--config.train.init_from={Path(workdir).parent / self.parent}")
        return [python, "-m", "bigmodel", "train", "--config", self.config_spec, "--workdir", str(workdir), *flags]

    @property
    def trained_flops(self) -> float:
        """The FLOPs this run itself computes: a branch only its steps after init_step."""
        return self.flops * (self.steps - self.init_step) / self.steps

    def command_line(self, workdir: str | Path) -> str:
        return shlex.join(self.command(workdir))

    def summary(self) -> dict[str, Any]:
        """The JSON row `sweep --dry-run --json` prints."""
        row = {key: getattr(self, key) for key in (
            "name", "params", "non_embedding_params", "tokens", "flops", "steps", "batch_size",
            "seq_len", "flops_per_token", "learning_rate", "seed", "budget", "role", "parent", "init_step",
        )}
        row["overrides"] = dict(self.overrides)
        row["resources"] = as_dict(self.resources)
        return row


# ----------------------------------------------------------------------------- size helpers


def sizes_between(min_non_embedding_params: float, max_non_embedding_params: float, count: int) -> list[dict[str, int]]:
    """`count` log-spaced targets snapped to the preset family, duplicates dropped (small sizes
    are 8× apart, so asking for many small sizes returns fewer)."""
    if not 0 < min_non_embedding_params <= max_non_embedding_params or count < 1:
        raise ConfigError("sizes_between needs 0 < min <= max and count >= 1")
    ratio = max_non_embedding_params / min_non_embedding_params
    targets = [min_non_embedding_params * ratio ** (i / max(count - 1, 1)) for i in range(count)]
    shapes = []
    for target in targets:
        shape = shape_for_params(target)
        if shape not in shapes:
            shapes.append(shape)
    return shapes


def shape_of(n_layers: int, d_model: int) -> dict[str, int]:
    """A shape off the preset ladder that keeps the family's head_dim (32) and d_ff (4·d_model)
    rules: for width sweeps at a fixed depth. d_model must be a multiple of 32."""
    return {"n_layers": n_layers, "d_model": d_model, "n_heads": d_model // HEAD_DIM, "d_ff": FF_MULT * d_model}


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


# ----------------------------------------------------------------------------- formatting


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


# ----------------------------------------------------------------------------- expansion


def resolve_config_spec(spec: str) -> str:
    """Keep a spec whose file exists from the working directory; else point at the repo's copy."""
    path, sep, arg = spec.partition(":")
    if Path(path).is_file() or not (REPO_ROOT / path).is_file():
        return spec
    return f"{REPO_ROOT / path}{sep}{arg}"


def token_targets(grid: SizeGrid | IsoFlopGrid, stats: dict) -> list[tuple[float | None, float]]:
    """(budget, tokens wanted) pairs for one size."""
    if isinstance(grid, SizeGrid):
        if (grid.tokens is None) == (grid.tokens_per_param is None):
            raise ConfigError("SizeGrid needs exactly one of tokens= or tokens_per_param=")
        as_list = lambda value: list(value) if isinstance(value, (list, tuple)) else [value]  # noqa: E731
        if grid.tokens is not None:
            return [(None, float(tokens)) for tokens in as_list(grid.tokens)]
        return [(None, ratio * stats["params"]) for ratio in as_list(grid.tokens_per_param)]
    low, high = grid.tokens_per_param_range
    targets = []
    for budget in grid.budgets:
        tokens = budget / stats["flops_per_token"]
        if low <= tokens / stats["params"] <= high:
            targets.append((float(budget), tokens))
    return targets


def batch_size_for(study: Study, stats: dict, base_batch_size: int) -> int:
    if study.batch_size is None:
        return base_batch_size
    value = study.batch_size(stats) if callable(study.batch_size) else study.batch_size
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ConfigError(f"the study's batch_size must be a positive int, got {value!r}")
    return value


def batch_sizes_for(study: Study, stats: dict, base_batch_size: int) -> list[int]:
    """The batch sizes one (size, D) trains at: the study's batch_sizes sweep, else its one batch size."""
    if study.batch_sizes is None:
        return [batch_size_for(study, stats, base_batch_size)]
    if study.batch_size is not None:
        raise ConfigError("the study gives both batch_size and batch_sizes: batch_sizes=[...] sweeps in place of batch_size, drop one")
    values = list(study.batch_sizes)
    if not values or any(isinstance(value, bool) or not isinstance(value, int) or value < 1 for value in values):
        raise ConfigError(f"the study's batch_sizes must be a list of positive ints, got {study.batch_sizes!r}")
    if len(set(values)) < len(values):
        raise ConfigError(f"the study's batch_sizes {values} repeat a value: list each batch size once")
    return values


def batch_targets(study: Study, stats: dict, base_batch_size: int, seq_len: int) -> list[tuple[float | None, float, int]]:
    """(budget, tokens wanted, batch size) for one size: every D or budget at each batch size.
    A batch-size function also sees the run's seq_len, budget and wanted tokens and flops."""
    targets = []
    for budget, tokens in token_targets(study.grid, stats):
        wanted = {**stats, "seq_len": seq_len, "budget": budget, "tokens": tokens, "flops": tokens * stats["flops_per_token"]}
        targets += [(budget, tokens, batch_size) for batch_size in batch_sizes_for(study, wanted, base_batch_size)]
    return targets


def rule_overrides(study: Study, plan: RunPlan) -> dict[str, Any]:
    overrides = dict(study.rules(plan)) if study.rules else {}
    owned = [key for key in overrides if key in GRID_KEYS]
    if owned:
        raise ConfigError(f"rules set {owned[0]}, which the grid decides: use Study.batch_size or the grid instead")
    return overrides


def run_resources(study: Study, plan: RunPlan) -> Resources:
    if study.resources is None:
        return Resources()
    where = f"the study's resources for L{plan.n_layers}-d{plan.d_model}"
    return resources_from(study.resources(plan), where)


def expand(study: Study) -> list[Run]:
    """Every run of the study, in grid order (sizes, then budgets, batch sizes, seeds, lrs); a
    BranchGrid's stable run comes right before its branches."""
    if isinstance(study.grid, (list, tuple)):  # several grids, e.g. the fitted ones and a held-out run
        runs = [run for grid in study.grid for run in expand(dataclasses.replace(study, grid=grid))]
        check_names(runs)
        return runs
    if isinstance(study.grid, BranchGrid):
        if study.batch_sizes is not None:
            raise ConfigError("batch_sizes=[...] sweeps SizeGrid and IsoFlopGrid runs, not a BranchGrid (its branches share "
                              "their stable run's batch): use an IsoFlopGrid, or one batch_size")
        from bigmodel.scaling.branches import expand_branches

        return expand_branches(study)
    if not isinstance(study.grid, (SizeGrid, IsoFlopGrid)):
        raise ConfigError(f"Study.grid must be a SizeGrid, IsoFlopGrid or BranchGrid, got {type(study.grid).__name__}")
    spec = resolve_config_spec(study.base_config)
    base_overrides = {key: format_override(value) for key, value in study.overrides.items()}
    base = load_config(spec, base_overrides)
    runs = []
    for size in study.grid.sizes:
        shape = resolve_shape(size)
        shape_overrides = {f"model.{key}": str(value) for key, value in shape.items()}
        config = apply_overrides(base, shape_overrides)
        stats = run_stats(config)
        stats.update(n_layers=shape["n_layers"], d_model=shape["d_model"])
        seq_len = config.data.seq_len
        for budget, wanted_tokens, batch_size in batch_targets(study, stats, config.train.batch_size, seq_len):
            steps = max(1, round(wanted_tokens / (batch_size * seq_len)))
            tokens = steps * batch_size * seq_len
            for seed in study.seeds:
                plan = RunPlan(
                    n_layers=shape["n_layers"], d_model=shape["d_model"], params=stats["params"],
                    non_embedding_params=stats["non_embedding_params"], flops_per_token=stats["flops_per_token"],
                    tokens=tokens, steps=steps, batch_size=batch_size, seq_len=seq_len, budget=budget, seed=seed,
                )
                chosen = rule_overrides(study, plan)
                resources = run_resources(study, plan)
                for learning_rate in study.learning_rates or [chosen.get("optim.lr", config.optim.lr)]:
                    overrides = {
                        **base_overrides, **shape_overrides,
                        "train.steps": str(steps), "train.batch_size": str(batch_size), "seed": str(seed),
                        **{key: format_override(value) for key, value in chosen.items()},
                        "optim.lr": format_override(float(learning_rate)),
                    }
                    runs.append(Run(
                        name=run_name(shape, tokens, float(learning_rate), seed, budget, batch_size if study.batch_sizes else None),
                        config_spec=spec,
                        overrides=overrides, params=stats["params"], non_embedding_params=stats["non_embedding_params"],
                        flops_per_token=stats["flops_per_token"], tokens=tokens, flops=stats["flops_per_token"] * tokens,
                        steps=steps, batch_size=batch_size, seq_len=seq_len, learning_rate=float(learning_rate),
                        seed=seed, budget=budget, resources=resources,
                    ))
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
