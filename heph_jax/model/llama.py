"""Flax (Linen) Llama-family decoder: RMSNorm, RoPE, grouped-query attention, SwiGLU MLP.

Parameters are a plain pytree (stacked over layers, leading axis `layers`) whose paths map one to one
onto Hugging Face tensor names (heph_jax/export/hf.py). Every parameter and the key activations carry
logical axis names; heph_jax/parallel/mesh.py turns them into mesh shardings.

    embed/embedding         [vocab, embed]
    layers/attn_norm/scale  [layers, embed]
    layers/attn/q           [layers, embed, heads, head_dim]
    layers/attn/k           [layers, embed, kv_heads, head_dim]   (v likewise)
    layers/attn/o           [layers, heads, head_dim, embed]
    layers/mlp_norm/scale   [layers, embed]
    layers/mlp/gate         [layers, embed, mlp]                  (up likewise)
    layers/mlp/down         [layers, mlp, embed]
    final_norm/scale        [embed]
    lm_head/kernel          [embed, vocab]                        (absent when embeddings are tied)
"""
from __future__ import annotations

import flax.linen as nn
import jax
import jax.numpy as jnp

from heph_jax.model.attention import attention
from heph_jax.model.config import ModelConfig
from heph_jax.model.rope import apply_rope, inverse_frequencies

_REMAT_POLICIES = {
    "full": jax.checkpoint_policies.nothing_saveable,
    "dots": jax.checkpoint_policies.checkpoint_dots,
    "dots_no_batch": jax.checkpoint_policies.dots_with_no_batch_dims_saveable,
}


def _dtype(name: str):
  return jnp.dtype(name)


def _param(module: nn.Module, name: str, shape, axes, cfg: ModelConfig, init=None):
  init = init or nn.initializers.normal(stddev=cfg.initializer_range)
  return module.param(name, nn.with_logical_partitioning(init, axes), shape, _dtype(cfg.param_dtype))


def _constrain(x, axes):
  return nn.with_logical_constraint(x, axes)


def _matmul(tokens, weight, dtype, out_dtype=None):
  """tokens [N, in] x weight [*in_dims, *out_dims] (prod(in_dims) = in) -> [N, prod(out_dims)].

  Batch and sequence are flattened into one token axis on purpose: with two contracting axes
  (batch, seq) in the weight gradient, XLA:CPU routes the backward matmuls through slow
  transposing copies; one token axis keeps every matmul, forward and backward, a plain GEMM
  (benchmarks/README.md).
  """
  weight = weight.reshape(tokens.shape[-1], -1).astype(dtype)
  return jnp.matmul(tokens, weight, preferred_element_type=out_dtype)


class RMSNorm(nn.Module):
  cfg: ModelConfig

  @nn.compact
  def __call__(self, x):
    scale = _param(self, "scale", (x.shape[-1],), ("norm",), self.cfg, nn.initializers.ones)
    x32 = x.astype(jnp.float32)
    normed = x32 * jax.lax.rsqrt(jnp.mean(x32 * x32, axis=-1, keepdims=True) + self.cfg.rms_norm_eps)
    return (scale.astype(jnp.float32) * normed).astype(_dtype(self.cfg.dtype))


class Attention(nn.Module):
  cfg: ModelConfig

  @nn.compact
  def __call__(self, x, segment_ids, positions):
    cfg, dtype = self.cfg, _dtype(self.cfg.dtype)
    d, h, kv, hd = cfg.hidden_size, cfg.num_attention_heads, cfg.num_key_value_heads, cfg.head_dim
    wq = _param(self, "q", (d, h, hd), ("embed", "heads", "head_dim"), cfg)
    wk = _param(self, "k", (d, kv, hd), ("embed", "kv_heads", "head_dim"), cfg)
    wv = _param(self, "v", (d, kv, hd), ("embed", "kv_heads", "head_dim"), cfg)
    wo = _param(self, "o", (h, hd, d), ("heads", "head_dim", "embed"), cfg)
    b, s = x.shape[:2]
    tokens = x.reshape(b * s, d)
    q = _matmul(tokens, wq, dtype).reshape(b, s, h, hd)
    k = _matmul(tokens, wk, dtype).reshape(b, s, kv, hd)
    v = _matmul(tokens, wv, dtype).reshape(b, s, kv, hd)
    q = _constrain(q, ("batch", "seq", "heads", "head_dim"))
    k = _constrain(k, ("batch", "seq", "kv_heads", "head_dim"))
    v = _constrain(v, ("batch", "seq", "kv_heads", "head_dim"))
    inv_freq = inverse_frequencies(hd, cfg.rope_theta, cfg.rope_scaling)
    q, k = apply_rope(q, positions, inv_freq), apply_rope(k, positions, inv_freq)
    out = attention(q, k, v, segment_ids, impl=cfg.attention_impl, causal=True,
                    block_sizes=cfg.attention_block_sizes)
    out = _constrain(out, ("batch", "seq", "heads", "head_dim"))
    return _matmul(out.reshape(b * s, h * hd), wo, dtype).reshape(b, s, d)


class MLP(nn.Module):
  cfg: ModelConfig

  @nn.compact
  def __call__(self, x):
    cfg, dtype = self.cfg, _dtype(self.cfg.dtype)
    d, f = cfg.hidden_size, cfg.intermediate_size
    gate = _param(self, "gate", (d, f), ("embed", "mlp"), cfg)
    up = _param(self, "up", (d, f), ("embed", "mlp"), cfg)
    down = _param(self, "down", (f, d), ("mlp", "embed"), cfg)
    b, s = x.shape[:2]
    tokens = x.reshape(b * s, d)
    hidden = jax.nn.silu(_matmul(tokens, gate, dtype)) * _matmul(tokens, up, dtype)
    hidden = _constrain(hidden.reshape(b, s, f), ("batch", "seq", "mlp"))
    return _matmul(hidden.reshape(b * s, f), down, dtype).reshape(b, s, d)


