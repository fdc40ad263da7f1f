"""Scaling plots on a synthetic sweep and synthetic CSVs, all drawn from known laws: each figure
draws the law it is given, and the loss-vs-compute frontier shows the loss its points show."""

from __future__ import annotations

import csv
import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from bigmodel.cli import main
from bigmodel.scaling import fit as fitting
from bigmodel.scaling import plot, plot_figures, registry
from bigmodel.scaling.plot_data import RunCurve, load_input, split_metrics
from bigmodel.scaling.plot_style import law_label

REPO = Path(__file__).resolve().parent.parent
# L(N) = E + A·N^-alpha, the law the synthetic sweep's final losses follow.
TRUE_E, TRUE_A, TRUE_ALPHA = 1.5, 60.0, 0.35
SIZES = [20_000, 50_000, 120_000, 300_000, 800_000]
TOKENS_PER_STEP = 8_192
STEPS = 200
CHINCHILLA_LAW = {"law": "chinchilla", "E": 1.69, "A": 406.4, "B": 410.7, "alpha": 0.34, "beta": 0.28}


def true_loss(n):
    return TRUE_E + TRUE_A * np.asarray(n, dtype=float) ** -TRUE_ALPHA


def write_run(run_dir: Path, n: int, rng) -> dict:
    """metrics.jsonl (training lines every 5 steps, eval every 50) and summary.json for one run."""
    run_dir.mkdir(parents=True)
    final = float(true_loss(n))
    tokens = STEPS * TOKENS_PER_STEP
    flops_per_token = 6 * n + 6 * 32 * 256  # the head's matmul on top of 6N, as flops.py counts
    lines = []
    for step in range(5, STEPS + 1, 5):
        seen = step * TOKENS_PER_STEP
        clean = final + (5.5 - final) * ((seen / tokens) ** -0.5 - 1) / ((STEPS / 5) ** 0.5 - 1)
        lines.append({"step": step, "loss": clean + rng.normal(0, 0.02), "lr": 1e-3, "grad_norm": 1.0,
                      "tokens_seen": seen, "tokens_per_s": 1e4, "step_time_s": 0.1})
        if step % 50 == 0:  # validation sits 0.03 above the clean training loss, and ends at the final loss
            value = final if step == STEPS else clean + 0.03
            lines.append({"step": step, "eval_loss": value, "eval_bpb": value / np.log(2)})
    text = "\n".join(json.dumps(line) for line in lines) + '\n{"step": 201, "loss'  # torn last line
    (run_dir / "metrics.jsonl").write_text(text)
    summary = {"params": n + 2 * 32 * 256, "non_embedding_params": n, "flops_per_token": flops_per_token,
               "tokens": tokens, "flops": flops_per_token * tokens, "final_loss": final - 0.01, "final_eval_loss": final}
    (run_dir / "summary.json").write_text(json.dumps(summary))
    return summary


def make_sweep(root: Path) -> Path:
    """Five finished runs following the true law, plus one failed run that must not be drawn."""
    rng = np.random.default_rng(0)
    rows = []
    for n in SIZES:
        name = f"n{n}"
        summary = write_run(root / name, n, rng)
        rows.append({"name": name, "status": "done", **{k: summary[k] for k in ("params", "non_embedding_params", "tokens", "flops", "final_loss", "final_eval_loss")},
                     "eval_bpb": summary["final_eval_loss"] / np.log(2), "wall_time_s": 10, "error": ""})
    rows.append({"name": "broken", "status": "failed", "params": 1, "non_embedding_params": 1, "tokens": 1, "flops": 1,
                 "final_loss": "", "final_eval_loss": "", "eval_bpb": "", "wall_time_s": 1, "error": "exit 1: boom"})
    registry.write_registry(root, rows)
    return root


@pytest.fixture
def sweep_dir(tmp_path) -> Path:
    return make_sweep(tmp_path / "sweep")


