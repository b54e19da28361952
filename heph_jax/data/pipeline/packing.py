"""Packs variable-length examples into fixed rows with segment ids, positions and loss weights.

Our own packer (not seqio's) because seqio's treats token id 0 as padding, while Llama-3's
tokenizer uses id 0 for a real token. Here padding is marked by segment id 0 only.

First-fit over `num_rows` open rows: an example goes into the first open row with room; when none
has room, the fullest row is emitted and a fresh one opened. Deterministic, and its whole state
(the open rows) is a few arrays, saved with the data-iterator checkpoint.
"""
from __future__ import annotations

import numpy as np
from heph_jax.errors import ConfigError

FIELDS = ("tokens", "segment_ids", "positions", "loss_weights", "task_ids")


class Packer:

  def __init__(self, seq_len: int, num_rows: int = 8):
    self.seq_len, self.num_rows = seq_len, num_rows
    self._rows = {f: np.zeros((num_rows, seq_len), np.int32) for f in FIELDS}
    self._fill = np.zeros(num_rows, np.int64)      # tokens used in each open row
    self._segments = np.zeros(num_rows, np.int64)  # segments placed in each open row

  def add(self, tokens: np.ndarray, loss_weights: np.ndarray, task_id: int) -> list[dict]:
    """Places one example (len <= seq_len); returns the rows this completed (maybe none)."""
    n = len(tokens)
    if n == 0:
      return []
    if n > self.seq_len:
      raise ValueError(f"example of {n} tokens is longer than seq_len={self.seq_len}; chunk it first")
    done = []
    room = np.nonzero(self._fill + n <= self.seq_len)[0]
    if len(room):
      row = int(room[0])
    else:
      row = int(np.argmax(self._fill))
      done.append(self._take(row))
    start = int(self._fill[row])
    self._segments[row] += 1
    sl = slice(start, start + n)
    self._rows["tokens"][row, sl] = tokens
    self._rows["loss_weights"][row, sl] = loss_weights
    self._rows["segment_ids"][row, sl] = self._segments[row]
    self._rows["positions"][row, sl] = np.arange(n)
    self._rows["task_ids"][row, sl] = task_id
    self._fill[row] += n
    if self._fill[row] == self.seq_len:
      done.append(self._take(row))
    return done

  def _take(self, row: int) -> dict:
    out = {f: self._rows[f][row].copy() for f in FIELDS}
    for f in FIELDS:
      self._rows[f][row] = 0
    self._rows["task_ids"][row] = -1
    out["task_ids"][out["segment_ids"] == 0] = -1
    self._fill[row] = 0
    self._segments[row] = 0
    return out

  # ---- checkpointing -------------------------------------------------------------------------
  def state(self) -> dict[str, np.ndarray]:
    state = {f"row_{f}": a.copy() for f, a in self._rows.items()}
    state.update(fill=self._fill.copy(), segments=self._segments.copy())
    return state

  def restore(self, state) -> None:
    for f in FIELDS:
      arr = np.asarray(state[f"row_{f}"])
      if arr.shape != (self.num_rows, self.seq_len):
        raise ConfigError(f"data checkpoint was packed with rows {arr.shape}, this run uses "
                         f"({self.num_rows}, {self.seq_len}): config.data.pack_rows / config.seq_len changed")
      self._rows[f][...] = arr
    self._fill[...] = state["fill"]
    self._segments[...] = state["segments"]


def stack_rows(rows: list[dict]) -> dict[str, np.ndarray]:
  return {f: np.stack([r[f] for r in rows]) for f in FIELDS}
