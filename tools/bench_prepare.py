"""How fast `prepare` turns a real corpus into a dataset: Python's standard-library sources.

  python tools/bench_prepare.py                         # bytes, then a byte-level BPE of 8,192
  python tools/bench_prepare.py --tokenizers bytes --limit 300

The corpus is every `.py` file of this Python's standard library (site-packages left out: about
1,800 files, 31 MB for 3.11), linked into a temporary folder so one glob names exactly it. Each
tokenizer runs `python -m bigmodel prepare` in its own process (`--skip_bad`: a few test files
are deliberately not UTF-8) and reads its prepare.json. Reported: input MB/s over the whole
command (interpreter and imports included), prepare's own MB/s (its documents pass, the
array_record files, training the tokenizer and tokenizing both splits), and MB per CPU-second of
the command (user + system: the number that holds on a machine other jobs share, where the wall
clock does not; the 1-minute load average is shown beside it), with the documents and tokens it
counted. A Markdown table is printed last.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import sysconfig
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def stdlib_sources(limit: int | None) -> list[Path]:
    """The standard library's .py files (not site-packages), sorted; the first `limit` if given."""
    root = Path(sysconfig.get_paths()["stdlib"])
    paths = sorted(path for path in root.rglob("*.py") if "site-packages" not in path.relative_to(root).parts and path.is_file())
    return paths[:limit] if limit else paths


def link_corpus(paths: list[Path], folder: Path) -> None:
    root = Path(sysconfig.get_paths()["stdlib"])
    for path in paths:
        link = folder / path.relative_to(root)
        link.parent.mkdir(parents=True, exist_ok=True)
        link.symlink_to(path)


def run_prepare(corpus: Path, data_dir: Path, tokenizer: str, vocab_size: int) -> dict:
    command = [sys.executable, "-m", "bigmodel", "prepare", "--name", f"stdlib_{tokenizer}", "--files", str(corpus / "**" / "*.py"),
               "--data_dir", str(data_dir), "--tokenizer", tokenizer, "--skip_bad", "--validation_fraction", "0.01"]
    if tokenizer != "bytes":
        command += ["--vocab_size", str(vocab_size)]
    start, before = time.perf_counter(), resource.getrusage(resource.RUSAGE_CHILDREN)
    subprocess.run(command, check=True, cwd=REPO, env={**os.environ, "PYTHONPATH": str(REPO)}, stdout=subprocess.DEVNULL)
    wall_s, after = time.perf_counter() - start, resource.getrusage(resource.RUSAGE_CHILDREN)
    cpu_s = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    summary = json.loads((data_dir / f"stdlib_{tokenizer}" / "prepare.json").read_text())
    megabytes = summary["input_bytes"] / 1e6
    return {**summary, "wall_s": round(wall_s, 2), "wall_mb_per_s": round(megabytes / wall_s, 3),
            "cpu_s": round(cpu_s, 2), "mb_per_cpu_s": round(megabytes / cpu_s, 3), "load_average": round(os.getloadavg()[0], 1)}


def table(rows: list[dict]) -> str:
    lines = ["| tokenizer | files | input MB | documents | tokens | bad skipped | command s | MB/s (command) | MB/s (prepare) | CPU s | MB per CPU s | load |",
             "|---|---|---|---|---|---|---|---|---|---|---|---|"]
    for row in rows:
        splits = row["splits"].values()
        name = row["tokenizer"] + ("" if row["tokenizer"] == "bytes" else f" {row['vocab_size']:,}")
        lines.append(f"| {name} | {row['files']:,} | {row['input_bytes'] / 1e6:.1f} | {sum(s['documents'] for s in splits):,} | "
                     f"{sum(s['tokens'] for s in splits):,} | {row['bad_documents_skipped']} | {row['wall_s']:.1f} | "
                     f"{row['wall_mb_per_s']:.2f} | {row['input_mb_per_s']:.2f} | {row['cpu_s']:.1f} | {row['mb_per_cpu_s']:.2f} | {row['load_average']} |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="tools/bench_prepare.py", description=__doc__.splitlines()[0])
    parser.add_argument("--tokenizers", default="bytes,bpe", help="comma-separated: bytes, spm, bpe")
    parser.add_argument("--vocab_size", type=int, default=8192, help="for spm and bpe")
    parser.add_argument("--limit", type=int, default=None, help="only the first N files (sorted by path)")
    args = parser.parse_args(argv)
    paths = stdlib_sources(args.limit)
    rows = []
    with tempfile.TemporaryDirectory(prefix="bench_prepare") as scratch:
        corpus, data_dir = Path(scratch) / "corpus", Path(scratch) / "data"
        link_corpus(paths, corpus)
        for tokenizer in args.tokenizers.split(","):
            rows.append(run_prepare(corpus, data_dir, tokenizer, args.vocab_size))
            print(json.dumps({key: rows[-1][key] for key in ("tokenizer", "input_bytes", "wall_s", "wall_mb_per_s", "cpu_s", "mb_per_cpu_s")}), flush=True)
    print(f"\n{len(paths):,} standard-library files of Python {sys.version.split()[0]}, {os.cpu_count()} CPU cores\n")
    print(table(rows))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
