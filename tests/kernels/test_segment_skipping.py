"""The Pallas kernels skip blocks with no same-segment pair (packed documents) as well as causally
masked ones: results unchanged against the plain-jnp reference, and the kernels' own count of
computed blocks against a brute-force count from the token-level mask."""
import numpy as np
import pytest

import jax.numpy as jnp

from attention_testing import assert_close, attention_inputs, value_and_grads
from heph_jax.errors import ConfigError
from heph_jax.kernels import flash_attention_kernels as kernels
from heph_jax.kernels.flash_attention import (BlockSizes, computed_blocks, flash_attention,
                                              mha_reference, resolve_block_sizes)


def _documents(lengths, seq):
  """Consecutive documents 1, 2, ... of the given lengths, then padding (0) to seq."""
  ids = np.concatenate([np.full(n, i + 1) for i, n in enumerate(lengths)] +
                       [np.zeros(seq - sum(lengths))])
  return ids.astype(np.int32)


def _rows(kind, seq, batch, rng):
  if kind == "many_short":  # 30-50 token documents: several per block, many crossing a block edge
    rows = []
    for _ in range(batch):
      lengths = []
      while sum(lengths) < seq - 60:
        lengths.append(int(rng.integers(30, 50)))
      rows.append(_documents(lengths, seq))
    return np.stack(rows)
  if kind == "one_long":  # one document and a short padding tail
    return np.stack([_documents([seq - 17], seq)] * batch)
  if kind == "padding_heavy":  # two documents, then more than half the row padding
    return np.stack([_documents([90, 70], seq)] * batch)
  if kind == "unsorted":  # ids that are not ordered along the row: ranges overlap, still exact
    return rng.integers(1, 4, size=(batch, seq)).astype(np.int32)
  raise ValueError(kind)


@pytest.mark.parametrize("kind", ["many_short", "one_long", "padding_heavy", "unsorted"])
@pytest.mark.parametrize("causal", [True, False])
def test_packed_rows_match_reference(kind, causal):
  """GQA 4:1, head_dim 128 (fused layout), 128-row blocks over a 384-token row (padded to 512 by
  the mixed 256 blocks of the backward)."""
  rng = np.random.default_rng(len(kind))
  q, k, v, cotangent = attention_inputs(len(kind), 2, 384, 4, 1, 128)
  segment_ids = jnp.asarray(_rows(kind, 384, 2, rng))
  kwargs = dict(causal=causal, block_sizes=BlockSizes(128, 128, 128, 256, 256, 128))
  actual = value_and_grads(flash_attention, q, k, v, segment_ids, cotangent, **kwargs)
  expected = value_and_grads(mha_reference, q, k, v, segment_ids, cotangent, **kwargs)
  assert_close(actual, expected, 2e-3)


def test_heads_layout_with_short_documents_matches_reference():
  """head_dim 64 ([B, H, S, D] layout), GQA 2:1, documents of 20-40 tokens."""
  rng = np.random.default_rng(3)
  q, k, v, cotangent = attention_inputs(3, 1, 256, 4, 2, 64)
  segment_ids = jnp.asarray(_rows("many_short", 256, 1, rng))
  actual = value_and_grads(flash_attention, q, k, v, segment_ids, cotangent)
  expected = value_and_grads(mha_reference, q, k, v, segment_ids, cotangent)
  assert_close(actual, expected, 2e-3)


