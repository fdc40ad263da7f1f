"""How close is `plan`'s memory estimate to what a CPU run really uses? One line per config.

  python tools/plan_accuracy.py configs/lm.py:L2 configs/lm.py:L4 configs/lm.py:L6 --batch_size 16 --seq_len 256

For each config, in a fresh process: compile the train step (plan's estimate comes from this
executable), then reset the kernel's peak-RSS mark (/proc/self/clear_refs) so compilation's own
memory does not count, create the state and run three steps, and read the peak (VmHWM). The
measured figure is that peak minus the resident memory just before the state was created:
the state, the batch and XLA's temporaries, as the estimate counts them. Linux only.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent

MEASURE = """
import json, sys
import jax
from bigmodel.config import load_config
from bigmodel.memory import compiled_memory
from bigmodel.plan import compile_step
from bigmodel import sharding

def status_kib(field):
    for line in open("/proc/self/status"):
        if line.startswith(field + ":"):
            return int(line.split()[1])

config = load_config(sys.argv[1], {"train.batch_size": sys.argv[2], "data.seq_len": sys.argv[3]})
compiled, setup = compile_step(config)
estimate = compiled_memory(compiled, setup, config.train.batch_size)
batch_shape = (config.train.batch_size, config.data.seq_len + 1)
open("/proc/self/clear_refs", "w").write("5")  # reset the peak: compilation's memory is not the step's
before = status_kib("VmRSS")
state = setup.init_state(jax.random.key(0))
batch = jax.device_put(jax.numpy.zeros(batch_shape, jax.numpy.int32), setup.batch_sharding)
for _ in range(3):
    state, metrics = compiled(state, batch)
jax.block_until_ready(state)
measured = (status_kib("VmHWM") - before) * 1024
print(json.dumps({"config": sys.argv[1], "estimate_bytes": estimate.peak_bytes, "measured_bytes": measured}))
"""


def measure(spec: str, batch_size: int, seq_len: int) -> dict:
    result = subprocess.run([sys.executable, "-c", MEASURE, spec, str(batch_size), str(seq_len)], cwd=REPO,
                            capture_output=True, text=True, timeout=900)
    if result.returncode:
        raise SystemExit(f"error: measuring {spec} failed: {result.stderr.strip().splitlines()[-1]}")
    return json.loads(result.stdout.strip().splitlines()[-1])


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("configs", nargs="+", help="path/to/config.py[:arg]")
    parser.add_argument("--batch_size", type=int, default=16)
    parser.add_argument("--seq_len", type=int, default=256)
    args = parser.parse_args(argv)
    print(f"{'config':<22} {'estimate MiB':>12} {'measured MiB':>12} {'error':>7}")
    for spec in args.configs:
        row = measure(spec, args.batch_size, args.seq_len)
        estimate, measured = row["estimate_bytes"] / 2**20, row["measured_bytes"] / 2**20
        print(f"{spec:<22} {estimate:>12.1f} {measured:>12.1f} {100 * (estimate - measured) / measured:>+6.0f}%", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
