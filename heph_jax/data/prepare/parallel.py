"""Tokenization on several worker processes, in order, with bounded memory.

The parent reads and validates records (so bad input still stops at file:line, or is counted in
skip mode, exactly as in process) and hands batches of them to `workers` processes, which render
and batch-encode them (`encode_pieces_batch`). At most 2 batches per worker are in flight, and
results come back in submission order, so the scratch file - and so the prepared dataset - is
byte for byte what the single-process path writes.

This is the parallel path of config.data.prepare_workers > 1. Apache Beam would be the engine
at corpus scale, but apache-beam cannot be installed against this project's pins (it needs
protobuf < 7); this module keeps the same boundary (records in, encoded batches out).
"""
from __future__ import annotations

import collections
import concurrent.futures
import multiprocessing

_WORKER = {}


def _init(tokenizer_spec: str, loss_on: str) -> None:
  from heph_jax.data.tokenizers import load_tokenizer
  _WORKER["tokenizer"] = load_tokenizer(tokenizer_spec)
  _WORKER["loss_on"] = loss_on


def _encode(records):
  from heph_jax.data.prepare import encode_batch
  return encode_batch(records, _WORKER["tokenizer"], _WORKER["loss_on"])


def encode_in_order(batches, tokenizer_spec: str, loss_on: str, workers: int):
  """Yields encode_batch(batch) for every batch of `batches`, in order, on `workers` processes."""
  # spawn: the parent may already hold TensorFlow threads, which fork does not survive safely
  context = multiprocessing.get_context("spawn")
  with concurrent.futures.ProcessPoolExecutor(workers, mp_context=context, initializer=_init,
                                              initargs=(tokenizer_spec, loss_on)) as pool:
    pending = collections.deque()
    for batch in batches:
      pending.append(pool.submit(_encode, batch))
      if len(pending) >= 2 * workers:  # bounded: the reader never runs far ahead
        yield pending.popleft().result()
    while pending:
      yield pending.popleft().result()
