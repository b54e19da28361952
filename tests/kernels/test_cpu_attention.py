"""The C++ CPU attention kernel (attention_impl="cpu") against the plain-jnp reference."""
import numpy as np
import pytest

import jax
import jax.numpy as jnp

from heph_jax.kernels import cpu_attention as cpu_kernel
from heph_jax.kernels.flash_attention import mha_reference
from heph_jax.model.llama import _REMAT_POLICIES

from attention_testing import (assert_close, assert_remat_invariant, attention_inputs,
                               random_segments, sharded_value_and_grads, value_and_grads)

# (batch, seq, heads, kv_heads, head_dim, causal, segments): GQA 4:1, 8:2, 1:1 and 3:1; sequences
# that are not multiples of the kernel's 64-row blocks or 16-float vectors; head dims that are not
# multiples of 16 (scalar tail columns); one non-causal case with an all-padding row.
CASES = [
    (2, 200, 4, 1, 64, True, True),
    (2, 130, 8, 2, 32, False, True),
    (1, 96, 2, 2, 16, True, False),
    (3, 33, 6, 2, 24, True, True),
    (1, 515, 2, 1, 8, True, True),
    (2, 3, 2, 1, 16, True, False),  # shorter than one 16-float vector
]


@pytest.mark.parametrize("batch,seq,heads,kv_heads,head_dim,causal,segments", CASES)
def test_float32_matches_reference(batch, seq, heads, kv_heads, head_dim, causal, segments):
  rng = np.random.default_rng(seq)
  q, k, v, cotangent = attention_inputs(seq, batch, seq, heads, kv_heads, head_dim)
  segment_ids = random_segments(rng, batch, seq, all_padding_row=not causal) if segments else None
  actual = value_and_grads(cpu_kernel.cpu_attention, q, k, v, segment_ids, cotangent, causal=causal)
  expected = value_and_grads(mha_reference, q, k, v, segment_ids, cotangent, causal=causal)
  assert_close(actual, expected, 1e-5)


@pytest.mark.parametrize("causal", [True, False])
def test_scattered_segment_ids(causal):
  """Segment ids that recur after gaps: the kernel skips keys outside each block's segments, so it
  must find a segment's first and last position, not assume contiguous documents."""
  rng = np.random.default_rng(5)
  q, k, v, cotangent = attention_inputs(5, 2, 300, 4, 2, 32)
  segment_ids = np.repeat(rng.integers(0, 4, size=(2, 30)), 10, axis=1).astype(np.int32)
  segment_ids[0, 250:] = 7  # a document that starts inside a block and runs to the end
  segment_ids[1, :5] = 9    # and one that only the first rows see
  segment_ids = jnp.asarray(segment_ids)
  actual = value_and_grads(cpu_kernel.cpu_attention, q, k, v, segment_ids, cotangent, causal=causal)
  expected = value_and_grads(mha_reference, q, k, v, segment_ids, cotangent, causal=causal)
  assert_close(actual, expected, 1e-5)


def test_gradients_are_bitwise_reproducible():
  """Batch 1 with one kv head splits each pair over several tasks; their dk/dv partial sums must
  be added in a fixed order (exact resume compares losses bitwise)."""
  q, k, v, cotangent = attention_inputs(8, 1, 700, 4, 1, 32)
  segment_ids = random_segments(np.random.default_rng(8), 1, 700)
  runs = [value_and_grads(cpu_kernel.cpu_attention, q, k, v, segment_ids, cotangent) for _ in range(4)]
  for run in runs[1:]:
    for a, e in zip(run, runs[0]):
      np.testing.assert_array_equal(np.asarray(a), np.asarray(e))


def test_scale_and_large_scores():
  """A custom sm_scale, and scores far from 0 (softmax must subtract the row max)."""
  q, k, v, cotangent = attention_inputs(4, 2, 70, 4, 2, 32)
  q = q * 30.0
  actual = value_and_grads(cpu_kernel.cpu_attention, q, k, v, None, cotangent, sm_scale=0.3)
  expected = value_and_grads(mha_reference, q, k, v, None, cotangent, sm_scale=0.3)
  assert_close(actual, expected, 1e-4)