def _brute_force_blocks(segment_ids, block_q, block_k, causal):
  """(q block, k block) tiles holding at least one (query, key) pair the mask allows."""
  seg = np.asarray(segment_ids)
  seq = seg.shape[1]
  allowed = seg[:, :, None] == seg[:, None, :]
  if causal:
    allowed &= np.tril(np.ones((seq, seq), bool))[None]
  tiles = allowed.reshape(seg.shape[0], seq // block_q, block_q, seq // block_k, block_k)
  return int(tiles.any(axis=(2, 4)).sum())


def test_packed_8k_rows_compute_over_4x_fewer_blocks():
  """16 documents of 512 tokens in an 8k row (the issue's case), 512-row blocks: only the 16
  diagonal blocks hold same-document pairs. One 8k document keeps the causal triangle."""
  seq, blocks = 8192, BlockSizes(*(512,) * 6)
  q = jnp.zeros((1, seq, 1, 128), jnp.bfloat16)
  packed = jnp.asarray(_documents([512] * 16, seq))[None]
  one = jnp.ones((1, seq), jnp.int32)
  causal_only = computed_blocks(q, q, q, None, block_sizes=blocks)
  skipping = computed_blocks(q, q, q, packed, block_sizes=blocks)
  single = computed_blocks(q, q, q, one, block_sizes=blocks)
  assert causal_only["forward"] == 16 * 17 // 2 and causal_only["grid"] == 256
  for kernel in ("forward", "dq", "dkv"):
    assert skipping[kernel] == _brute_force_blocks(packed, 512, 512, True) == 16
    assert single[kernel] == causal_only[kernel]
  assert causal_only["total"] >= 4 * skipping["total"]


@pytest.mark.parametrize("kind", ["many_short", "padding_heavy"])
def test_computed_blocks_equal_the_blocks_the_mask_needs(kind):
  """For documents laid out in order (what packing produces) the per-block ranges are exact: the
  kernels compute exactly the tiles that hold an allowed pair, in all three kernels."""
  rng = np.random.default_rng(7)
  segment_ids = jnp.asarray(_rows(kind, 512, 2, rng))
  q = jnp.zeros((2, 512, 2, 64), jnp.float32)
  k = jnp.zeros((2, 512, 1, 64), jnp.float32)
  for causal in (True, False):
    counts = computed_blocks(q, k, k, segment_ids, causal=causal)
    tiles = _brute_force_blocks(segment_ids, 128, 128, causal)
    assert counts["forward"] == counts["dq"] == 2 * tiles  # x 2 query heads
    assert counts["dkv"] == 2 * tiles  # per kv head, over its 2 query heads


def test_skipped_blocks_are_not_fetched():
  """The index maps clamp the reduction index into each block's [first, last] window, so the
  pipeline's block index changes (a DMA) only on a computed step or when the window starts."""
  seg = jnp.asarray(_documents([512] * 16, 8192))[None, None, :]
  n = 16
  for by_query in (True, False):
    sched = kernels.schedule(seg, block_q=512, block_k=512, causal=True, by_query=by_query)
    skip = kernels._Skip(causal=True, block_q=512, block_k=512, num_q=n, num_k=n,
                         window="k" if by_query else "q")
    fetched = [int(skip.fetch(sched, 0, outer, inner)) for outer in range(n) for inner in range(n)]
    loads = 1 + sum(a != b for a, b in zip(fetched, fetched[1:]))
    assert loads == n  # one block per window: the diagonal
    computed = sum(bool(skip.needed(sched, 0, *((o, i) if by_query else (i, o))))
                   for o in range(n) for i in range(n))
    assert computed == n


def test_block_sizes_resolve_per_generation_and_reject_bad_values():
  assert resolve_block_sizes((), device_kind="TPU v5 lite", seq_len=8192, head_dim=128).values() == \
      (512,) * 6
  assert resolve_block_sizes((), device_kind="cpu", seq_len=8192, head_dim=128).values() == (128,) * 6
  # Defaults halve until they divide the sequence; explicit values are checked instead.
  assert resolve_block_sizes((), device_kind="TPU v5", seq_len=1280, head_dim=128).block_k == 256
  assert resolve_block_sizes((256, 512), device_kind="", seq_len=2048, head_dim=128).values() == \
      (256, 512) * 3
  with pytest.raises(ConfigError, match=r"config\.model\.attention_block_sizes: block_q=512 does not "
                                        r"divide seq_len=1280"):
    resolve_block_sizes((512, 512), device_kind="", seq_len=1280, head_dim=128)
  with pytest.raises(ConfigError, match=r"attention_block_sizes: .*multiple of 128"):
    resolve_block_sizes((100, 128), device_kind="", seq_len=2048, head_dim=128)
  with pytest.raises(ConfigError, match=r"attention_block_sizes: .*MiB of VMEM at head_dim=256"):
    resolve_block_sizes((2048, 2048), device_kind="", seq_len=8192, head_dim=256)
  with pytest.raises(ConfigError, match=r"attention_block_sizes: give \(\)"):
    resolve_block_sizes((128, 128, 128), device_kind="", seq_len=2048, head_dim=128)
