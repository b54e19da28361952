"""Autoregressive decoding with a KV cache: one prefill over the (left-padded) prompts, then
one-token steps in a jax.lax.while_loop; greedy or temperature / top-p sampling; stop on EOS ids.

Works on the plain params pytree of heph_jax/model/llama.py (the same, possibly sharded, arrays the
trainer holds: nothing is gathered to one host). The layer math mirrors llama.py (RMSNorm, RoPE,
GQA, SwiGLU) but attends over a cache, with plain XLA attention (correctness first).

Layout. Prompts are left-padded to a common length P, so that every row writes its next token into
the same cache slot; row b's real tokens start at slot pad[b] and carry positions 0, 1, ... (RoPE
positions are per row, not per slot). The cache is, per layer, k and v [B, S_max, KV, head_dim]
(S_max = P + max_new_tokens): the kv heads are never repeated (GQA). Slot j is visible to a query
in slot i of row b iff pad[b] <= j <= i.
"""
from __future__ import annotations

import dataclasses
from typing import Optional, Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from heph_jax.model.config import ModelConfig
from heph_jax.model.rope import apply_rope, inverse_frequencies

_MASK_VALUE = -0.7 * float(jnp.finfo(jnp.float32).max)
_CACHE_AXES = (None, "batch", None, "kv_heads", "head_dim")  # [layers, B, S_max, KV, head_dim]


@dataclasses.dataclass(frozen=True)
class Sampling:
  """temperature 0 = greedy (argmax); otherwise softmax(logits / temperature) restricted to the
  smallest set of top tokens whose probability reaches top_p (the top token is always kept)."""
  temperature: float = 0.0
  top_p: float = 1.0
  max_new_tokens: int = 32
  eos_ids: tuple = ()
  pad_id: int = 0
  # Token-id sequences (tuples): a row stops once its output ends with one (stop strings that are
  # several tokens, e.g. forge-v1's "<|end|>"; see heph_jax/evaluate/prompts.py).
  stop_sequences: tuple = ()


def _rms_norm(x, scale, eps):
  x32 = x.astype(jnp.float32)
  normed = x32 * jax.lax.rsqrt(jnp.mean(x32 * x32, axis=-1, keepdims=True) + eps)
  return scale.astype(jnp.float32) * normed