def test_bfloat16_inputs_keep_their_dtype():
  rng = np.random.default_rng(1)
  q, k, v, cotangent = attention_inputs(7, 2, 100, 4, 2, 32, jnp.bfloat16)
  segment_ids = random_segments(rng, 2, 100)
  out, vjp = jax.vjp(lambda q, k, v: cpu_kernel.cpu_attention(q, k, v, segment_ids), q, k, v)
  assert [x.dtype for x in (out, *vjp(out))] == [jnp.bfloat16] * 4
  actual = value_and_grads(cpu_kernel.cpu_attention, q, k, v, segment_ids, cotangent)
  f32 = [x.astype(jnp.float32) for x in (q, k, v)]
  expected = value_and_grads(mha_reference, *f32, segment_ids, cotangent)
  assert_close(actual, expected, 2e-2)


@pytest.mark.parametrize("policy", sorted(_REMAT_POLICIES))
def test_gradients_under_every_remat_policy(policy):
  assert_remat_invariant(cpu_kernel.cpu_attention, _REMAT_POLICIES[policy])


def test_vmap_over_a_leading_axis():
  q, k, v, _ = attention_inputs(3, 2, 40, 2, 1, 16)
  stacked = [jnp.stack([x, 2 * x]) for x in (q, k, v)]
  batched = jax.vmap(cpu_kernel.cpu_attention)(*stacked)
  for i in range(2):
    expected = mha_reference(*(x[i] for x in stacked))
    np.testing.assert_allclose(np.asarray(batched[i]), np.asarray(expected), rtol=1e-5, atol=1e-5)


def test_sharded_over_mesh_matches_reference():
  """Under jax.set_mesh (2x2x2 over 8 CPU devices) the kernel runs per shard in shard_map."""
  actual, expected, lowered = sharded_value_and_grads("cpu", 11, 4, 72, 4, 2, 16)
  assert_close(actual, expected, 1e-5)
  assert "shard_map" in lowered or "sdy.manual_computation" in lowered


def test_invalid_shapes_fail_with_clear_errors():
  q = jnp.zeros((1, 16, 6, 64))
  with pytest.raises(ValueError, match=r"KV dividing H"):
    cpu_kernel.cpu_attention(q, jnp.zeros((1, 16, 4, 64)), jnp.zeros((1, 16, 4, 64)))
  with pytest.raises(ValueError, match=r"segment_ids"):
    cpu_kernel.cpu_attention(q, q, q, jnp.zeros((1, 8), jnp.int32))


def test_missing_compiler_is_named(monkeypatch, tmp_path):
  monkeypatch.setenv("HEPH_JAX_CACHE", str(tmp_path))
  monkeypatch.setenv("CXX", "/nonexistent/g++")
  with pytest.raises(cpu_kernel.KernelBuildError, match=r"/nonexistent/g\+\+.*attention_impl='xla'"):
    cpu_kernel.build()
  assert not list(tmp_path.glob("*.so"))


def test_compiler_errors_are_shown(monkeypatch, tmp_path):
  failing = tmp_path / "broken-g++"
  failing.write_text("#!/bin/sh\necho 'fatal: no such header' >&2\nexit 1\n")
  failing.chmod(0o755)
  monkeypatch.setenv("HEPH_JAX_CACHE", str(tmp_path / "cache"))
  monkeypatch.setenv("CXX", str(failing))
  with pytest.raises(cpu_kernel.KernelBuildError, match=r"(?s)cpu_attention\.cc failed.*no such header"):
    cpu_kernel.build()
  assert not list((tmp_path / "cache").glob("*.so"))


def test_cache_key_follows_source_and_cpu(monkeypatch, tmp_path):
  monkeypatch.setenv("HEPH_JAX_CACHE", str(tmp_path))
  first = cpu_kernel.library_path()
  assert first.parent == tmp_path
  monkeypatch.setattr(cpu_kernel, "_cpu_signature", lambda: "another cpu")
  assert cpu_kernel.library_path() != first
