"""Per-host, deterministic, checkpointable iterator of packed training batches.

    prepared TFDS dataset per source (heph_jax.data.prepare.tfds_builder) --SeqIO Task over
    seqio.TfdsDataSource--> Mixture at configured rates (shuffled; the
    whole stream, or this host's shard of the records) --chunk to seq_len--> numpy Packer -->
    batches {tokens, segment_ids, positions, loss_weights} of [rows_per_host, seq_len]

config.data.process_sharding decides what each process of a multi-host run reads:
  "rows"     every process reads the whole stream and packs whole global batches (rows_per_host =
             global rows); jax.make_array_from_process_local_data keeps each process's rows. The
             batches, and so the losses, do not depend on the process count, and a run may resume
             on another number of hosts. Costs each host the reading and packing of every batch:
             small next to an LLM step (2M tokens ~ 8 MB of ids per step).
  "records"  each process reads its own 1/P of the records (seqio ShardInfo) and packs B/P rows:
             less reading per host, but the batches change with the process count.
             Preparation writes config.data.num_shards files per split (default 256), so each
             of up to 256 hosts reads its own files (TFDS shards by file).
  "auto"     (default) "records" when process_count > 1, else "rows". Ask for "rows" for losses
             that do not depend on the host count (and resume on another host count).

State = the tf.data iterator (tf.train.Checkpoint: file offsets, shuffle buffers, sampler RNG)
plus the packer's open rows; `save(dir)` / `restore(dir)` write and read both, per process.
"""
from __future__ import annotations

import hashlib
import io
import json

import numpy as np
from etils import epath

from heph_jax.data.pipeline.packing import Packer, stack_rows
from heph_jax.data.prepare import PreparedSource, default_cache_root, prepare_source
from heph_jax.data.pipeline.config import resolved_process_sharding, source_files, task_rates

TRAIN_FIELDS = ("tokens", "segment_ids", "positions", "loss_weights")


def _tf():
  import tensorflow as tf
  tf.config.set_visible_devices([], "GPU")
  return tf


def _parse_and_chunk(seq_len: int, task_id: int):
  """Preprocessor: tokenized document -> chunks of <= seq_len tokens, each tagged with its task."""
  tf = _tf()

  def fn(dataset):
    def chunks(ex):
      targets = tf.cast(ex["targets"], tf.int32)
      weights = tf.cast(ex["loss_weights"], tf.int32)
      n = tf.shape(targets)[0]
      splits = tf.concat([tf.range(0, n, seq_len), [n]], axis=0)
      return tf.data.Dataset.from_tensor_slices({
          "targets": tf.RaggedTensor.from_row_splits(targets, splits),
          "loss_weights": tf.RaggedTensor.from_row_splits(weights, splits),
      }).map(lambda c: {"targets": c["targets"], "loss_weights": c["loss_weights"],
                        "task_id": tf.fill([1], task_id)})
    return dataset.flat_map(chunks)
  return fn


def register_task(prepared: PreparedSource, seq_len: int, task_id: int, shuffle_buffer: int) -> str:
  import seqio
  tf = _tf()
  where = hashlib.sha256(prepared.directory.encode()).hexdigest()[:8]  # same data, other cache
  name = (f"heph_{prepared.task}_{prepared.manifest['fingerprint']}_{where}_{seq_len}_{task_id}_"
          f"{shuffle_buffer}")
  if name in seqio.TaskRegistry.names():
    return name
  # read_only: never let TFDS (re)generate or look for the dataset on GCS; prepare made it.
  source = seqio.TfdsDataSource(tfds_name=prepared.tfds_name, tfds_data_dir=prepared.directory,
                                splits=("train", "validation"), read_only=True)
  ids = seqio.PassThroughVocabulary(size=0)
  seqio.TaskRegistry.add(
      name, source=source, shuffle_buffer_size=shuffle_buffer,
      preprocessors=[_parse_and_chunk(seq_len, task_id)],
      output_features={
          "targets": seqio.Feature(ids, add_eos=False, dtype=tf.int32),
          "loss_weights": seqio.Feature(ids, add_eos=False, dtype=tf.int32),
          "task_id": seqio.Feature(ids, add_eos=False, dtype=tf.int32),
      })
  return name


