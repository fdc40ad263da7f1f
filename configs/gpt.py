"""GPT-2/GPT-3 shapes for GPUs and TPUs: `arg` is one of 124m, 350m, 760m, 1.3b, 2.7b, 6.7b.

  python -m bigmodel bench --config configs/gpt.py:124m
  python -m bigmodel train --config configs/gpt.py:124m --workdir runs/gpt124m --config.train.steps=2000

Shapes follow GPT-3's Table 2.1 (124m is GPT-2 small) with head_dim 64 or 128, the sizes cuDNN
flash attention and tensor cores run best (760m and up use llm-foundry's head counts), d_ff =
4·d_model, seq_len 1024, learned positions and a tied head as in GPT-2, and the GPT-2 vocabulary
50,257 padded to 50,304 (a multiple of 128, so the head matmul tiles evenly). bigmodel's blocks
have RMSNorm and no biases, so 124m has 124,373,760 parameters (GPT-2: 124,439,808).
`python -m bigmodel presets` lists the L<n> family only; `test_accelerator.py` holds these counts.

Compute is bf16 via dtype=auto (float32 on CPU) with cuDNN attention on NVIDIA GPUs. The data is
`synthetic` (random tokens, loss ≈ ln 50304 ≈ 10.8) so benchmarks never wait on data; for text,
add e.g. `--config.data.dataset=tfds:<name> --config.data.tokenizer=spm` (the BPE keeps 50,304
pieces). The global batch is GPT-3's (0.5M–2M tokens), accumulated over micro-batches that fit;
steps default to 20 tokens per parameter (Chinchilla); warmup is capped at the run length, so
short runs need no other override. `bench` times whole steps, micro-batches included.

Memory (params + AdamW state are 16 bytes/parameter), measured on one H100 80GB on 2026-11-22
(`tools/bench_accelerator.py`, docs/benchmarks.md, "On an H100"): 124m at micro-batch 32 peaks at 25-27 GiB,
1.3b at 8 at 35-38 GiB (two compiles differed); 350m and 760m at 16 peaked at 40.1 and 60.0 GiB with scanned layers
(unrolled, their default now, was 25-33% less at the other two sizes). The earlier micro-batches
of 350m, 760m and 1.3b (32/32/16) did not fit, and 124m's 64 took 70 of the 72 GiB XLA gets
(its float32 logits alone are 13 GB). 2.7b
recomputes the MLP (remat save_dot_with_context_except_mlp); 6.7b (107 GB of state) shards
parameters over every device (mesh fsdp=-1), so it needs at least two 80 GB GPUs; neither has
run on a GPU yet. From 1.3b the LM head and loss run in chunks of 8,192 tokens
(model.loss_chunk_tokens): one more head matmul, 1-2.5% of the step's FLOPs at those sizes (9%
at 124m, where chunking measured 9% fewer tokens/s, so 124m does not chunk). Layers are unrolled
(scan_layers=False): 31-35% more tokens/s than nn.scan on the H100, for a longer compile
(over a minute at 24 layers).
"""

from pathlib import Path

import ml_collections

from bigmodel.config import load_config_file
from bigmodel.flops import param_counts
from bigmodel.model_config import ModelConfig

PADDED_VOCAB_SIZE = 50_304  # GPT-2's 50,257 rounded up to a multiple of 128
SEQ_LEN = 1024
TOKENS_PER_PARAM = 20  # Chinchilla-optimal training length

# d_model, n_layers, n_heads; lr and global batch (sequences of 1024: 0.5M, 1M, 2M tokens) from
# GPT-3 Table 2.1; micro_batch: sequences per accumulation step (memory, above); remat; loss chunks.
PRESETS = {
    "124m": dict(d_model=768, n_layers=12, n_heads=12, lr=6e-4, batch_size=512, micro_batch=32,
                 remat="none", loss_chunk_tokens=0),
    "350m": dict(d_model=1024, n_layers=24, n_heads=16, lr=3e-4, batch_size=512, micro_batch=16,
                 remat="none", loss_chunk_tokens=0),
    "760m": dict(d_model=1536, n_layers=24, n_heads=12, lr=2.5e-4, batch_size=512, micro_batch=16,
                 remat="none", loss_chunk_tokens=0),
    "1.3b": dict(d_model=2048, n_layers=24, n_heads=16, lr=2e-4, batch_size=1024, micro_batch=8,
                 remat="none", loss_chunk_tokens=8192),
    "2.7b": dict(d_model=2560, n_layers=32, n_heads=20, lr=1.6e-4, batch_size=1024, micro_batch=16,
                 remat="save_dot_with_context_except_mlp", loss_chunk_tokens=8192),
    "6.7b": dict(d_model=4096, n_layers=32, n_heads=32, lr=1.2e-4, batch_size=2048, micro_batch=64,
                 remat="save_dot_with_context_except_mlp", loss_chunk_tokens=8192),
}
FSDP_PRESETS = ("6.7b",)  # too big for one device: parameters and optimizer state sharded over all


def model_shape(name: str) -> dict[str, int]:
    """`"124m"` → {"d_model": 768, "n_layers": 12, "n_heads": 12, "d_ff": 3072}."""
    if name not in PRESETS:
        raise ValueError(f"unknown preset {name!r}: use one of {', '.join(PRESETS)}")
    preset = PRESETS[name]
    return {key: preset[key] for key in ("d_model", "n_layers", "n_heads")} | {"d_ff": 4 * preset["d_model"]}


def preset_model(name: str) -> ModelConfig:
    """The preset as the model counts it (dtype and attention do not change the count)."""
    return ModelConfig(**model_shape(name), vocab_size=PADDED_VOCAB_SIZE, max_seq_len=SEQ_LEN,
                       positions="learned", tie_embeddings=True)


def get_config(arg: str = "124m") -> ml_collections.ConfigDict:
    shape = model_shape(arg)
    preset = PRESETS[arg]
    # Every key and default of configs/lm.py; only what makes these GPT models differs below.
    config = load_config_file(f"{Path(__file__).with_name('lm.py')}:L1")
    config.model.update(shape)
    config.model.max_seq_len = SEQ_LEN
    config.model.positions = "learned"
    config.model.tie_embeddings = True
    config.model.remat = preset["remat"]
    # Unrolled layers: on an H100, 124m and 1.3b ran 31-35% more tokens/s in 25-33% less memory
    # than under nn.scan, whose per-layer copies of stacked weights and residuals took 17-19% of
    # the step in the profile; the price is a longer compile.
    config.model.scan_layers = False
    config.model.loss_chunk_tokens = preset["loss_chunk_tokens"]

    config.data.dataset = "synthetic"
    config.data.vocab_size = PADDED_VOCAB_SIZE
    config.data.seq_len = SEQ_LEN

    config.train.batch_size = preset["batch_size"]
    config.train.grad_accum = preset["batch_size"] // preset["micro_batch"]
    tokens_per_step = preset["batch_size"] * SEQ_LEN
    config.train.steps = round(TOKENS_PER_PARAM * param_counts(preset_model(arg))["params"] / tokens_per_step)
    config.optim.lr = preset["lr"]
    config.optim.warmup_steps = 700
    config.checkpoint.every_steps = 1000
    config.eval.every_steps = 1000
    config.eval.batches = 20
    if arg in FSDP_PRESETS:
        config.mesh.update({"data": 1, "fsdp": -1, "tensor": 1})
    return config
