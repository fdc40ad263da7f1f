"""`bigmodel bench`: the one JSON line it prints, its profile, and the cuDNN check it reports."""

import json
from types import SimpleNamespace

from bigmodel.bench import bench_command, uses_cudnn_attention

TINY = {"data.seq_len": "32", "train.batch_size": "4", "model.max_seq_len": "32"}


def test_bench_prints_one_json_line_with_what_it_resolved_and_records_a_profile(tmp_path, capsys):
    assert bench_command("configs/lm.py:L1", TINY, steps=2, warmup=0, peak_flops=None, profile_dir=str(tmp_path)) == 0
    report = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert report["steps"] == 2
    assert report["tokens_per_s"] > 0
    assert report["flops_per_s"] == report["tokens_per_s"] * report["flops_per_token"]
    assert (report["dtype"], report["attention"], report["cudnn_fused_attention"]) == ("float32", "heads_major", False)
    assert report["mfu"] is None  # no honest peak for a CPU
    assert report["peak_memory_bytes_estimated"] > 0
    assert list(tmp_path.rglob("*.xplane.pb"))  # jax.profiler wrote the trace xprof and TensorBoard read


def test_the_cudnn_check_reads_the_compiled_program_not_the_config():
    def compiled(hlo: str):
        return SimpleNamespace(as_text=lambda: hlo)

    assert uses_cudnn_attention(compiled('custom-call(...), custom_call_target="__cudnn$fmha"'))
    assert not uses_cudnn_attention(compiled("dot(...) softmax ... dot(...)"))
