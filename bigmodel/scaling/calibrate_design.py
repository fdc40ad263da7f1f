"""The study design a calibration simulates: which runs, which share noise, and how noisy a run is.

A design is the (N, D, C) of every run of a study, read from a sweep directory (its runs.csv; a
path to the runs.csv itself is read as its directory) or a CSV of points, plus two labels per
run the noise model needs:
- `groups`: runs that share training. A branch of a warmup-stable run (registry `parent`)
  shares its stable run's weights and data order with its siblings, so part of its luck is
  theirs. A CSV says it with a `group` or `parent` column; a run without one is its own group.
- `seeds`: the seed of each run (the `-s<seed>` part of a sweep run's name, a CSV's `seed`
  column, else 0). Runs that differ only in their seed are replicates: their spread is one
  run's noise (`noise_sd`).

`synthetic_design` builds the designs a design question compares: the same study with more or
fewer sizes (spaced evenly in log N over the sizes fitted), or every run repeated over seeds.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path

import numpy as np

from bigmodel.scaling.points import FIELDS, Points, read_table
from bigmodel.scaling.registry import REGISTRY_FILE, group_budgets, load_points, read_registry
from bigmodel.scaling.seeds import SEED_PART, seed_spread

GROUP_COLUMNS = ("group", "parent")  # a CSV's column naming the run a row shares training with
CHINCHILLA_PARAMETERS = 5  # e, a, b, α, β: the degrees of freedom a residual σ loses


@dataclasses.dataclass(frozen=True)
class Design:
    """Every run of a study (`points`; their loss is the measured one) and its noise labels."""

    points: Points
    groups: tuple[str, ...]  # runs sharing a label share training (a stable run's branches)
    seeds: tuple[int, ...]
    source: str

    def select(self, mask: np.ndarray) -> Design:
        keep = np.flatnonzero(mask)
        return dataclasses.replace(self, points=self.points.select(mask), groups=tuple(self.groups[i] for i in keep),
                                   seeds=tuple(self.seeds[i] for i in keep))


def _seed_of(name: str) -> int:
    match = SEED_PART.search(name)
    return int(match.group(0)[2:]) if match else 0


def _sweep_labels(directory: Path, points: Points) -> tuple[tuple[str, ...], tuple[int, ...]]:
    """Groups (a branch's parent, else the run itself) and seeds of a sweep's points, by name."""
    parents = {row["name"]: row["parent"] for _, row in read_registry(directory)}
    groups = tuple(parents.get(name) or name for name in points.names)
    return groups, tuple(_seed_of(name) for name in points.names)


def _csv_labels(path: Path, points: Points) -> tuple[tuple[str, ...], tuple[int, ...]]:
    """Groups from a `group`/`parent` column (empty cell: a run of its own), seeds from `seed`."""
    header, rows = read_table(path)
    column = next((name for name in GROUP_COLUMNS if name in header), None)
    groups = tuple((row.get(column) or f"row{line}") if column else f"row{line}" for line, row in rows)
    seeds = []
    for line, row in rows:
        text = row.get("seed") or "0"
        if not text.isdigit():
            raise ValueError(f"{path} line {line}: column 'seed' is {text!r}, not a whole number: fix or delete that row")
        seeds.append(int(text))
    return groups, tuple(seeds)


def _group_field() -> dataclasses.Field | None:
    """`Points`' field of group labels (runs sharing training), where its version has one."""
    return next((field for field in dataclasses.fields(Points) if field.name in ("group", "groups")), None)


def build_points(arrays: dict[str, np.ndarray], loss_name: str, names: tuple[str, ...], groups: tuple[str, ...]) -> Points:
    """`Points` of these runs, with their group labels wherever `Points` has a field for them
    (as a tuple or an array, as the field is declared), so a fit that models shared noise sees them."""
    extra = {}
    field = _group_field()
    if field is not None:
        extra[field.name] = tuple(groups) if "tuple" in str(field.type) else np.asarray(groups)
    return Points(**{name: np.asarray(arrays[name], dtype=float) for name in FIELDS}, loss_name=loss_name, names=names, **extra)


def _point_groups(points: Points) -> tuple[str, ...] | None:
    """The group labels `Points` itself carries, where its version has such a field."""
    field = _group_field()
    values = getattr(points, field.name) if field is not None else None
    if values is None or len(values) != len(points) or not any(str(value) for value in values):
        return None
    return tuple(str(value) or f"run{index}" for index, value in enumerate(values))  # "": a run on its own


def load_design(path: str | Path) -> Design:
    """The design of a sweep directory (or its runs.csv) or of a CSV of points."""
    path = Path(path)
    if path.name == REGISTRY_FILE and path.is_file():
        path = path.parent
    points = load_points(path)
    groups, seeds = _sweep_labels(path, points) if path.is_dir() else _csv_labels(path, points)
    groups = _point_groups(points) or groups
    return Design(points=points, groups=groups, seeds=seeds, source=str(path))


def check_design(design: Design) -> None:
    """A design a Chinchilla law can be fitted to: at least 2 sizes and 2 token counts."""
    for field, words in (("non_embedding_params", "sizes (non_embedding_params)"), ("tokens", "token counts")):
        count = np.unique(getattr(design.points, field)).size
        if count < 2:
            raise ValueError(f"{design.source}: the design has {count} distinct {words}, a law needs at least 2: add runs of another size")


# ----------------------------------------------------------------------------- one run's noise


def seed_sd(design: Design) -> dict | None:
    """σ of log loss from seed replicates (`seeds.seed_spread` on log loss), or None without any."""
    spread = seed_spread(dataclasses.replace(design.points, loss=np.log(design.points.loss)))
    if not spread:
        return None
    return {"sd": spread["pooled_std"], "source": f"seed replicates ({spread['degrees_of_freedom']} degrees of freedom)"}


def residual_sd(design: Design, log_prediction: np.ndarray) -> dict:
    """σ of log loss from a fit's residuals: √(Σr² / (n − 5)), the 5 parameters' degrees of freedom."""
    residuals = np.log(design.points.loss) - log_prediction
    freedom = max(residuals.size - CHINCHILLA_PARAMETERS, 1)
    return {"sd": float(np.sqrt(np.sum(residuals**2) / freedom)), "source": f"residuals of the true law ({freedom} degrees of freedom)"}


# ----------------------------------------------------------------------------- design questions


def _log_interpolate(x_known, y_known, x_new) -> np.ndarray:
    """y at x_new on the least-squares line of log y against log x (y constant where x is)."""
    if np.unique(x_known).size < 2:
        return np.full(len(x_new), float(np.exp(np.mean(np.log(y_known)))))
    slope, intercept = np.polyfit(np.log(x_known), np.log(y_known), 1)
    return np.exp(intercept + slope * np.log(x_new))


def _is_full_grid(points: Points) -> bool:
    """Every size trained on the same set of token counts (an N × D grid)."""
    sizes = np.unique(points.non_embedding_params)
    token_sets = {tuple(np.unique(points.tokens[points.non_embedding_params == n])) for n in sizes}
    return len(token_sets) == 1


def _resized_runs(points: Points, n_sizes: int) -> list[tuple[float, float, float]]:
    """(N, D, C) of `n_sizes` sizes spaced evenly in log N over the design's: a grid keeps every
    token count; an isoFLOP design keeps every budget, D on the budget's own log N–log D line."""
    params, tokens, flops = points.non_embedding_params, points.tokens, points.compute()
    sizes = np.geomspace(params.min(), params.max(), n_sizes)
    if _is_full_grid(points):
        per_token = _log_interpolate(params, flops / tokens, sizes)  # FLOPs per token grows with N
        return [(n, d, c * d) for n, c in zip(sizes, per_token) for d in np.unique(tokens)]
    runs = []
    labels = group_budgets(flops)
    for label in np.unique(labels[labels >= 0]):
        members = labels == label
        budget = float(np.exp(np.mean(np.log(flops[members]))))
        inside = sizes[(sizes >= params[members].min()) & (sizes <= params[members].max())]
        runs += [(n, d, budget) for n, d in zip(inside, _log_interpolate(params[members], tokens[members], inside))]
    return runs


def synthetic_design(design: Design, fitted: np.ndarray, *, sizes: int | None = None, seeds: int | None = None) -> tuple[Design, np.ndarray]:
    """The design with `sizes` sizes and/or every fitted (N, D) trained at `seeds` seeds; the
    held-out runs (`~fitted`) stay as they are. Returns the design and its new fitted mask.

    Losses are placeholders (a simulation replaces them). A design whose runs share training
    (branches) keeps that: the new runs of one size and seed share a group."""
    base = design.select(fitted).points
    if sizes is not None:
        runs = _resized_runs(base, sizes)
    else:
        unique = {(float(n), float(d)): float(c) for n, d, c in zip(base.non_embedding_params, base.tokens, base.compute())}
        runs = [(n, d, c) for (n, d), c in unique.items()]
    branched = len(set(design.groups)) < len(design.groups)
    rows = [(n, d, c, seed, f"N{n:.6g}-s{seed}" if branched else f"N{n:.6g}-D{d:.6g}-s{seed}")
            for seed in range(seeds or 1) for n, d, c in runs]
    held = design.select(~fitted)
    columns = list(zip(*rows)) if rows else [[]] * 5
    arrays = {"non_embedding_params": columns[0], "tokens": columns[1], "flops": columns[2]}
    arrays = {name: np.concatenate([np.asarray(values, dtype=float), getattr(held.points, name)]) for name, values in arrays.items()}
    arrays["loss"] = np.ones(len(arrays["tokens"]))
    groups = tuple(columns[4]) + tuple(f"held-{g}" for g in held.groups)
    points = build_points(arrays, design.points.loss_name, (), groups)
    new = Design(points=points, groups=groups, seeds=tuple(columns[3]) + held.seeds,
                 source=f"{design.source} ({sizes or 'same'} sizes, {seeds or 1} seeds)")
    return new, np.arange(len(points)) < len(rows)
