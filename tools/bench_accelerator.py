"""The accelerator table and its correctness checks, in one command (one lease of a GPU).

  python tools/bench_accelerator.py --out results/          # speed table, then the checks
  python tools/bench_accelerator.py --only checks --out r/  # only the bf16-vs-fp32 training check

Speed: `bigmodel bench` on each configs/gpt.py preset at its own micro-batch (one micro-batch per
step, so a step is short and the number is the kernel's, not the accumulation loop's), plus 124m in
float32 and in bf16 without cuDNN as the baselines. Each row reports tokens/s, MFU, whether
cuDNN's fused attention is really in the compiled program, and peak memory: XLA's compiled
estimate (what `plan` reports) next to the allocator's measured peak.

Checks: the same small model trained on kjv three ways (float32 + XLA attention, bf16 + XLA,
bf16 + cuDNN); bf16's final validation loss must be within `--tolerance` of float32's.

Every row runs in its own process, so one out-of-memory row costs that row only; results are
appended to `<out>/results.jsonl` as they come and the Markdown table is printed last.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from configs.gpt import PRESETS  # noqa: E402

GIB = 2**30
CHECK_MODEL = "configs/lm.py:L8"
CHECK_VARIANTS = {
    "float32 + xla": ["--config.model.dtype=float32", "--config.model.attention=xla"],
    "bf16 + xla": ["--config.model.dtype=bfloat16", "--config.model.attention=xla"],
    "bf16 + cudnn": ["--config.model.dtype=bfloat16", "--config.model.attention=cudnn"],
}


def speed_rows(presets: list[str]) -> list[tuple[str, list[str]]]:
    """(label, bench arguments) per row: each preset at its micro-batch, then 124m's baselines at
    one smaller micro-batch that all of them fit: bf16 without cuDNN, float32, and a chunked loss."""
    def at(name: str, micro: int, *extra: str) -> list[str]:
        return ["--config", f"configs/gpt.py:{name}", f"--config.train.batch_size={micro}",
                "--config.train.grad_accum=1", *extra]

    rows = [(f"{name} bf16 auto, micro {PRESETS[name]['micro_batch']}", at(name, PRESETS[name]["micro_batch"]))
            for name in presets]
    if "124m" in presets:
        rows += [("124m bf16 auto, micro 16", at("124m", 16)),
                 ("124m bf16 xla, micro 16", at("124m", 16, "--config.model.attention=xla")),
                 ("124m fp32 xla, micro 16", at("124m", 16, "--config.model.dtype=float32", "--config.model.attention=xla")),
                 ("124m bf16 auto, micro 64, loss chunks 8192", at("124m", 64, "--config.model.loss_chunk_tokens=8192"))]
    return rows


def plan_row(name: str, micro: int, target: str, timeout_s: float) -> dict:
    """`plan --target` on this device: the largest micro-batch it predicts fits (no step is run)."""
    command = [sys.executable, "-m", "bigmodel", "plan", "--config", f"configs/gpt.py:{name}", "--target", target,
               "--json", f"--config.train.batch_size={PRESETS[name]['micro_batch']}", "--config.train.grad_accum=1"]
    return {"row": f"plan {name}", "kind": "plan"} | run_json(command, timeout_s)


def run_json(command: list[str], timeout_s: float) -> dict:
    """Run a bigmodel command; its last stdout line is JSON. Failures become {"error": ...}."""
    start = time.perf_counter()
    try:
        done = subprocess.run(command, capture_output=True, text=True, timeout=timeout_s)
    except subprocess.TimeoutExpired:
        return {"error": f"timed out after {timeout_s:.0f}s"}
    wall_s = time.perf_counter() - start
    lines = [line for line in done.stdout.splitlines() if line.startswith("{")]
    if done.returncode != 0 or not lines:
        tail = (done.stderr.strip().splitlines() or ["(no stderr)"])[-1]
        return {"error": f"exit {done.returncode}: {tail[:300]}", "wall_s": wall_s}
    return json.loads(lines[-1]) | {"wall_s": wall_s}


def bench_row(label: str, arguments: list[str], steps: int, warmup: int, timeout_s: float) -> dict:
    command = [sys.executable, "-m", "bigmodel", "bench", *arguments, "--steps", str(steps), "--warmup", str(warmup)]
    return {"row": label, "kind": "speed"} | run_json(command, timeout_s)


def check_row(label: str, overrides: list[str], train_steps: int, workdir: Path, timeout_s: float) -> dict:
    every = f"--config.eval.every_steps={train_steps}"
    command = [sys.executable, "-m", "bigmodel", "train", "--config", CHECK_MODEL, "--workdir", str(workdir),
               f"--config.train.steps={train_steps}", every, f"--config.checkpoint.every_steps={train_steps}",
               "--config.eval.batches=32", *overrides]
    result = run_json(command, timeout_s)
    summary_path = workdir / "summary.json"
    if summary_path.exists():
        summary = json.loads(summary_path.read_text())
        result |= {key: summary.get(key) for key in ("final_eval_loss", "dtype", "attention")}
    return {"row": label, "kind": "check"} | result


def speed_table(rows: list[dict]) -> str:
    lines = ["| row | tokens/s | MFU | MFU (causal ½) | step ms | cuDNN fmha in HLO | peak mem est. | peak mem measured | compile s |",
             "|---|---:|---:|---:|---:|---|---:|---:|---:|"]
    for row in rows:
        if "error" in row:
            lines.append(f"| {row['row']} | {row['error']} |||||||")
            continue
        measured = row.get("peak_memory_bytes_measured")
        lines.append(
            f"| {row['row']} | {row['tokens_per_s']:,.0f} | {percent(row['mfu'])} | {percent(row['mfu_causal_halved'])} "
            f"| {row['step_time_s'] * 1e3:.1f} | {'yes' if row.get('cudnn_fused_attention') else 'no'} "
            f"| {row['peak_memory_bytes_estimated'] / GIB:.1f} GiB "
            f"| {f'{measured / GIB:.1f} GiB' if measured else 'n/a'} | {row['compile_time_s']:.1f} |")
    return "\n".join(lines)


def check_table(rows: list[dict], tolerance: float) -> tuple[str, bool]:
    losses = {row["row"]: row.get("final_eval_loss") for row in rows}
    reference = losses.get("float32 + xla")
    lines = ["| variant | final eval loss | vs float32 | within tolerance |", "|---|---:|---:|---|"]
    ok = reference is not None
    for row in rows:
        loss = row.get("final_eval_loss")
        if loss is None or reference is None:
            lines.append(f"| {row['row']} | {row.get('error', 'no loss')} |||")
            ok = False
            continue
        relative = (loss - reference) / reference
        within = abs(relative) <= tolerance
        ok &= within
        lines.append(f"| {row['row']} | {loss:.4f} | {relative:+.2%} | {'yes' if within else 'NO'} |")
    return "\n".join(lines), ok


def plan_table(rows: list[dict]) -> str:
    lines = ["| preset | micro-batch planned | peak est. | fits | largest micro-batch that fits |", "|---|---:|---:|---|---:|"]
    for row in rows:
        if "error" in row:
            lines.append(f"| {row['row']} | {row['error']} ||||")
            continue
        lines.append(f"| {row['row'].removeprefix('plan ')} | {row['batch_size']} | {row['peak_bytes'] / GIB:.1f} GiB "
                     f"| {'yes' if row['fits'] else 'no'} | {row['largest_batch_that_fits']} |")
    return "\n".join(lines)


def jax_platform() -> str:
    """JAX's platform, asked in a child so this process never holds GPU memory the rows need."""
    done = subprocess.run([sys.executable, "-c", "import jax; print(jax.default_backend())"], capture_output=True, text=True)
    return done.stdout.strip() or "unknown"


