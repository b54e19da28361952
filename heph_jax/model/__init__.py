"""The Llama-family decoder: `ModelConfig`, `init`, `apply`, `logical_axes`."""
from heph_jax.model.config import ModelConfig
from heph_jax.model.llama import apply, init, logical_axes

__all__ = ["ModelConfig", "apply", "init", "logical_axes"]
