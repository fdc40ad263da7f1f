"""Decoder-only Transformer language model on the built-in King James Bible corpus (`kjv`).

`arg` names a size preset `L<n_layers>` (see `python -m bigmodel presets`):

  python -m bigmodel train --config configs/lm.py:L4 --workdir runs/l4
  python -m bigmodel train --config configs/lm.py:L2 --workdir runs/l2 --config.train.steps=200

L4 (0.8M non-embedding params) reaches ≤ 1.8 bits per byte on kjv in under 9 minutes on a
2-core CPU with the defaults below (docs/results.md).
"""

import ml_collections

from bigmodel.presets import model_shape


def get_config(arg: str = "L4") -> ml_collections.ConfigDict:
    config = ml_collections.ConfigDict()
    config.seed = 0

    config.model = ml_collections.ConfigDict(model_shape(arg))
    config.model.dropout = 0.0
    config.model.max_seq_len = 1024  # upper bound for data.seq_len; sizes learned positions
    config.model.positions = "rope"  # rope | learned
    config.model.tie_embeddings = False
    # gelu: GPT's MLP | swiglu: Llama's gated one (configs/llama.py). d_ff=0 takes the block's usual
    # width: 4·d_model for gelu, 8/3·d_model rounded up to a multiple of 128 (of 32 below d_model 512)
    config.model.mlp = "gelu"
    config.model.n_kv_heads = 0  # key/value heads (grouped-query attention; must divide n_heads); 0: n_heads
    # auto: bfloat16 on GPU/TPU, float32 on CPU | float32 | bfloat16 | float16. Params, optimizer
    # state, softmax and loss stay float32; "auto" stays "auto" in config.json and summary.json
    # records what it resolved to, so a run may resume on another platform.
    config.model.dtype = "auto"
    # auto: cudnn where it can run, else the platform's fastest XLA form | xla | heads_major | cudnn
    config.model.attention = "auto"
    # none | full | dots | save_qkv_proj | save_dot_with_context_except_mlp (bigmodel/model.py)
    config.model.remat = "none"
    config.model.scan_layers = True  # False unrolls the layer loop (same parameters, longer compile)
    config.model.loss_chunk_tokens = 0  # >0: LM head + loss this many tokens at a time (large vocabularies)
    # sp | mup (maximal update parametrization, bigmodel/mup.py): hidden init ∝ 1/√width, hidden
    # Adam lr ∝ 1/width, logits × base/width, so an lr tuned at d_model = mup_base_width transfers
    config.model.parametrization = "sp"
    config.model.mup_base_width = 64  # muP: the d_model at which it equals sp
    config.model.mup_base_head_dim = 0  # muP: the base model's head_dim (attention √h_b/h); 0: this model's

    config.data = ml_collections.ConfigDict()
    # kjv | markov[/key=value,...] | tfds:<name>[/<config>] of a prepared tfds text dataset |
    # synthetic (random tokens). markov: text from a seeded random order-k Markov source with its
    # exact entropy rate recorded (the loss floor; bigmodel/data/markov.py), built on first use;
    # keys order=2, alphabet_size=32, concentration=0.05, seed=0, train_bytes=4194304,
    # validation_bytes=262144, document_bytes=16384, e.g. markov/order=3,seed=1 (H = 1.805 bits/byte
    # = 1.2512 nats/byte at the defaults).
    config.data.dataset = "kjv"
    config.data.tokenizer = "bytes"  # bytes | spm (sentencepiece BPE) | bpe (byte-level BPE, tokenizers): both trained on the train split
    config.data.vocab_size = 256  # bytes: 256; spm, bpe: the BPE size
    config.data.seq_len = 256
    config.data.data_dir = ""  # "" → $TFDS_DATA_DIR, else $XDG_CACHE_HOME/bigmodel/tfds (~/.cache/bigmodel/tfds)

    config.train = ml_collections.ConfigDict()
    config.train.steps = 3000
    config.train.batch_size = 32  # global, in sequences
    config.train.grad_accum = 1  # micro-batches per step; batch_size must divide evenly
    config.train.log_every = 10
    # A cooldown branch (bigmodel/branch.py): start from the checkpoint at step init_step of the
    # run in init_from (its workdir) instead of a fresh init; usually with optim.schedule=wsd.
    config.train.init_from = ""
    config.train.init_step = 0

    config.optim = ml_collections.ConfigDict()
    config.optim.name = "adamw"
    config.optim.lr = 3e-3
    config.optim.warmup_steps = 100
    config.optim.schedule = "cosine"  # constant | cosine | wsd
    config.optim.min_lr_ratio = 0.1  # final lr / peak lr for cosine and wsd
    config.optim.decay_fraction = 0.2  # wsd: the share of steps spent decaying
    config.optim.decay_shape = "linear"  # wsd: linear | 1-sqrt (Hägele et al. 2024)
    config.optim.weight_decay = 0.1
    config.optim.decay_embeddings = False  # decay embeddings too (norms never decay)
    config.optim.b1 = 0.9
    config.optim.b2 = 0.95
    config.optim.grad_clip = 1.0  # global norm; 0 disables

    config.checkpoint = ml_collections.ConfigDict()
    config.checkpoint.every_steps = 500  # and at the last step
    config.checkpoint.keep = 2  # the newest checkpoints kept (of any kind); older rolling ones are deleted
    # rolling: only the above | log: also save steps 1, 2, 4, 8, ... ≤ train.steps and keep them
    # forever (Pythia-style: an eval curve over log tokens, start points for cooldown branches).
    config.checkpoint.schedule = "rolling"
    # Further steps saved and kept forever, e.g. --config.checkpoint.keep_steps=1000,2000 (or one: =1000)
    config.checkpoint.keep_steps = ()

    config.eval = ml_collections.ConfigDict()
    config.eval.every_steps = 500
    config.eval.batches = 16

    config.logging = ml_collections.ConfigDict()
    config.logging.wandb = ""  # a W&B project: mirror scalars, config and summary there (pip install 'bigmodel[wandb]')

    # -1 fills the axis with all remaining devices. dcn_data > 1 splits the data axis across that
    # many TPU slices or GPU hosts (the slow network, DCN); fsdp, tensor and the rest of data stay
    # inside one (ICI / NVLink). It must equal the number of slices (hosts: jax processes).
    config.mesh = ml_collections.ConfigDict({"data": -1, "fsdp": 1, "tensor": 1, "dcn_data": 1})
    # Logical axis → mesh axes. Data, not code: change the parallelism here. Keys and values
    # (`kv_heads`: n_kv_heads heads) follow `heads` unless a rule of their own says otherwise.
    config.sharding = ml_collections.ConfigDict()
    config.sharding.rules = (
        ("batch", ("data", "fsdp")),
        ("embed", "fsdp"),
        ("heads", "tensor"),
        ("mlp", "tensor"),
        ("vocab", "tensor"),
        ("kv", None),
        ("seq", None),
        ("layers", None),
    )
    return config
