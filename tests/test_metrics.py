"""The run's TensorBoard scalars: written without loading PyTorch (about 2 CPU-seconds of every
trainer's start where torch is installed), and readable as the scalars logged."""

import struct
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]

LOG_TWO_RECORDS = textwrap.dedent("""
    import sys
    from pathlib import Path

    from bigmodel.metrics import MetricsLog

    log = MetricsLog(Path(sys.argv[1]))
    log.write({"step": 1, "loss": 2.5, "lr": 0.001})
    log.write({"step": 2, "loss": 2.25, "eval_loss": float("nan")})
    log.close()
    print("torch loaded" if "torch" in sys.modules else "no torch")
""")


def tensorboard_scalars(directory: Path) -> list[tuple[int, str, float]]:
    """(step, tag, value) of every scalar in the event files under `directory` (TFRecord framing:
    length, its CRC, an Event proto, its CRC)."""
    from tensorboardX.proto.event_pb2 import Event

    found = []
    for path in sorted(directory.glob("events.out.tfevents.*")):
        data, offset = path.read_bytes(), 0
        while offset < len(data):
            (length,) = struct.unpack_from("<Q", data, offset)
            event = Event.FromString(data[offset + 12 : offset + 12 + length])
            offset += 12 + length + 4
            found += [(event.step, value.tag, value.simple_value) for value in event.summary.value]
    return found


def test_a_fresh_process_logs_scalars_without_loading_torch(tmp_path):
    done = subprocess.run([sys.executable, "-c", LOG_TWO_RECORDS, str(tmp_path)], capture_output=True, text=True, cwd=REPO, timeout=120,
                          check=False)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "no torch"
    scalars = tensorboard_scalars(tmp_path / "tensorboard")
    assert [(step, tag) for step, tag, _ in scalars] == [(1, "loss"), (1, "lr"), (2, "loss")]  # NaN left out
    assert [value for *_, value in scalars] == pytest.approx([2.5, 0.001, 2.25], rel=1e-7)  # TensorBoard keeps float32
    assert (tmp_path / "metrics.jsonl").read_text().count("\n") == 2
