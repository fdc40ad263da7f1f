"""The `L<n>` ladder of configs/lm.py with Llama's block: SwiGLU MLP, grouped-query attention,
RMSNorm, rotary positions, an untied head, no biases (`python -m bigmodel presets --family llama`).

  python -m bigmodel train --config configs/llama.py:L4 --workdir runs/llama-l4
  python -m bigmodel export --workdir runs/llama-l4 --format hf --out hf/llama-l4

Depth, width and head_dim are lm.py's (d_model = 32·n_layers, head_dim 32), so the two blocks
compare at equal shapes; d_ff is SwiGLU's 8/3·d_model rounded up and n_kv_heads gives 4 query
heads per key/value head where 4 divides n_heads, else 2, else 1 (bigmodel/presets.py). Every
other key and default is lm.py's. Exported with `--format hf`, a run loads in `transformers` as
a LlamaForCausalLM (docs/inference.md).
"""

from pathlib import Path

import ml_collections

from bigmodel.config import load_config_file
from bigmodel.presets import llama_shape


def get_config(arg: str = "L4") -> ml_collections.ConfigDict:
    shape = llama_shape(arg)
    config = load_config_file(f"{Path(__file__).with_name('lm.py')}:{arg}")
    config.model.update(shape)
    return config
