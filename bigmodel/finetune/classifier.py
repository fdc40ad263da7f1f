"""The classifier: the pretrained Transformer as a backbone, a pooled feature, a dense head.

    logits = head(dropout(pool(backbone(tokens, return_hidden=True), lengths)))

The backbone is `bigmodel.model.Transformer` with the pretrained run's own ModelConfig (its
parameters sit under `backbone/`, named as in the run's checkpoint, less the LM head it no longer
uses). Pooling, dropout and the head run in float32 whatever the backbone's compute dtype. The
head starts at zero (big_vision's `head_zeroinit`): the first predictions are uniform, and the
first gradients move the head rather than pushing noise into the backbone.

A frozen backbone is frozen twice over: its features are `stop_gradient`ed (so no backbone
gradient is even computed) and its optimizer branch is `optax.set_to_zero` (so no update, weight
decay included, can reach it); its parameters stay bit for bit those it was given.
"""

from __future__ import annotations

import flax.linen as nn
import jax
import jax.numpy as jnp
import optax

from bigmodel.model import Transformer
from bigmodel.model_config import ModelConfig
from bigmodel.optim import make_optimizer

POOLINGS = ("last", "mean")
BACKBONE = "backbone"
HEAD = "head"


def pool(hidden: jax.Array, lengths: jax.Array, pooling: str) -> jax.Array:
    """[batch, seq, d] → [batch, d] from each row's first `lengths` positions only.

    "last": the hidden state of the last real token, which under causal attention has read the
    whole text (GPT's classification read-out). "mean": the average over the real tokens."""
    if pooling == "last":
        return jnp.take_along_axis(hidden, (lengths - 1)[:, None, None], axis=1)[:, 0]
    mask = (jnp.arange(hidden.shape[1])[None, :] < lengths[:, None]).astype(hidden.dtype)
    return jnp.einsum("bsd,bs->bd", hidden, mask) / lengths[:, None].astype(hidden.dtype)


class Classifier(nn.Module):
    """(tokens [batch, seq] int32, lengths [batch] int32) → float32 logits [batch, n_classes]."""

    backbone: ModelConfig
    n_classes: int
    pooling: str = "last"
    dropout: float = 0.0
    freeze_backbone: bool = False

    @nn.compact
    def __call__(self, tokens: jax.Array, lengths: jax.Array, deterministic: bool = True) -> jax.Array:
        hidden = Transformer(self.backbone, name=BACKBONE)(tokens, deterministic=deterministic, return_hidden=True)
        if self.freeze_backbone:
            hidden = jax.lax.stop_gradient(hidden)
        features = pool(hidden.astype(jnp.float32), lengths, self.pooling)
        features = nn.Dropout(self.dropout, deterministic=deterministic)(features)
        head = nn.Dense(
            self.n_classes, dtype=jnp.float32, param_dtype=jnp.float32, name=HEAD,
            kernel_init=nn.with_logical_partitioning(nn.initializers.zeros, ("embed", None)),
            bias_init=nn.with_logical_partitioning(nn.initializers.zeros, (None,)),
        )
        return head(features)


def classification_loss(logits: jax.Array, labels: jax.Array) -> jax.Array:
    """Mean cross-entropy in nats, in float32."""
    return optax.softmax_cross_entropy_with_integer_labels(logits.astype(jnp.float32), labels).mean()


def parameter_labels(params, freeze_backbone: bool):
    """"frozen" for every backbone parameter when it is frozen, else "trained". A boxed parameter
    (logical axis names, while the abstract state is made) gets one label for the whole box, so
    the frozen branch holds bare `MaskedNode`s rather than boxes of them, which would be given
    shardings that the unboxed state has no leaves for."""
    def label(name: str):
        return "frozen" if freeze_backbone and name == BACKBONE else "trained"

    return {name: jax.tree.map(lambda _, name=name: label(name), subtree, is_leaf=lambda leaf: isinstance(leaf, nn.Partitioned))
            for name, subtree in params.items()}


def make_classifier_optimizer(optim_config, total_steps: int, freeze_backbone: bool) -> tuple[optax.GradientTransformation, optax.Schedule]:
    """The trainer's own AdamW chain (clipping, schedule, decay mask: `bigmodel.optim`) on the
    trained parameters; `set_to_zero` on a frozen backbone, which then also keeps no Adam moments
    and does not count towards the clipped gradient norm."""
    adamw, schedule = make_optimizer(optim_config, total_steps)
    if not freeze_backbone:
        return adamw, schedule
    optimizer = optax.multi_transform({"trained": adamw, "frozen": optax.set_to_zero()},
                                      lambda params: parameter_labels(params, freeze_backbone=True))
    return optimizer, schedule
