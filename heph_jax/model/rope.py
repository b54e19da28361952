"""Rotary position embeddings in Hugging Face's rotate-half (NeoX) layout, with rope scaling."""
import math

import jax.numpy as jnp
import numpy as np


def inverse_frequencies(head_dim: int, theta: float, rope_scaling=None) -> np.ndarray:
  """Per-pair inverse frequencies [head_dim // 2], float64, as transformers computes them."""
  inv_freq = 1.0 / (theta ** (np.arange(0, head_dim, 2, dtype=np.int64).astype(np.float64) / head_dim))
  if not rope_scaling:
    return inv_freq
  rope_type = rope_scaling.get("rope_type", rope_scaling.get("type", "default"))
  if rope_type == "default":
    return inv_freq
  factor = float(rope_scaling["factor"])
  if rope_type == "linear":
    return inv_freq / factor
  if rope_type == "llama3":
    low = float(rope_scaling["low_freq_factor"])
    high = float(rope_scaling["high_freq_factor"])
    old_len = float(rope_scaling["original_max_position_embeddings"])
    low_freq_wavelen, high_freq_wavelen = old_len / low, old_len / high
    wavelen = 2 * math.pi / inv_freq
    scaled = np.where(wavelen > low_freq_wavelen, inv_freq / factor, inv_freq)
    smooth = (old_len / wavelen - low) / (high - low)
    smoothed = (1 - smooth) * scaled / factor + smooth * scaled
    medium = ~(wavelen < high_freq_wavelen) & ~(wavelen > low_freq_wavelen)
    return np.where(medium, smoothed, scaled)
  raise ValueError(f"unknown rope_type {rope_type!r}")


def apply_rope(x, positions, inv_freq):
  """Rotates x [B, S, N, D] by positions [B, S]; computed in float32, returned in x.dtype."""
  inv_freq = jnp.asarray(inv_freq, dtype=jnp.float32)
  angles = positions.astype(jnp.float32)[..., None] * inv_freq  # [B, S, D/2]
  angles = jnp.concatenate([angles, angles], axis=-1)[:, :, None, :]  # [B, S, 1, D]
  cos, sin = jnp.cos(angles), jnp.sin(angles)
  x32 = x.astype(jnp.float32)
  half = x.shape[-1] // 2
  rotated = jnp.concatenate([-x32[..., half:], x32[..., :half]], axis=-1)
  return (x32 * cos + rotated * sin).astype(x.dtype)
