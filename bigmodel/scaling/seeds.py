"""Seed-to-seed spread: how far a fit's points move when only the seed changes.

A study with `seeds=(0, 1, 2)` writes one registry row per seed, and every fit uses them all.
What the fit's residuals cannot say is how much of them is noise a rerun would reshuffle: a
0.01-nat miss means little where seeds alone spread 0.01 nats. Replicates are rows that differ
only in their seed: a sweep names them alike but for the `-s<seed>` part of the name; a CSV
of the user's own runs (no names) repeats the same (N, D).
"""

from __future__ import annotations

import re

import numpy as np

from bigmodel.scaling.points import Points

SEED_PART = re.compile(r"-s\d+(?=-|$)")


def replicate_key(points: Points, index: int) -> tuple:
    """What a point shares with its replicates: its run name without the seed, else its (N, D)."""
    if points.names:
        return (SEED_PART.sub("", points.names[index]),)
    return (float(points.non_embedding_params[index]), float(points.tokens[index]))


def replicate_groups(points: Points) -> list[np.ndarray]:
    """Indices of each group of two or more replicates, in first-seen order."""
    groups: dict[tuple, list[int]] = {}
    for index in range(len(points)):
        groups.setdefault(replicate_key(points, index), []).append(index)
    return [np.asarray(members) for members in groups.values() if len(members) >= 2]


def seed_spread(points: Points) -> dict | None:
    """Per replicate group: N, D, seeds, mean and sample standard deviation of the loss; and the
    pooled standard deviation over all groups (degrees of freedom weighted), the size of a
    difference that seeds alone produce. None where no point has a replicate."""
    groups = replicate_groups(points)
    if not groups:
        return None
    rows, squares, degrees = [], 0.0, 0
    for members in groups:
        loss = points.loss[members]
        rows.append({"non_embedding_params": float(points.non_embedding_params[members[0]]),
                     "tokens": float(points.tokens[members[0]]), "seeds": int(loss.size),
                     "mean": float(loss.mean()), "std": float(loss.std(ddof=1))})
        squares += float(((loss - loss.mean()) ** 2).sum())
        degrees += loss.size - 1
    return {"groups": rows, "pooled_std": float(np.sqrt(squares / degrees)), "degrees_of_freedom": degrees}


def describe_spread(spread: dict) -> str:
    """`seeds: pooled std 0.0042 nats (4 groups, 8 runs)`."""
    runs = sum(group["seeds"] for group in spread["groups"])
    return f"seeds: pooled std {spread['pooled_std']:.4f} nats ({len(spread['groups'])} groups, {runs} runs)"