class DecoderLayer(nn.Module):
  cfg: ModelConfig

  @nn.compact
  def __call__(self, x, segment_ids, positions):
    x = x + Attention(self.cfg, name="attn")(RMSNorm(self.cfg, name="attn_norm")(x), segment_ids, positions)
    x = x + MLP(self.cfg, name="mlp")(RMSNorm(self.cfg, name="mlp_norm")(x))
    return _constrain(x, ("batch", "seq", "embed")), None


class Decoder(nn.Module):
  """tokens [B, S] -> logits [B, S, vocab] float32 (or, with return_hidden, the final hidden
  states [B, S, hidden] and the output projection [hidden, vocab] for a chunked loss)."""
  cfg: ModelConfig

  @nn.compact
  def __call__(self, tokens, segment_ids=None, positions=None, return_hidden=False):
    cfg, dtype = self.cfg, _dtype(self.cfg.dtype)
    if segment_ids is None:
      segment_ids = jnp.ones_like(tokens)
    if positions is None:
      positions = jnp.broadcast_to(jnp.arange(tokens.shape[1], dtype=jnp.int32), tokens.shape)
    embedding = _param(self, "embedding", (cfg.vocab_size, cfg.hidden_size), ("vocab", "embed"), cfg,
                       nn.initializers.normal(stddev=cfg.initializer_range))
    x = jnp.take(embedding, tokens, axis=0).astype(dtype)
    x = _constrain(x, ("batch", "seq", "embed"))

    layer = DecoderLayer
    if cfg.remat_policy != "none":
      layer = nn.remat(layer, policy=_REMAT_POLICIES[cfg.remat_policy], prevent_cse=not cfg.scan_layers)
    # One stacked parameter layout whether or not the loop is scanned: unscanned = fully unrolled.
    stack = nn.scan(layer, variable_axes={"params": 0}, split_rngs={"params": True},
                    in_axes=(nn.broadcast, nn.broadcast), length=cfg.num_hidden_layers,
                    unroll=1 if cfg.scan_layers else cfg.num_hidden_layers,
                    metadata_params={nn.PARTITION_NAME: "layers"})
    x, _ = stack(cfg, name="layers")(x, segment_ids, positions)
    x = RMSNorm(cfg, name="final_norm")(x)
    if cfg.tie_word_embeddings:
      head = embedding.T
    else:
      head = _param(self, "lm_head", (cfg.hidden_size, cfg.vocab_size), ("embed", "vocab"), cfg)
    if return_hidden:
      return x, head
    return logits_from_hidden(cfg, x, head)


def _nest(params):
  """Flax puts the Decoder's own params at top level; move them to embed/ and lm_head/."""
  params = dict(params)
  out = {"embed": {"embedding": params.pop("embedding")}}
  if "lm_head" in params:
    out["lm_head"] = {"kernel": params.pop("lm_head")}
  out.update(params)
  return out


def _flatten(params):
  params = dict(params)
  flat = {"embedding": params.pop("embed")["embedding"]}
  if "lm_head" in params:
    flat["lm_head"] = params.pop("lm_head")["kernel"]
  flat.update(params)
  return flat


def init(cfg: ModelConfig, rng, seq_len: int = 8):
  """Initial params (plain pytree, see module doc). Use under jax.jit with out_shardings to shard."""
  tokens = jnp.zeros((1, seq_len), jnp.int32)
  variables = Decoder(cfg).init(rng, tokens)
  return _nest(nn.meta.unbox(variables["params"]))


def logical_axes(cfg: ModelConfig):
  """Pytree of logical axis-name tuples, the same structure as `init`'s params."""
  boxed = jax.eval_shape(lambda: Decoder(cfg).init(jax.random.PRNGKey(0), jnp.zeros((1, 8), jnp.int32)))
  specs = nn.get_partition_spec(boxed["params"])
  return _nest(jax.tree.map(tuple, specs, is_leaf=lambda x: isinstance(x, jax.sharding.PartitionSpec)))


def apply(cfg: ModelConfig, params, tokens, segment_ids=None, positions=None):
  """Logits [B, S, vocab] float32 for tokens [B, S] (int32)."""
  return Decoder(cfg).apply({"params": _flatten(params)}, tokens, segment_ids, positions)


def hidden_and_head(cfg: ModelConfig, params, tokens, segment_ids=None, positions=None):
  """(final hidden states [B, S, hidden] in the compute dtype, output projection [hidden, vocab]):
  logits = hidden @ head, left to the caller (heph_jax.training.step computes them in chunks)."""
  return Decoder(cfg).apply({"params": _flatten(params)}, tokens, segment_ids, positions,
                            return_hidden=True)


def logits_from_hidden(cfg: ModelConfig, hidden, head):
  """hidden [B, C, hidden] x head -> logits [B, C, vocab] float32, as Decoder computes them."""
  b, c, _ = hidden.shape
  logits = _matmul(hidden.reshape(b * c, cfg.hidden_size), head, _dtype(cfg.dtype), out_dtype=jnp.float32)
  return _constrain(logits.reshape(b, c, cfg.vocab_size), ("batch", "seq", "vocab"))
