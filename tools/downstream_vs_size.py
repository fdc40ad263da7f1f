"""Downstream accuracy against pretraining size: fine-tune every finished run of a sweep on one
task and plot test accuracy and macro-F1 against non-embedding parameters N.

  python tools/downstream_vs_size.py runs/demo --task kjv_books --out runs/demo_downstream
  python tools/downstream_vs_size.py runs/demo --task kjv_books --out runs/demo_downstream --scratch \
      --runs '*tok1.6M*,*tok2M*' --config.train.steps=100 --config.task.seq_len=64

Each done row of SWEEP/runs.csv (a BranchGrid's stable runs left out unless --include_stable)
is fine-tuned with `python -m bigmodel finetune --from SWEEP/<run> --task TASK --workdir
OUT/<run>` and any --config.* overrides, one run at a time. A run whose OUT/<run>/test_metrics.json
exists is read, not run again; an unfinished one resumes, so rerunning the command completes a
study. --scratch adds one from-scratch fine-tune per model size (same architecture and budget):
the baseline every pretrained point should beat. Writes OUT/downstream.csv (one row per
fine-tune) and OUT/downstream_vs_size.png (+ .svg): one line per pretraining token count D, the
scratch baseline dashed, the majority-class share dotted.
"""

from __future__ import annotations

import argparse
import csv
import fnmatch
import json
import subprocess
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))  # run from a checkout without installing


from bigmodel.scaling.registry import DONE, STABLE, read_registry  # noqa: E402

COLUMNS = ("name", "init", "from", "non_embedding_params", "pretrain_tokens", "pretrain_eval_loss",
           "test_accuracy", "test_macro_f1", "majority_share", "steps", "best_step")
METRICS_FILE = "test_metrics.json"


def sweep_runs(sweep: Path, include_stable: bool, patterns: list[str]) -> list[dict[str, str]]:
    """The sweep's done rows whose names match one of `patterns` (shell globs; none: all), smallest N first."""
    rows = [row for _, row in read_registry(sweep) if row["status"] == DONE and (include_stable or row["role"] != STABLE)
            and (not patterns or any(fnmatch.fnmatchcase(row["name"], pattern) for pattern in patterns))]
    return sorted(rows, key=lambda row: (float(row["non_embedding_params"]), float(row["tokens"]), row["name"]))


def planned_finetunes(sweep: Path, rows: list[dict], scratch: bool) -> list[dict]:
    """(name, --from run, init, the row it stands for) of every fine-tune to have; the scratch
    baseline of a size borrows the architecture of that size's first run."""
    plans = [{"name": row["name"], "from": sweep / row["name"], "init": "pretrained", "row": row} for row in rows]
    if scratch:
        first_of_size = {}
        for row in rows:
            first_of_size.setdefault(row["non_embedding_params"], row)
        plans += [{"name": f"scratch-N{size}", "from": sweep / row["name"], "init": "scratch", "row": row}
                  for size, row in first_of_size.items()]
    return plans


def finetune(plan: dict, task: str, out: Path, overrides: list[str]) -> int:
    """Run (or resume) one fine-tune in its own process; 0 when it finished."""
    workdir = out / plan["name"]
    if (workdir / METRICS_FILE).exists():
        return 0
    command = [sys.executable, "-m", "bigmodel", "finetune", "--from", str(plan["from"]), "--task", task, "--workdir", str(workdir),
               *(["--scratch"] if plan["init"] == "scratch" else []), *overrides]
    print(f"fine-tuning {plan['name']} ({plan['init']}): {' '.join(command[1:])}", file=sys.stderr, flush=True)
    workdir.parent.mkdir(parents=True, exist_ok=True)
    with open(out / f"{plan['name']}.log", "w") as log:
        return subprocess.run(command, stdout=log, stderr=subprocess.STDOUT, check=False).returncode


def result_row(plan: dict, out: Path) -> dict | None:
    results = json.loads((out / plan["name"] / METRICS_FILE).read_text()) if (out / plan["name"] / METRICS_FILE).exists() else None
    if results is None:
        return None
    supports = [row["support"] for row in results["per_class"]]
    row = plan["row"]
    return {
        "name": plan["name"], "init": plan["init"], "from": row["name"],
        "non_embedding_params": int(float(row["non_embedding_params"])),
        "pretrain_tokens": int(float(row["tokens"])) if plan["init"] == "pretrained" else 0,
        "pretrain_eval_loss": row["final_eval_loss"] if plan["init"] == "pretrained" else "",
        "test_accuracy": results["accuracy"], "test_macro_f1": results["macro"]["f1"],
        "majority_share": max(supports) / sum(supports), "steps": results["steps"], "best_step": results["best_step"],
    }


