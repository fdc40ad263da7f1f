"""bigmodel: JAX/Flax language models for scaling experiments."""

__version__ = "0.1.0"
