"""How fast can a training step on this CPU be, given its matmul library? The benchmark model's
forward and backward written twice, in JAX and in PyTorch eager, with the same arithmetic:

  matmuls   every matmul of the step (q, k, v, scores, context, output, up, down, tied head) and
            nothing else: no softmax, mask, GELU, norm or loss. The floor each library's GEMMs set.
  full      the same plus the causal softmax, GELU and cross-entropy (PyTorch: its fused
            scaled_dot_product_attention, as nanoGPT calls it).

No optimizer, no data: gradients of a fixed batch. Shapes are ../shared/bench's (4 layers,
d_model 256, 4 heads, d_ff 1024, seq 256, batch 16, 256-token vocabulary).

  python tools/cpu_matmul_floor.py            # JAX rows; PyTorch rows too when torch is installed

If JAX's `matmuls` row is already slower than PyTorch's `full` row, no change to the model's
non-matmul work can bring bigmodel to nanoGPT's speed on this machine (docs/benchmarks.md).
"""

from __future__ import annotations

import importlib.util
import statistics
import time

BATCH, SEQ, D_MODEL, HEADS, D_FF, LAYERS, VOCAB = 16, 256, 256, 4, 1024, 4, 256
HEAD_DIM = D_MODEL // HEADS
LAYER_SHAPES = {"q": (D_MODEL, D_MODEL), "k": (D_MODEL, D_MODEL), "v": (D_MODEL, D_MODEL), "out": (D_MODEL, D_MODEL),
                "up": (D_MODEL, D_FF), "down": (D_FF, D_MODEL)}


def seconds_per_step(step, rounds: int = 5, steps: int = 3) -> float:
    """Median over `rounds` of the mean time of `steps` calls, after two warm-up calls."""
    step(), step()
    times = []
    for _ in range(rounds):
        start = time.perf_counter()
        for _ in range(steps):
            step()
        times.append((time.perf_counter() - start) / steps)
    return statistics.median(times)


def jax_step(full: bool):
    import jax
    import jax.numpy as jnp

    keys = iter(jax.random.split(jax.random.key(0), 8))
    params = {name: 0.02 * jax.random.normal(next(keys), (LAYERS, *shape)) for name, shape in LAYER_SHAPES.items()}
    params["embedding"] = 0.02 * jax.random.normal(next(keys), (VOCAB, D_MODEL))
    tokens = jax.random.randint(next(keys), (BATCH, SEQ), 0, VOCAB)
    causal_bias = jnp.where(jnp.tril(jnp.ones((SEQ, SEQ), bool)), 0.0, -1e30)

    def layer(x, weights):
        flat = x.reshape(-1, D_MODEL)
        q, k, v = ((flat @ weights[name]).reshape(BATCH, SEQ, HEADS, HEAD_DIM).swapaxes(1, 2) for name in "qkv")
        scores = jnp.einsum("bnqh,bnkh->bnqk", q, k)
        if full:
            scores = jax.nn.softmax(scores * HEAD_DIM ** -0.5 + causal_bias, axis=-1)
        context = jnp.einsum("bnqk,bnkh->bnqh", scores, v).swapaxes(1, 2).reshape(-1, D_MODEL)
        x = x + (context @ weights["out"]).reshape(x.shape)
        hidden = x.reshape(-1, D_MODEL) @ weights["up"]
        return x + ((jax.nn.gelu(hidden) if full else hidden) @ weights["down"]).reshape(x.shape), None

    def loss(params):
        x, _ = jax.lax.scan(layer, params["embedding"][tokens], {name: params[name] for name in LAYER_SHAPES})
        logits = x.reshape(-1, D_MODEL) @ params["embedding"].T
        if full:
            return -jnp.mean(jnp.take_along_axis(jax.nn.log_softmax(logits), tokens.reshape(-1, 1), axis=1))
        return jnp.mean(logits)

    gradients = jax.jit(jax.grad(loss))
    return lambda: jax.block_until_ready(gradients(params))


def torch_step(full: bool):
    import torch
    import torch.nn.functional as F

    torch.manual_seed(0)
    weights = {name: (0.02 * torch.randn(LAYERS, *shape)).requires_grad_() for name, shape in LAYER_SHAPES.items()}
    embedding = (0.02 * torch.randn(VOCAB, D_MODEL)).requires_grad_()
    tokens = torch.randint(0, VOCAB, (BATCH, SEQ))

    def loss():
        x = embedding[tokens]
        for i in range(LAYERS):
            flat = x.reshape(-1, D_MODEL)
            q, k, v = ((flat @ weights[name][i]).reshape(BATCH, SEQ, HEADS, HEAD_DIM).transpose(1, 2) for name in "qkv")
            context = F.scaled_dot_product_attention(q, k, v, is_causal=True) if full else (q @ k.transpose(-1, -2)) @ v
            x = x + (context.transpose(1, 2).reshape(-1, D_MODEL) @ weights["out"][i]).reshape(x.shape)
            hidden = x.reshape(-1, D_MODEL) @ weights["up"][i]
            x = x + ((F.gelu(hidden) if full else hidden) @ weights["down"][i]).reshape(x.shape)
        logits = x.reshape(-1, D_MODEL) @ embedding.T
        return F.cross_entropy(logits, tokens.reshape(-1)) if full else logits.mean()

    def step():
        loss().backward()
        for parameter in [*weights.values(), embedding]:
            parameter.grad = None

    return step


def main() -> None:
    libraries = {"jax": jax_step}
    if importlib.util.find_spec("torch"):
        libraries["pytorch"] = torch_step
    print("| library | step | ms/step | tokens/s |\n|---|---|---:|---:|")
    for name, make_step in libraries.items():
        for full in (False, True):
            seconds = seconds_per_step(make_step(full))
            print(f"| {name} | {'full' if full else 'matmuls'} | {seconds * 1e3:,.0f} | {BATCH * SEQ / seconds:,.0f} |", flush=True)


if __name__ == "__main__":
    main()
