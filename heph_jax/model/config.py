"""ModelConfig: the shape and numerics of a Llama-family decoder.

Field names follow Hugging Face's LlamaConfig/MistralConfig so that `config.json` maps onto them
one to one (see heph_jax/export/hf.py). The extra fields (dtype, attention_impl, scan_layers,
remat_policy, attention_block_sizes) are heph_jax's own and never reach an exported config.
"""
from __future__ import annotations

import dataclasses
from typing import Any, Mapping, Optional

from heph_jax.errors import ConfigError  # noqa: F401  (re-exported for model users)

ATTENTION_IMPLS = ("xla", "pallas", "cpu")
REMAT_POLICIES = ("none", "full", "dots", "dots_no_batch")
ROPE_TYPES = ("default", "linear", "llama3")
DTYPES = ("float32", "bfloat16", "float16")


@dataclasses.dataclass(frozen=True)
class ModelConfig:
  vocab_size: int = 32000
  hidden_size: int = 4096
  intermediate_size: int = 11008
  num_hidden_layers: int = 32
  num_attention_heads: int = 32
  num_key_value_heads: int = 32
  head_dim: int = 0  # 0 = hidden_size // num_attention_heads
  rms_norm_eps: float = 1e-5
  rope_theta: float = 10000.0
  # None, or {"rope_type": "llama3", "factor": 8.0, "low_freq_factor": 1.0,
  # "high_freq_factor": 4.0, "original_max_position_embeddings": 8192} / {"rope_type": "linear", "factor": f}.
  rope_scaling: Optional[Mapping[str, Any]] = None
  max_position_embeddings: int = 4096
  tie_word_embeddings: bool = False
  initializer_range: float = 0.02
  bos_token_id: int = 1
  eos_token_id: int = 2
  architecture: str = "llama"  # "llama" | "mistral": only changes the exported config.json
  # Mistral's sliding_window, kept for the exported config.json; our attention is full causal
  # (heph_jax/export/hf.py warns when it is shorter than the sequences trained on).
  sliding_window: Optional[int] = None
  # heph_jax-only numerics and layout.
  dtype: str = "bfloat16"  # compute dtype of matmuls and activations
  param_dtype: str = "float32"
  attention_impl: str = "xla"
  scan_layers: bool = True
  remat_policy: str = "none"
  # Pallas attention tiles: () = the TPU generation's default (heph_jax/kernels/flash_attention.py
  # GENERATION_BLOCKS), (block_q, block_k) for all three kernels, or the six BlockSizes fields.
  attention_block_sizes: tuple = ()

  def __post_init__(self):
    if self.head_dim == 0:
      object.__setattr__(self, "head_dim", self.hidden_size // max(self.num_attention_heads, 1))
    if self.rope_scaling is not None:
      object.__setattr__(self, "rope_scaling", dict(self.rope_scaling))
    self.validate()

  # ---- validation -------------------------------------------------------------------------
  def validate(self, prefix: str = "model") -> None:
    def fail(key, msg):
      raise ConfigError(f"config.{prefix}.{key}: {msg}")

    for key in ("vocab_size", "hidden_size", "intermediate_size", "num_hidden_layers",
                "num_attention_heads", "num_key_value_heads", "head_dim"):
      value = getattr(self, key)
      if not isinstance(value, int) or value <= 0:
        fail(key, f"must be a positive integer, got {value!r}")
    if self.num_attention_heads % self.num_key_value_heads:
      fail("num_key_value_heads", f"{self.num_key_value_heads} must divide num_attention_heads="
           f"{self.num_attention_heads} (grouped-query attention)")
    if self.head_dim % 2:
      fail("head_dim", f"must be even for rotary embeddings, got {self.head_dim}")
    if self.attention_impl not in ATTENTION_IMPLS:
      fail("attention_impl", f"must be one of {ATTENTION_IMPLS}, got {self.attention_impl!r}")
    if self.remat_policy not in REMAT_POLICIES:
      fail("remat_policy", f"must be one of {REMAT_POLICIES}, got {self.remat_policy!r}")
    blocks = self.attention_block_sizes
    if (not isinstance(blocks, (tuple, list)) or len(blocks) not in (0, 2, 6)
        or not all(isinstance(b, int) and not isinstance(b, bool) for b in blocks)):
      fail("attention_block_sizes", f"must be () (the TPU generation's default), 2 ints (block_q, "
           f"block_k) or 6 (forward, dq, dk/dv pairs), got {blocks!r}")
    object.__setattr__(self, "attention_block_sizes", tuple(blocks))
    for key in ("dtype", "param_dtype"):
      if getattr(self, key) not in DTYPES:
        fail(key, f"must be one of {DTYPES}, got {getattr(self, key)!r}")
    if self.rope_scaling is not None:
      rope_type = self.rope_scaling.get("rope_type", self.rope_scaling.get("type"))
      if rope_type not in ROPE_TYPES:
        fail("rope_scaling", f"rope_type must be one of {ROPE_TYPES}, got {rope_type!r}")
      if rope_type != "default" and "factor" not in self.rope_scaling:
        fail("rope_scaling", f"rope_type {rope_type!r} needs 'factor'")
      if rope_type == "llama3":
        for key in ("low_freq_factor", "high_freq_factor", "original_max_position_embeddings"):
          if key not in self.rope_scaling:
            fail("rope_scaling", f"llama3 rope scaling needs {key!r}")

  # ---- construction -----------------------------------------------------------------------
  @classmethod
  def from_dict(cls, values: Mapping[str, Any], prefix: str = "model") -> "ModelConfig":
    names = {f.name for f in dataclasses.fields(cls)}
    unknown = sorted(set(values) - names)
    if unknown:
      raise ConfigError(f"config.{prefix}: unknown key(s) {unknown}; known keys: {sorted(names)}")
    values = dict(values)
    if values.get("rope_scaling") is not None:
      values["rope_scaling"] = dict(values["rope_scaling"])
      if not values["rope_scaling"]:
        values["rope_scaling"] = None
    return cls(**values)

  def to_dict(self) -> dict:
    return dataclasses.asdict(self)

  def replace(self, **changes) -> "ModelConfig":
    return dataclasses.replace(self, **changes)

  # ---- size and cost ----------------------------------------------------------------------
  def num_params(self, include_embedding: bool = True) -> int:
    d, f, hd = self.hidden_size, self.intermediate_size, self.head_dim
    h, kv = self.num_attention_heads, self.num_key_value_heads
    per_layer = d * (h + 2 * kv) * hd + h * hd * d + 3 * d * f + 2 * d
    total = self.num_hidden_layers * per_layer + d
    if include_embedding:
      total += self.vocab_size * d * (1 if self.tie_word_embeddings else 2)
    elif not self.tie_word_embeddings:
      total += self.vocab_size * d  # the output projection is a matmul all the same
    return total

  def flops_per_token(self, seq_len: int) -> float:
    """Training FLOPs per token (forward + backward = 3x forward).

    6 x matmul parameters (embedding lookup excluded, output projection included) plus causal
    attention scores and values: 12 * layers * seq * heads * head_dim, halved because a causal mask
    skips half of the score matrix (MaxText's convention since its PR #1988).
    """
    d, f, hd = self.hidden_size, self.intermediate_size, self.head_dim
    h, kv = self.num_attention_heads, self.num_key_value_heads
    matmul_params = self.num_hidden_layers * (d * (h + 2 * kv) * hd + h * hd * d + 3 * d * f)
    matmul_params += d * self.vocab_size
    attention = 12 * self.num_hidden_layers * seq_len * h * hd / 2
    return 6.0 * matmul_params + attention