def make_isoflop_csv(path: Path) -> Path:
    """Three budgets × five sizes; each profile a parabola in log10 N with vertex 0.1·C^0.5."""
    with path.open("w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["params", "tokens", "loss", "flops"])
        for compute in (1e15, 4e15, 1.6e16):
            n_opt = 0.1 * compute**0.5
            for factor in (0.25, 0.5, 1, 2, 4):
                n = n_opt * factor
                loss = 1.5 + 30 * compute**-0.1 + 0.3 * np.log10(factor) ** 2
                writer.writerow([n, compute / (6 * n), loss, compute])
    return path


@pytest.fixture
def isoflop_csv(tmp_path) -> Path:
    return make_isoflop_csv(tmp_path / "isoflop.csv")


def assert_real_png(path: Path, size: tuple[int, int]) -> None:
    """The PNG has the pixel size asked for and is a picture, not a blank canvas."""
    image = Image.open(path)
    assert image.size == size
    colours = np.unique(np.asarray(image.convert("RGB")).reshape(-1, 3), axis=0)
    assert len(colours) > 50, f"{path.name} has only {len(colours)} colours"
    assert path.stat().st_size > 30_000
    assert path.with_suffix(".svg").stat().st_size > 10_000


def gids(figure, gid: str) -> list:
    return [artist for axes in figure.axes for artist in axes.get_children() if artist.get_gid() == gid]


def exit_code(argv: list[str]) -> int:
    """`python -m bigmodel ARGV`'s exit code, in-process (argparse exits on a usage error)."""
    try:
        return main(argv)
    except SystemExit as stop:
        return stop.code


def test_run_metrics_keep_the_curve_past_a_torn_line(sweep_dir):
    train, evals = split_metrics(registry.run_metrics(sweep_dir, "n20000"))
    assert len(train) == STEPS // 5
    np.testing.assert_allclose(evals[:, 1], [50 * TOKENS_PER_STEP, 100 * TOKENS_PER_STEP, 150 * TOKENS_PER_STEP, 200 * TOKENS_PER_STEP])


def test_split_metrics_lets_a_resumed_run_overwrite_its_repeated_steps():
    lines = [{"step": 10, "loss": 3.0, "tokens_seen": 100}, {"step": 20, "loss": 2.9, "tokens_seen": 200},
             {"step": 20, "eval_loss": 3.1}, {"step": 20, "loss": 2.5, "tokens_seen": 200},  # resumed from step 10
             {"step": 30, "loss": 2.4, "tokens_seen": 300}]
    train, evals = split_metrics(lines)
    assert train[:, 1].tolist() == [100, 200, 300] and train[:, 2].tolist() == [3.0, 2.5, 2.4]
    assert evals[:, 1].tolist() == [200] and evals[:, 2].tolist() == [3.1]


def test_load_sweep_uses_done_runs_and_eval_loss(sweep_dir):
    data = load_input(sweep_dir)
    np.testing.assert_allclose(data.points.non_embedding_params, SIZES)
    np.testing.assert_allclose(data.points.loss, true_loss(SIZES))
    assert data.points.loss_name == "validation loss"
    assert [curve.name for curve in data.curves] == [f"n{n}" for n in SIZES]


def test_law_label_writes_the_law_out():
    assert law_label({"law": "power", "E": 1.2, "A": 35.0, "alpha": 0.31}) == r"$L = 1.20 + 35\,N^{-0.310}$"
    assert r"\times 10^{5}" in law_label({"law": "power", "E": 1.2, "A": 2.5e5, "alpha": 0.31})
    assert law_label(CHINCHILLA_LAW) == r"$L = 1.69 + 406\,N^{-0.340} + 411\,D^{-0.280}$"


def test_plot_all_on_a_sweep_with_its_fit_json(sweep_dir, tmp_path):
    measured = float(true_loss(SIZES[-1]))
    fit = {"law": "power", "x": "non_embedding_params", "E": TRUE_E, "A": TRUE_A, "alpha": TRUE_ALPHA, "objective": 0, "n_points": 4,
           "holdout": {"non_embedding_params": SIZES[-1], "tokens": 1, "measured_loss": measured,
                       "predicted_loss": measured + 0.01, "relative_error": 0.01 / measured}}
    (sweep_dir / "fit.json").write_text(json.dumps(fit))
    notes = []
    paths = plot.plot_all(sweep_dir, tmp_path / "plots", note=notes.append)
    assert sorted({path.stem for path in paths}) == ["loss_vs_compute", "loss_vs_params", "training_curves"]
    assert len(paths) == 6 and all(path.exists() for path in paths)
    assert not any("isoflop" in text for text in notes)  # no budget shared by 3 runs: no isoFLOP study, nothing skipped
    assert any("no bootstrap samples" in text for text in notes)
    assert not any("fitted here" in text for text in notes)
    for name in ("loss_vs_compute", "loss_vs_params", "training_curves"):
        assert_real_png(tmp_path / "plots" / f"{name}.png", (1200, 825))


def test_training_curves_one_line_per_run(sweep_dir):
    figure = plot_figures.plot_training_curves(load_input(sweep_dir).curves)
    assert len(gids(figure, "run")) == len(SIZES)
    assert len(gids(figure, "eval")) == len(SIZES)


# ----------------------------------------------------------------------------- loss vs compute


def test_compute_frontier_is_non_increasing_and_reaches_the_largest_run():
    compute = np.array([1.0, 2.0, 2.0, 4.0, 8.0, 16.0])
    loss = np.array([3.0, 2.5, 2.7, 2.6, 2.2, 2.4])  # the largest run is worse than the one before it
    front_compute, front_loss = plot_figures.compute_frontier(compute, loss)
    assert front_compute.tolist() == [1.0, 2.0, 8.0, 16.0]
    assert front_loss.tolist() == [3.0, 2.5, 2.2, 2.2]  # flat up to the largest run, never up
    assert plot_figures.compute_frontier([1.0, np.nan, 4.0], [2.0, 1.0, np.nan])[0].tolist() == [1.0]


def test_loss_vs_compute_frontier_uses_validation_curves_and_reaches_the_largest_run(sweep_dir):
    data = load_input(sweep_dir)
    points = data.points
    compute_law = {"law": "power", "x": "flops", "E": 1.0, "A": 300.0, "alpha": 0.2}
    figure = plot_figures.plot_loss_vs_compute(points.flops, points.loss, points.non_embedding_params, data.curves, fit=compute_law)
    assert len(gids(figure, "run")) == len(SIZES)
    (law,) = gids(figure, "fit")
    assert law.get_label() == law_label(compute_law, "C")
    np.testing.assert_allclose(law.get_ydata(), fitting.power_law(law.get_xdata(), 1.0, 300.0, 0.2))
    (frontier,) = gids(figure, "frontier")
    compute, loss = frontier.get_data()
    assert np.all(np.diff(compute) > 0) and np.all(np.diff(loss) <= 0)
    assert compute[-1] == points.flops.max() and loss[-1] == pytest.approx(points.loss.min())
    # Every frontier value is a validation loss (an eval point or a final point), never a training loss.
    validation = np.concatenate([points.loss, *[curve.eval_loss for curve in data.curves]])
    training = np.concatenate([curve.loss for curve in data.curves])
    assert all(np.isclose(value, validation).any() for value in loss)
    assert not any(np.isclose(value, training, atol=1e-12).any() for value in loss)
    # Each run's line is its validation curve against tokens × FLOPs/token.
    for line, curve in zip(gids(figure, "run"), data.curves):
        np.testing.assert_allclose(line.get_ydata(), curve.eval_loss)
        np.testing.assert_allclose(line.get_xdata(), curve.eval_tokens * curve.flops_per_token)


def test_a_run_without_eval_points_falls_back_to_training_loss_labelled():
    curve = RunCurve(name="r", non_embedding_params=1e4, tokens=np.array([10.0, 20.0, 40.0]), loss=np.array([3.0, 2.0, 2.1]),
                     eval_tokens=np.zeros(0), eval_loss=np.zeros(0), flops_per_token=6e4)
    compute, loss = curve.compute_curve()
    assert compute.tolist() == [6e5, 1.2e6, 2.4e6] and loss.tolist() == [3.0, 2.0, 2.1]
    figure = plot_figures.plot_loss_vs_compute([2.4e6], [2.1], [1e4], [curve], loss_name="training loss")
    (frontier,) = gids(figure, "frontier")
    assert frontier.get_xdata().tolist() == [6e5, 1.2e6, 2.4e6] and frontier.get_ydata().tolist() == [3.0, 2.0, 2.0]
    labels = [text.get_text() for text in figure.axes[0].get_legend().get_texts()]
    assert "training loss, one line per run" in labels and "final training loss, one point per run" in labels


# ----------------------------------------------------------------------------- loss vs size


def test_loss_vs_params_band_holdout_and_law(sweep_dir):
    points = load_input(sweep_dir).points
    predicted = float(true_loss(SIZES[-1])) * 1.02
    fit = {"law": "power", "E": TRUE_E, "A": TRUE_A, "alpha": TRUE_ALPHA,
           "samples": [{"E": TRUE_E + d, "A": TRUE_A, "alpha": TRUE_ALPHA} for d in np.linspace(-0.05, 0.05, 50)],
           "holdout": {"non_embedding_params": SIZES[-1], "tokens": 1, "measured_loss": float(points.loss[-1]),
                       "predicted_loss": predicted, "relative_error": 0.02}}
    figure = plot_figures.plot_loss_vs_params(points.non_embedding_params, points.tokens, points.loss, fit)
    (drawn,) = gids(figure, "points")
    assert len(drawn.get_offsets()) == len(SIZES) - 1  # the held-out run is not drawn as a fitted point
    (star,) = gids(figure, "holdout")
    np.testing.assert_allclose(star.get_offsets()[0], [SIZES[-1], points.loss[-1]])
    (diamond,) = gids(figure, "holdout-prediction")
    np.testing.assert_allclose(diamond.get_offsets()[0], [SIZES[-1], predicted])
    (band,) = gids(figure, "band")
    (law,) = gids(figure, "fit")
    assert law.get_label() == law_label(fit)
    np.testing.assert_allclose(law.get_ydata(), true_loss(law.get_xdata()))
    # The band spans ±0.05 in E around the law: check its height at the first grid point.
    vertices = band.get_paths()[0].vertices
    assert np.ptp(vertices[np.isclose(vertices[:, 0], vertices[0, 0]), 1]) == pytest.approx(0.095, abs=0.01)


def test_a_chinchilla_fit_is_drawn_as_its_law_at_each_d():
    params = np.tile([1e6, 4e6, 1.6e7], 2)
    tokens = np.repeat([2e8, 8e8], 3)
    loss = fitting.chinchilla_loss(params, tokens, 1.69, 406.4, 410.7, 0.34, 0.28) * 1.01
    figure = plot_figures.plot_loss_vs_params(params, tokens, loss, CHINCHILLA_LAW)
    curves = gids(figure, "fit")
    assert len(curves) == 2 and len(gids(figure, "points")) == 2  # one curve and one colour per D
    for curve, token_count in zip(curves, [2e8, 8e8]):
        n = curve.get_xdata()
        np.testing.assert_allclose(curve.get_ydata(), fitting.chinchilla_loss(n, token_count, 1.69, 406.4, 410.7, 0.34, 0.28))
        assert n.min() < 1e6 and n.max() > 1.6e7
    assert curves[0].get_color() != curves[1].get_color()
    labels = [text.get_text() for text in figure.axes[0].get_legend().get_texts()]
    assert labels[:2] == ["runs at D = 200M (3)", "runs at D = 800M (3)"] and labels[2].startswith(law_label(CHINCHILLA_LAW))


def test_a_chinchilla_fit_over_many_d_is_drawn_at_each_point(isoflop_csv):
    points = registry.load_points(isoflop_csv)
    figure = plot_figures.plot_loss_vs_params(points.non_embedding_params, points.tokens, points.loss, CHINCHILLA_LAW)
    (markers,) = gids(figure, "fit")
    expected = fitting.chinchilla_loss(points.non_embedding_params, points.tokens, 1.69, 406.4, 410.7, 0.34, 0.28)
    np.testing.assert_allclose(markers.get_offsets(), np.column_stack([points.non_embedding_params, expected]))


def test_plot_command_draws_the_given_chinchilla_fit_not_a_fresh_power_law(isoflop_csv, tmp_path, capsys):
    fit_path = tmp_path / "chinchilla.json"
    fit_path.write_text(json.dumps({**CHINCHILLA_LAW, "objective": 0.1, "n_points": 15}))
    assert main(["plot", str(isoflop_csv), "--fit", str(fit_path), "--out", str(tmp_path / "plots")]) == 0
    out = capsys.readouterr().out
    assert "N^-" not in out and "loss_vs_params skipped" not in out  # no 1-D law fitted through mixed D
    # Sizes recur across the budgets at several D, so the surface's own figures are drawn too.
    assert sorted(path.stem for path in (tmp_path / "plots").glob("*.png")) == [
        "compute_frontier", "isoflop", "isoflop_slices", "loss_vs_compute", "loss_vs_params", "loss_vs_tokens"]
    assert_real_png(tmp_path / "plots" / "loss_vs_params.png", (1200, 825))


# ----------------------------------------------------------------------------- the commands


@pytest.mark.slow  # fits the sweep afresh in a subprocess
def test_cli_refits_a_sweep_without_fit_json(sweep_dir, tmp_path):
    result = subprocess.run([sys.executable, "tools/plot_scaling.py", str(sweep_dir), "--out", str(tmp_path / "out")],
                            cwd=REPO, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr
    assert "isoflop" not in result.stdout  # a size sweep asks for no isoFLOP figure
    (law,) = [line for line in result.stdout.splitlines() if "fitted here" in line]
    alpha = float(law.split("N^-")[1].split()[0])
    assert alpha == pytest.approx(TRUE_ALPHA, abs=0.02)  # noise-free final losses: the fit is near exact
    assert sorted(path.name for path in (tmp_path / "out").glob("*.png")) == ["loss_vs_compute.png", "loss_vs_params.png", "training_curves.png"]
    assert_real_png(tmp_path / "out" / "loss_vs_params.png", (1200, 825))


def test_cli_bad_input_is_one_error_line(tmp_path):
    result = subprocess.run([sys.executable, "tools/plot_scaling.py", str(tmp_path / "missing.csv"), "--out", str(tmp_path / "out")],
                            cwd=REPO, capture_output=True, text=True, timeout=120)
    assert result.returncode == 2
    assert result.stderr.startswith("error: ") and "missing.csv" in result.stderr and len(result.stderr.splitlines()) == 1
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize(
    "case, message",
    [
        ("missing input", "does not exist"),
        ("empty csv", "is empty"),
        ("negative cell", "column 'loss' is '-3'"),
        ("out is a file", "is a file"),
        ("fit not found", "not found"),
        ("fit not json", "is not a whole JSON object"),
        ("fit of unknown law", "unknown law 'kaplan'"),
        ("fit without its numbers", "the chinchilla fit has no B, beta"),
        ("fit with an old holdout", "the power fit has no holdout[].non_embedding_params"),
        ("no --out", "the following arguments are required: --out"),
    ],
)
def test_plot_command_bad_input_is_one_error_line_exit_2_and_nothing_written(isoflop_csv, tmp_path, capsys, case, message):
    source, out, fit_path = isoflop_csv, tmp_path / "plots", tmp_path / "fit.json"
    extra = []
    if case == "missing input":
        source = tmp_path / "missing.csv"
    elif case == "empty csv":
        source = tmp_path / "empty.csv"
        source.write_text("")
    elif case == "negative cell":
        source = tmp_path / "negative.csv"
        source.write_text("params,tokens,loss\n1e6,2e7,-3\n")
    elif case == "out is a file":
        out.write_text("")
    elif case.startswith("fit"):
        extra = ["--fit", str(fit_path)]
        texts = {"fit not json": "{not json", "fit of unknown law": json.dumps({"law": "kaplan"}),
                 "fit without its numbers": json.dumps({"law": "chinchilla", "E": 1, "A": 2, "alpha": 0.3}),
                 "fit with an old holdout": json.dumps({"law": "power", "E": 1, "A": 2, "alpha": 0.3,
                                                        "holdout": {"params": 1e6, "measured_loss": 3, "predicted_loss": 3}})}
        if case in texts:
            fit_path.write_text(texts[case])
    before = sorted(path.name for path in tmp_path.iterdir())
    argv = ["plot", str(source), *extra] + ([] if case == "no --out" else ["--out", str(out)])
    assert exit_code(argv) == 2
    error = capsys.readouterr().err
    assert error.startswith("error: ") and error.count("\n") == 1 and message in error
    assert sorted(path.name for path in tmp_path.iterdir()) == before
