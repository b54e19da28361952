"""Synthetic packed batches the step benchmarks train on (no data files needed)."""


def synthetic_batch(batch_size: int, seq_len: int, vocab_size: int, seed: int = 0) -> dict:
  """Packed rows in the pipeline's format: a few documents per row, positions restarting per
  document, a padding tail (segment 0, loss weight 0) on every other row."""
  import numpy as np
  rng = np.random.default_rng(seed)
  tokens = rng.integers(3, vocab_size, size=(batch_size, seq_len), dtype=np.int32)
  segment_ids = np.zeros((batch_size, seq_len), np.int32)
  positions = np.zeros((batch_size, seq_len), np.int32)
  for row in range(batch_size):
    used = seq_len - (rng.integers(1, seq_len // 8) if row % 2 and seq_len >= 16 else 0)
    cuts = np.sort(rng.choice(np.arange(1, used), size=min(2, used - 1), replace=False))
    for doc, (start, end) in enumerate(zip([0, *cuts], [*cuts, used]), start=1):
      segment_ids[row, start:end] = doc
      positions[row, start:end] = np.arange(end - start)
  return {"tokens": tokens, "segment_ids": segment_ids, "positions": positions,
          "loss_weights": (segment_ids > 0).astype(np.int32)}