class BatchIterator:
  """Iterator of numpy batches for this host; `save`/`restore` make resume exact."""

  def __init__(self, dataset, rows: int, seq_len: int, pack_rows: int):
    self._dataset = dataset
    self._tf_iter = iter(dataset)
    self.rows = rows
    self.packer = Packer(seq_len, pack_rows)
    self._ready: list[dict] = []
    self.batches_served = 0

  def next_with_tasks(self) -> dict[str, np.ndarray]:
    """The next batch including `task_ids` (per token, -1 on padding), for inspection."""
    while len(self._ready) < self.rows:
      ex = next(self._tf_iter)
      self._ready.extend(self.packer.add(ex["targets"].numpy(), ex["loss_weights"].numpy(),
                                         int(ex["task_id"].numpy()[0])))
    rows, self._ready = self._ready[:self.rows], self._ready[self.rows:]
    self.batches_served += 1
    return stack_rows(rows)

  def __next__(self) -> dict[str, np.ndarray]:
    batch = self.next_with_tasks()
    return {k: batch[k] for k in TRAIN_FIELDS}

  def __iter__(self):
    return self

  # ---- checkpointing -------------------------------------------------------------------------
  # Paths through etils.epath (tf.train.Checkpoint uses tf.io.gfile): a gs:// workdir works.
  def save(self, directory: str) -> None:
    tf = _tf()
    root = epath.Path(directory)
    root.mkdir(parents=True, exist_ok=True)
    tf.train.Checkpoint(iterator=self._tf_iter).write(str(root / "tf_iterator"))
    ready = stack_rows(self._ready) if self._ready else {}
    buf = io.BytesIO()
    np.savez(buf, **self.packer.state(), **{f"ready_{k}": v for k, v in ready.items()})
    (root / "packer.npz").write_bytes(buf.getvalue())
    (root / "state.json").write_text(
        json.dumps({"batches_served": self.batches_served, "ready_rows": len(self._ready)}))

  def restore(self, directory: str) -> None:
    tf = _tf()
    root = epath.Path(directory)
    tf.train.Checkpoint(iterator=self._tf_iter).read(str(root / "tf_iterator")).assert_consumed()
    with np.load(io.BytesIO((root / "packer.npz").read_bytes())) as state:
      self.packer.restore(state)
      from heph_jax.data.pipeline.packing import FIELDS
      meta = json.loads((root / "state.json").read_text())
      self._ready = [{k: state[f"ready_{k}"][i].copy() for k in FIELDS} for i in range(meta["ready_rows"])]
    self.batches_served = meta["batches_served"]


class DataPipeline:
  """Builds the training mixture and per-task eval streams for one process."""

  def __init__(self, config, tokenizer, workdir: str | None = None, process_index: int = 0,
               process_count: int = 1, log=print):
    data_cfg = config.data
    self.config, self.tokenizer = config, tokenizer
    self.seq_len = config.seq_len
    self.process_index, self.process_count = process_index, process_count
    self.rates = task_rates(data_cfg)
    root = default_cache_root(data_cfg, workdir)
    self.tasks = list(data_cfg.sources.keys())
    self.prepared = {t: prepare_source(t, source_files(data_cfg, t), tokenizer, data_cfg, root, log)
                     for t in self.tasks}
    self.task_names = {t: register_task(self.prepared[t], self.seq_len, i,
                                                data_cfg.shuffle_buffer) for i, t in enumerate(self.tasks)}

  @property
  def _by_records(self) -> bool:
    return resolved_process_sharding(self.config.data, self.process_count) == "records"

  def _shard_info(self):
    import seqio
    if not self._by_records:
      return seqio.ShardInfo(index=0, num_shards=1)  # every process reads the whole stream
    return seqio.ShardInfo(index=self.process_index, num_shards=self.process_count)

  _LENGTHS = property(lambda self: {"targets": self.seq_len, "loss_weights": self.seq_len, "task_id": 1})

  def example_rates(self) -> dict[str, float]:
    """SeqIO samples examples; configured rates are token shares. A task whose examples are twice
    as long is sampled half as often, so that each task's share of tokens matches its rate."""
    return {t: r / self.prepared[t].mean_chunk_tokens("train", self.seq_len) for t, r in self.rates.items()}

  def mixture_name(self) -> str:
    """Registers (once) the SeqIO Mixture of this run's tasks at this run's rates."""
    import seqio
    entries = [(self.task_names[t], r) for t, r in self.example_rates().items() if r > 0]
    name = "heph_mix_" + hashlib.sha256(repr(entries).encode()).hexdigest()[:16]
    if name not in seqio.MixtureRegistry.names():
      seqio.MixtureRegistry.add(name, entries)
    return name

  def _train_dataset(self, seed: int):
    # try_in_mem_cache=False: TFDS tells seqio the example counts, and seqio would then cache
    # sources under 10k documents in memory - and the tf.data checkpoint would carry that cache.
    import seqio
    return seqio.get_mixture_or_task(self.mixture_name()).get_dataset(
        sequence_length=self._LENGTHS, split="train", use_cached=False, shuffle=True, seed=seed,
        shard_info=self._shard_info(), num_epochs=None, trim_output_features=False,
        log_mixing_proportions=False, try_in_mem_cache=False)

  def _eval_dataset(self, task: str):
    import seqio
    return seqio.get_mixture_or_task(self.task_names[task]).get_dataset(
        sequence_length=self._LENGTHS, split="validation", use_cached=False, shuffle=False,
        shard_info=self._shard_info(), num_epochs=None, trim_output_features=False,
        try_in_mem_cache=False)

  def rows_per_host(self, global_rows: int) -> int:
    return global_rows // self.process_count if self._by_records else global_rows

  def train_iterator(self, global_rows: int) -> BatchIterator:
    seed = self.config.seed * 1000 + 17
    ds = self._train_dataset(seed).prefetch(64)
    it = BatchIterator(ds, self.rows_per_host(global_rows), self.seq_len, self.config.data.pack_rows)
    it.same_on_every_process = not self._by_records  # lets a resume change the host count
    return it

  def eval_batches(self, global_rows: int, num_batches: int) -> dict[str, list[dict]]:
    """Fixed validation batches per task (the same every eval, so evals are comparable)."""
    out = {}
    for task in self.tasks:
      ds = self._eval_dataset(task)
      it = BatchIterator(ds, self.rows_per_host(global_rows), self.seq_len, self.config.data.pack_rows)
      out[task] = [next(it) for _ in range(num_batches)]
    return out