def write_table(rows: list[dict], path: Path) -> None:
    with open(path, "w", newline="") as file:
        writer = csv.DictWriter(file, fieldnames=COLUMNS, lineterminator="\n")
        writer.writeheader()
        writer.writerows(rows)


def plot(rows: list[dict], task: str, out: Path) -> list[Path]:
    """Two panels (accuracy, macro-F1) against N; a line per pretraining token count."""
    from matplotlib.cm import ScalarMappable
    from matplotlib.colors import LogNorm

    from bigmodel.scaling.plot_style import BUDGET_COLORMAP, WIDE_FIGURE_SIZE_INCHES, new_figure, save_figure, tidy_log_axis

    figure = new_figure(WIDE_FIGURE_SIZE_INCHES)
    panels = figure.subplots(1, 2)
    pretrained = [row for row in rows if row["init"] == "pretrained"]
    scratch = sorted((row for row in rows if row["init"] == "scratch"), key=lambda row: row["non_embedding_params"])
    token_counts = sorted({row["pretrain_tokens"] for row in pretrained})
    norm = LogNorm(vmin=min(token_counts, default=1) / 1.3, vmax=max(token_counts, default=2) * 1.3)
    for axes, metric, label in zip(panels, ("test_accuracy", "test_macro_f1"), ("test accuracy", "test macro-F1")):
        for tokens in token_counts:
            points = sorted((row["non_embedding_params"], row[metric]) for row in pretrained if row["pretrain_tokens"] == tokens)
            axes.plot(*zip(*points), "o-", color=BUDGET_COLORMAP(norm(tokens)), label=f"pretrained on {tokens / 1e6:.2g}M tokens")
        if scratch:
            axes.plot([row["non_embedding_params"] for row in scratch], [row[metric] for row in scratch], "x--", color="black",
                      label="from scratch (same budget)")
        if metric == "test_accuracy" and rows:
            axes.axhline(rows[0]["majority_share"], color="gray", linestyle=":", label="majority class")
        axes.set_xscale("log")
        tidy_log_axis(axes.xaxis)
        axes.set_xlabel("non-embedding parameters N")
        axes.set_ylabel(label)
    panels[0].legend(loc="best")
    figure.colorbar(ScalarMappable(norm=norm, cmap=BUDGET_COLORMAP), ax=panels, label="pretraining tokens D")
    figure.suptitle(f"Fine-tuned on {task}: downstream metric against pretraining size")
    return save_figure(figure, out, "downstream_vs_size")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("sweep", type=Path, help="a sweep's --workdir (its runs.csv and run folders)")
    parser.add_argument("--task", required=True, help="kjv_books or tfds:<name> (as for bigmodel finetune)")
    parser.add_argument("--out", type=Path, required=True, help="where the fine-tunes, downstream.csv and the figure go")
    parser.add_argument("--include_stable", action="store_true", help="also fine-tune a BranchGrid's stable runs")
    parser.add_argument("--runs", default="", metavar="GLOB[,GLOB...]", help="only the runs whose names match (e.g. '*tok1.6M*')")
    parser.add_argument("--scratch", action="store_true", help="add a from-scratch fine-tune per model size (the baseline)")
    parser.add_argument("--dry-run", action="store_true", help="list the fine-tunes and run nothing")
    args, overrides = parser.parse_known_args(argv)
    unknown = [arg for arg in overrides if not arg.startswith("--config.")]
    if unknown:
        parser.error(f"unrecognized arguments: {' '.join(unknown)} (only --config.* overrides pass through to finetune)")
    try:
        patterns = [pattern for pattern in args.runs.split(",") if pattern]
        plans = planned_finetunes(args.sweep, sweep_runs(args.sweep, args.include_stable, patterns), args.scratch)
    except ValueError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    if not plans:
        print(f"error: {args.sweep}/runs.csv has no finished run to fine-tune: finish the sweep first", file=sys.stderr)
        return 2
    if args.dry_run:
        for plan in plans:
            print(f"{plan['name']}\t{plan['init']}\tN={plan['row']['non_embedding_params']}\tfrom {plan['from']}")
        return 0
    args.out.mkdir(parents=True, exist_ok=True)
    failed = [plan["name"] for plan in plans if finetune(plan, args.task, args.out, overrides) != 0]
    rows = [row for row in (result_row(plan, args.out) for plan in plans) if row is not None]
    write_table(rows, args.out / "downstream.csv")
    paths = plot(rows, args.task, args.out) if rows else []
    print(f"wrote {args.out / 'downstream.csv'} ({len(rows)} fine-tunes)" + (f" and {paths[0]} (+ .svg)" if paths else ""))
    if failed:
        print(f"error: {len(failed)} fine-tune(s) failed ({', '.join(failed)}): see {args.out}/<name>.log, then rerun to resume",
              file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