def percent(value: float | None) -> str:
    return "n/a" if value is None else f"{value:.1%}"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, required=True, help="folder for results.jsonl and table.md")
    parser.add_argument("--only", choices=("speed", "plan", "checks"), default=None)
    parser.add_argument("--target", default="h100-80gb", help="plan's --target for the plan rows")
    parser.add_argument("--presets", default="124m,350m,760m,1.3b")
    parser.add_argument("--steps", type=int, default=10)
    parser.add_argument("--warmup", type=int, default=3)
    parser.add_argument("--train_steps", type=int, default=400, help="steps of each correctness run")
    parser.add_argument("--tolerance", type=float, default=0.02, help="relative eval-loss gap bf16 may have")
    parser.add_argument("--timeout", type=float, default=240, help="seconds per row")
    args = parser.parse_args()
    platform = jax_platform()
    if platform not in ("gpu", "cuda"):
        print(f"error: bench_accelerator needs an NVIDIA GPU (JAX sees {platform}): the gpt presets at these micro-batches "
              "need tens of GiB and cuDNN; on a CPU use `python -m bigmodel bench`", file=sys.stderr)
        return 2
    args.out.mkdir(parents=True, exist_ok=True)
    log = args.out / "results.jsonl"

    def record(row: dict) -> dict:
        with log.open("a") as f:
            f.write(json.dumps(row) + "\n")
        print(json.dumps(row), flush=True)
        return row

    speed, checks = [], []
    if args.only in (None, "speed"):
        for label, arguments in speed_rows(args.presets.split(",")):
            speed.append(record(bench_row(label, arguments, args.steps, args.warmup, args.timeout)))
    plans = []
    if args.only in (None, "plan"):
        for name in args.presets.split(","):
            plans.append(record(plan_row(name, PRESETS[name]["micro_batch"], args.target, args.timeout)))
    if args.only in (None, "checks"):
        with tempfile.TemporaryDirectory() as scratch:
            for label, overrides in CHECK_VARIANTS.items():
                workdir = Path(scratch) / label.replace(" + ", "_")
                checks.append(record(check_row(label, overrides, args.train_steps, workdir, args.timeout)))

    report = [f"device: {next((r['device_kind'] for r in speed if 'device_kind' in r), 'see results.jsonl')}"]
    if speed:
        report.append(speed_table(speed))
    if plans:
        report.append(plan_table(plans))
    ok = True
    if checks:
        table, ok = check_table(checks, args.tolerance)
        report.append(f"bf16 vs float32, {CHECK_MODEL} on kjv, {args.train_steps} steps (tolerance {args.tolerance:.0%}):\n{table}")
    text = "\n\n".join(report)
    (args.out / "table.md").write_text(text + "\n")
    print(text)
    return 0 if ok and all("error" not in row for row in speed) else 1


if __name__ == "__main__":
    sys.exit(main())
