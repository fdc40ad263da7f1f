"""The eval-curve figure of one run (`bigmodel eval --all`): validation loss at each kept
checkpoint against training tokens seen (log x), over the run's training loss.

A sibling of `plot_figures.plot_training_curves`, with its style (`plot_style`), for one run:
no size colour bar, and no cut of the first steps, which a log-spaced curve exists to show.
"""

from __future__ import annotations

import math

import matplotlib
import numpy as np
from matplotlib.figure import Figure

from bigmodel.scaling.plot_data import split_metrics
from bigmodel.scaling.plot_style import SIZE_COLORMAP, STYLE, new_figure, tidy_log_axis
from bigmodel.scaling.points import loss_unit


def plot_eval_curve(curve: list[dict], records: list[dict], *, title: str) -> Figure:
    """`curve`: eval_curve.json's entries (step, tokens_seen, eval_loss, eval_bpb); `records`:
    the run's metrics.jsonl (its training lines are drawn beneath; none is fine)."""
    tokens = np.array([point["tokens_seen"] for point in curve], dtype=float)
    loss = np.array([point["eval_loss"] for point in curve], dtype=float)
    train, _ = split_metrics(records)
    with matplotlib.rc_context(STYLE):
        figure = new_figure()
        axes = figure.add_subplot()
        shown = train[:, 1] > 0
        if shown.any():
            axes.plot(train[shown, 1], train[shown, 2], color="0.55", linewidth=1.2, label="training loss", gid="train")
        axes.plot(tokens, loss, color=SIZE_COLORMAP(0.35), marker="o", markeredgecolor="black", linewidth=1.5,
                  label=f"validation loss ({len(curve)} checkpoints)", gid="eval")
        bytes_per_token = [point["eval_loss"] / math.log(2) / point["eval_bpb"] for point in curve if point.get("eval_bpb")]
        axes.set(xscale="log", xlabel="tokens seen D", ylabel=f"loss ({loss_unit(bytes_per_token)})", title=title)
        if curve and curve[0]["eval_loss"] > 0:  # bits/byte is loss times one constant: a second scale, not a second line
            per_nat = curve[0]["eval_bpb"] / curve[0]["eval_loss"]
            axes.secondary_yaxis("right", functions=(lambda nats: nats * per_nat, lambda bits: bits / per_nat)).set_ylabel("bits per byte")
        axes.legend(loc="lower left")  # losses fall to the right: the lower left stays empty
        tidy_log_axis(axes.xaxis)
    return figure