def _attend(q, k_cache, v_cache, visible):
  """q [B, T, H, D] over the cache [B, S, KV, D]; visible [B, T, S] bool -> [B, T, H, D]."""
  b, t, h, d = q.shape
  kv = k_cache.shape[2]
  q = q.reshape(b, t, kv, h // kv, d)
  scores = jnp.einsum("btkgd,bskd->bkgts", q, k_cache, preferred_element_type=jnp.float32) * d ** -0.5
  scores = jnp.where(visible[:, None, None], scores, _MASK_VALUE)
  probs = jax.nn.softmax(scores, axis=-1).astype(v_cache.dtype)
  out = jnp.einsum("bkgts,bskd->btkgd", probs, v_cache, preferred_element_type=jnp.float32)
  return out.reshape(b, t, h, d).astype(q.dtype)


def forward(cfg: ModelConfig, params, tokens, positions, cache, start, pad):
  """tokens [B, T] at cache slots start..start+T-1 -> (logits [B, T, vocab] f32, updated cache)."""
  dtype = jnp.dtype(cfg.dtype)
  emb = params["embed"]["embedding"]
  x = jnp.take(emb, tokens, axis=0).astype(dtype)
  inv_freq = inverse_frequencies(cfg.head_dim, cfg.rope_theta, cfg.rope_scaling)
  s_max = cache["k"].shape[2]
  slots = jnp.arange(s_max)
  rows = start + jnp.arange(tokens.shape[1])
  visible = (slots[None, None, :] <= rows[None, :, None]) & (slots[None, None, :] >= pad[:, None, None])

  def layer(x, xs):
    p, k_cache, v_cache = xs
    a = p["attn"]
    h = _rms_norm(x, p["attn_norm"]["scale"], cfg.rms_norm_eps).astype(dtype)
    q = jnp.einsum("btd,dhk->bthk", h, a["q"].astype(dtype))
    k = jnp.einsum("btd,dhk->bthk", h, a["k"].astype(dtype))
    v = jnp.einsum("btd,dhk->bthk", h, a["v"].astype(dtype))
    q, k = apply_rope(q, positions, inv_freq), apply_rope(k, positions, inv_freq)
    k_cache = jax.lax.dynamic_update_slice_in_dim(k_cache, k.astype(k_cache.dtype), start, axis=1)
    v_cache = jax.lax.dynamic_update_slice_in_dim(v_cache, v.astype(v_cache.dtype), start, axis=1)
    out = _attend(q, k_cache, v_cache, visible)
    x = x + jnp.einsum("bthk,hkd->btd", out, a["o"].astype(dtype)).astype(dtype)
    m = p["mlp"]
    h = _rms_norm(x, p["mlp_norm"]["scale"], cfg.rms_norm_eps).astype(dtype)
    hidden = jax.nn.silu(h @ m["gate"].astype(dtype)) * (h @ m["up"].astype(dtype))
    x = x + (hidden @ m["down"].astype(dtype)).astype(dtype)
    return nn.with_logical_constraint(x, ("batch", "seq", "embed")), (k_cache, v_cache)

  x, (k, v) = jax.lax.scan(layer, x, (params["layers"], cache["k"], cache["v"]))
  cache = {"k": nn.with_logical_constraint(k, _CACHE_AXES), "v": nn.with_logical_constraint(v, _CACHE_AXES)}
  x = _rms_norm(x, params["final_norm"]["scale"], cfg.rms_norm_eps).astype(dtype)
  head = emb.T if cfg.tie_word_embeddings else params["lm_head"]["kernel"]
  logits = jnp.einsum("btd,dv->btv", x, head.astype(dtype), preferred_element_type=jnp.float32)
  return logits, cache


def sample(logits, rng, temperature: float, top_p: float):
  """logits [B, vocab] f32 -> token ids [B] int32 (see Sampling)."""
  if temperature <= 0.0:
    return jnp.argmax(logits, axis=-1).astype(jnp.int32)
  logits = logits / temperature
  if top_p < 1.0:
    order = jnp.argsort(-logits, axis=-1)
    sorted_logits = jnp.take_along_axis(logits, order, axis=-1)
    probs = jax.nn.softmax(sorted_logits, axis=-1)
    before = jnp.cumsum(probs, axis=-1) - probs  # mass of the strictly better tokens
    keep_sorted = before < top_p
    keep_sorted = keep_sorted.at[:, 0].set(True)
    keep = jnp.zeros_like(keep_sorted).at[jnp.arange(logits.shape[0])[:, None], order].set(keep_sorted)
    logits = jnp.where(keep, logits, -jnp.inf)
  return jax.random.categorical(rng, logits, axis=-1).astype(jnp.int32)


def _ends_with_stop(out, i, stop_sequences):
  """[B] bool: out[:, :i+1] ends with one of the stop sequences."""
  hit = jnp.zeros(out.shape[:1], bool)
  for seq in stop_sequences:
    n = len(seq)
    tail = jax.lax.dynamic_slice_in_dim(out, jnp.maximum(i - n + 1, 0), n, axis=1) if n <= out.shape[1] else None
    if tail is not None:
      hit = hit | ((i + 1 >= n) & jnp.all(tail == jnp.asarray(seq, jnp.int32)[None], axis=1))
  return hit


def init_cache(cfg: ModelConfig, batch: int, length: int):
  shape = (cfg.num_hidden_layers, batch, length, cfg.num_key_value_heads, cfg.head_dim)
  zeros = jnp.zeros(shape, jnp.dtype(cfg.dtype))
  return {"k": nn.with_logical_constraint(zeros, _CACHE_AXES), "v": nn.with_logical_constraint(zeros, _CACHE_AXES)}


def decode(cfg: ModelConfig, params, tokens, pad, rng, sampling: Sampling):
  """Traceable core. tokens [B, P] left-padded, pad [B] pad counts -> new tokens [B, max_new]
  (sampling.pad_id after a row's EOS) and lengths [B] (tokens emitted, EOS included)."""
  b, p = tokens.shape
  n = sampling.max_new_tokens
  eos = jnp.asarray(sampling.eos_ids or (-1,), jnp.int32)
  positions = jnp.maximum(jnp.arange(p)[None, :] - pad[:, None], 0)
  cache = init_cache(cfg, b, p + n)
  logits, cache = forward(cfg, params, tokens, positions, cache, 0, pad)
  rng, key = jax.random.split(rng)
  first = sample(logits[:, -1], key, sampling.temperature, sampling.top_p)
  out = jnp.full((b, n), sampling.pad_id, jnp.int32).at[:, 0].set(first)
  done = jnp.isin(first, eos) | _ends_with_stop(out, 0, sampling.stop_sequences)
  lengths = jnp.ones((b,), jnp.int32)

  def cond(state):
    i, _, _, _, done, _, _ = state
    return (i < n) & ~jnp.all(done)

  def body(state):
    i, last, out, cache, done, lengths, rng = state
    pos = (p - pad + i - 1)[:, None]  # the position of `last`, the token emitted at step i-1
    logits, cache = forward(cfg, params, last[:, None], pos, cache, p + i - 1, pad)
    rng, key = jax.random.split(rng)
    tok = sample(logits[:, 0], key, sampling.temperature, sampling.top_p)
    tok = jnp.where(done, sampling.pad_id, tok)
    out = jax.lax.dynamic_update_slice_in_dim(out, tok[:, None], i, axis=1)
    lengths = lengths + (~done).astype(jnp.int32)
    done = done | jnp.isin(tok, eos) | _ends_with_stop(out, i, sampling.stop_sequences)
    return i + 1, tok, out, cache, done, lengths, rng

  state = (jnp.int32(1), first, out, cache, done, lengths, rng)
  _, _, out, _, _, lengths, _ = jax.lax.while_loop(cond, body, state)
  return out, lengths


_JITTED = {}


def _jitted(cfg: ModelConfig, sampling: Sampling):
  key = (repr(cfg), sampling)  # ModelConfig holds a dict (rope_scaling): not hashable itself
  if key not in _JITTED:
    _JITTED[key] = jax.jit(lambda params, tokens, pad, rng: decode(cfg, params, tokens, pad, rng, sampling))
  return _JITTED[key]


def left_pad(prompts: Sequence[Sequence[int]], pad_id: int = 0, multiple: int = 8):
  """(tokens [B, P] int32, pad [B] int32); P rounded up to `multiple` to reuse compilations."""
  if not prompts or any(len(p) == 0 for p in prompts):
    raise ValueError("every prompt needs at least one token")
  width = -(-max(len(p) for p in prompts) // multiple) * multiple
  tokens = np.full((len(prompts), width), pad_id, np.int32)
  pad = np.zeros(len(prompts), np.int32)
  for row, prompt in enumerate(prompts):
    pad[row] = width - len(prompt)
    tokens[row, pad[row]:] = prompt
  return tokens, pad


def generate(cfg: ModelConfig, params, prompts: Sequence[Sequence[int]], sampling: Sampling,
             rng: Optional[jax.Array] = None) -> list[list[int]]:
  """New token ids per prompt (up to and including the first EOS, at most max_new_tokens)."""
  tokens, pad = left_pad(prompts, sampling.pad_id)
  rng = jax.random.PRNGKey(0) if rng is None else rng
  out, lengths = _jitted(cfg, sampling)(params, jnp.asarray(tokens), jnp.asarray(pad), rng)
  if not out.is_fully_addressable:  # multi-process mesh: every process gets every row
    from jax.experimental import multihost_utils
    out, lengths = multihost_utils.process_allgather((out, lengths), tiled=True)
  out, lengths = np.asarray(out), np.asarray(lengths)
  return [out[row, :lengths[row]].tolist() for row in range(len(prompts))]


def truncate_at_stop(text: str, stop_strings: Sequence[str]) -> tuple[str, bool]:
  """Text up to the earliest stop string (excluded) and whether one was found."""
  cut = min((i for i in (text.find(s) for s in stop_strings if s) if i >= 0), default=-1)
  return (text, False) if cut < 0 else (text[:cut], True)
