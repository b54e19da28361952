"""Loss, train step (with gradient accumulation) and eval step: pure functions for jax.jit.

Batch layout (numpy, from heph_jax/data/pipeline/__init__.py): tokens, segment_ids, positions, loss_weights,
each [B, S]. Position t predicts token t+1 when both belong to the same non-padding segment; the
weight is loss_weights[t+1] (0 on prompts in IFT, 0 on padding).
"""
import jax
import jax.numpy as jnp
import optax

from heph_jax.model import llama
from heph_jax.training.guard import keep_if_finite


def next_token_targets(batch):
  """(targets [B,S] int32, weights [B,S] float32) for next-token prediction within segments."""
  tokens, seg = batch["tokens"], batch["segment_ids"]
  targets = jnp.concatenate([tokens[:, 1:], jnp.zeros_like(tokens[:, :1])], axis=1)
  same = (seg[:, 1:] == seg[:, :-1]) & (seg[:, 1:] != 0)
  weights = jnp.where(same, batch["loss_weights"][:, 1:], 0).astype(jnp.float32)
  weights = jnp.concatenate([weights, jnp.zeros_like(weights[:, :1])], axis=1)
  return targets, weights


def loss_sums(model_cfg, params, batch, loss_chunk_size: int = 0):
  """(sum of weighted token cross-entropies, sum of weights), both float32 scalars.

  loss_chunk_size > 0 computes the logits loss_chunk_size positions at a time (see
  chunked_loss_sum) instead of all [B, S, vocab] float32 at once; the loss is the same.
  """
  targets, weights = next_token_targets(batch)
  args = (batch["tokens"], batch["segment_ids"], batch["positions"])
  if 0 < loss_chunk_size < batch["tokens"].shape[1]:
    hidden, head = llama.hidden_and_head(model_cfg, params, *args)
    return chunked_loss_sum(model_cfg, hidden, head, targets, weights, loss_chunk_size), jnp.sum(weights)
  logits = llama.apply(model_cfg, params, *args)
  token_loss = optax.softmax_cross_entropy_with_integer_labels(logits.astype(jnp.float32), targets)
  return jnp.sum(token_loss * weights), jnp.sum(weights)


def chunked_loss_sum(model_cfg, hidden, head, targets, weights, chunk: int):
  """sum(weights * cross-entropy(hidden @ head, targets)) over chunks of `chunk` positions.

  A scan over sequence chunks, each under jax.checkpoint: only one chunk's [B, chunk, vocab]
  float32 logits exist at a time, forward and backward (recomputed there), instead of the whole
  [B, S, vocab] (31 GiB per chip for Llama-3's 128k vocab at 8 x 8192 tokens). Chunks run along
  the sequence so the batch keeps its sharding.
  """
  b, s, d = hidden.shape
  n = -(-s // chunk)
  pad = n * chunk - s
  if pad:  # padded positions get weight 0
    hidden = jnp.pad(hidden, ((0, 0), (0, pad), (0, 0)))
    targets, weights = (jnp.pad(x, ((0, 0), (0, pad))) for x in (targets, weights))
  to_chunks = lambda x: jnp.moveaxis(x.reshape(b, n, chunk, *x.shape[2:]), 1, 0)

  @jax.checkpoint
  def chunk_loss(hidden, targets, weights):
    logits = llama.logits_from_hidden(model_cfg, hidden, head)
    return jnp.sum(optax.softmax_cross_entropy_with_integer_labels(logits, targets) * weights)

  def body(total, xs):
    return total + chunk_loss(*xs), None

  total, _ = jax.lax.scan(body, jnp.zeros((), jnp.float32),
                          (to_chunks(hidden), to_chunks(targets), to_chunks(weights)))
  return total


def make_train_step(model_cfg, tx, grad_accum_steps: int, loss_chunk_size: int = 0):
  """train_step(state, batch) -> (state, metrics). batch arrays are [accum * micro_B, S]."""

  def grads_of(params, micro):
    def mean_loss(p):
      total, count = loss_sums(model_cfg, p, micro, loss_chunk_size)
      return total, count
    (total, count), grads = jax.value_and_grad(mean_loss, has_aux=True)(params)
    return total, count, grads

  def train_step(state, batch):
    params = state["params"]
    if grad_accum_steps == 1:
      total, count, grads = grads_of(params, batch)
    else:
      micro = jax.tree.map(lambda x: x.reshape((grad_accum_steps, -1) + x.shape[1:]), batch)
      zeros = jax.tree.map(jnp.zeros_like, params)

      def body(carry, mb):
        total, count, grads = carry
        t, c, g = grads_of(params, mb)
        return (total + t, count + c, jax.tree.map(jnp.add, grads, g)), None

      (total, count, grads), _ = jax.lax.scan(body, (0.0, 0.0, zeros), micro)
    # Token-weighted mean over the whole step, however it was split into microbatches.
    denom = jnp.maximum(count, 1.0)
    grads = jax.tree.map(lambda g: g / denom, grads)
    updates, opt_state = tx.update(grads, state["opt_state"], params)
    loss, grad_norm = total / denom, optax.global_norm(grads)
    # A non-finite loss or gradient never reaches the weights (training/guard.py).
    finite = jnp.isfinite(loss) & jnp.isfinite(grad_norm)
    new_state = {"step": state["step"] + 1,
                 "params": keep_if_finite(finite, optax.apply_updates(params, updates), params),
                 "opt_state": keep_if_finite(finite, opt_state, state["opt_state"])}
    metrics = {"loss": loss, "tokens": count, "grad_norm": grad_norm}
    return new_state, metrics

  return train_step


def make_eval_step(model_cfg, loss_chunk_size: int = 0):
  def eval_step(params, batch):
    return loss_sums(model_cfg, params, batch, loss_chunk_size)
  return eval_step
