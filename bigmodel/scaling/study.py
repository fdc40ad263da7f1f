"""A scaling study as data: its grids (`SizeGrid`, `IsoFlopGrid`, `BranchGrid`), the `Study`
that holds them with its rules, what a rule sees of a run (`RunPlan`), and the `Run`s a study
expands to (`expand.py`). Experiment files import these through `sweep.py`, the experiment
language.
"""

from __future__ import annotations

import dataclasses
import shlex
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

from bigmodel.scaling.resources import Resources, as_dict


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
    ladder: compute budgets C (FLOPs), each above the grid's largest run: once the grid is fitted
      (analysis: a chinchilla law with a bootstrap), the run the fit recommends at each C is
      trained and scored against its prediction interval (`bigmodel.scaling.ladder`).
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
    ladder: Sequence[float] | None = None


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
    role: str = ""  # "stable": a BranchGrid's warmup-stable run (not a point of the fit); "branch": its cooldowns; "rung": a ladder's run
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
