"""TFDS builders for Forge sources: one versioned dataset per source, written once, read by SeqIO.

    build_dataset(task, {"train": [(ids, weights), ...], "validation": [...]}, data_dir)
    -> DATA_DIR/forge_<task>/1.0.0/{dataset_info.json, features.json, forge_<task>-train.tfrecord-*}

Read back with `seqio.TfdsDataSource(tfds_name=tfds_name(task), tfds_data_dir=DATA_DIR,
read_only=True)`: TFDS finds the dataset from its files (no registered class needed), so a
prepared cache is readable from any process. Examples are already tokenized (heph_jax.data.prepare
encodes them in Python with any tokenizer), so reading is file I/O and int ops only, which keeps
the tf.data iterator checkpointable.

Nothing is downloaded: the builder generates from the records it is given, with TFDS's GCS
lookups off. Bump VERSION (and say why in RELEASE_NOTES) when the stored features change.
"""
from __future__ import annotations

import contextlib
import io
import os
import re
from typing import Mapping, Sequence

import numpy as np
from etils import epath
import tensorflow_datasets as tfds

VERSION = "1.0.0"
SPLITS = ("train", "validation")

Example = tuple[Sequence[int], Sequence[int]]  # (token ids, per-token loss weights)


def dataset_name(task: str) -> str:
  """TFDS name of a task's dataset: snake case, as TFDS requires (forge_tool_doc)."""
  return "forge_" + re.sub(r"[^a-z0-9_]+", "_", task.lower()).strip("_")


def tfds_name(task: str) -> str:
  """Name and version as `seqio.TfdsDataSource(tfds_name=...)` takes it: forge_code:1.0.0."""
  return f"{dataset_name(task)}:{VERSION}"


def _token_vector():
  # A 1-D Tensor serializes to exactly the bytes Sequence(np.int32) wrote (one int64_list per
  # key; tested), so caches written before read the same, but it encodes a numpy array in one
  # call instead of one call per token: TFDS writing was ~94% of preparation time with Sequence.
  return tfds.features.Tensor(shape=(None,), dtype=np.int32)


def features():
  return tfds.features.FeaturesDict({"targets": _token_vector(), "loss_weights": _token_vector()})


class ForgeSource(tfds.core.GeneratorBasedBuilder, skip_registration=True):
  """One Forge source (a config.data.sources task) as a TFDS dataset of tokenized documents.

  Not registered by class name: every task gets its own dataset name (`dataset_name(task)`),
  set per instance as TFDS's own ad-hoc builders do.
  """

  VERSION = tfds.core.Version(VERSION)
  RELEASE_NOTES = {
      "1.0.0": "Tokenized Forge records: targets (ids, BOS/EOS included) and loss_weights "
               "(0/1 per token; 0 on prompts under loss_on='completions').",
  }

  def __init__(self, *, task: str, examples: Mapping[str, Sequence[Example]] | None = None,
               description: str = "", **kwargs):
    self.name = dataset_name(task)
    self._examples = examples
    self._description = description
    super().__init__(**kwargs)

  def _info(self) -> tfds.core.DatasetInfo:
    return tfds.core.DatasetInfo(builder=self, description=self._description or self.name,
                                 features=features())

  def _split_generators(self, dl_manager):
    del dl_manager  # nothing to download
    if self._examples is None:
      raise ValueError(f"{self.name}: built without examples; it can only read a prepared dataset")
    return {split: self._generate_examples(split) for split in self._examples}

  def _generate_examples(self, split: str):
    items = self._examples[split]
    for i, (ids, weights) in enumerate(items() if callable(items) else items):
      if len(ids) != len(weights):
        raise ValueError(f"{self.name} {split} example {i}: {len(ids)} ids but {len(weights)} "
                         "loss weights")
      yield i, {"targets": np.asarray(ids, np.int32), "loss_weights": np.asarray(weights, np.int32)}


class _SplitShards(tfds.core.utils.shard_utils.ShardConfig):
  """A fixed shard count per split: TFDS has one count for all splits, so a small validation split
  would get more shards than examples (refused). Capped by the split's example count instead."""

  def get_number_shards(self, total_size, num_examples, uses_precise_sharding=True):
    if self.num_shards:  # an int, or a function of the split's example count
      wanted = self.num_shards(num_examples) if callable(self.num_shards) else self.num_shards
      return max(1, min(wanted, num_examples))
    return super().get_number_shards(total_size, num_examples, uses_precise_sharding)


class _DownloadConfig(tfds.download.DownloadConfig):
  def get_shard_config(self):
    return _SplitShards(num_shards=self.num_shards, min_shard_size=self.min_shard_size,
                        max_shard_size=self.max_shard_size)


def build_dataset(task: str, examples: Mapping[str, Sequence[Example]], data_dir: str,
                  description: str = "", num_shards=None) -> dict[str, list[str]]:
  """Writes the dataset under data_dir; returns each split's shard files (relative to data_dir).

  A split's examples are a sequence or a zero-argument callable returning an iterator (streamed,
  never held whole). num_shards: shards per split, an int or a function of the split's example count (capped by
  that count); None = TFDS's choice by size.
  """
  for split, items in examples.items():
    if callable(items):
      continue  # checked while streaming
    for i, (ids, weights) in enumerate(items):
      if len(ids) != len(weights):
        raise ValueError(f"{task} {split} example {i}: {len(ids)} ids but {len(weights)} "
                         "loss weights")
  builder = ForgeSource(task=task, examples=examples, description=description, data_dir=data_dir)
  downloads = os.path.join(data_dir, ".downloads")  # TFDS wants one even when nothing is fetched
  tfds.display_progress_bar(False)
  # TFDS prints its "Downloading and preparing..." banner to stdout; keep stdout for our output
  # (inspect --json), the caller logs what was prepared.
  with contextlib.redirect_stdout(io.StringIO()):
    builder.download_and_prepare(
        download_dir=downloads,
        download_config=_DownloadConfig(try_download_gcs=False, num_shards=num_shards))
  epath.Path(downloads).rmtree(missing_ok=True)
  files = {}
  for split in examples:
    instructions = builder.info.splits[split].file_instructions
    files[split] = [_relative(str(f.filename), data_dir) for f in instructions]
  return files


def _relative(path: str, root: str) -> str:
  """path below root, as text (works for gs:// and other non-local roots too)."""
  prefix = str(root).rstrip("/") + "/"
  return path[len(prefix):] if path.startswith(prefix) else os.path.relpath(path, root)


def read_builder(task: str, data_dir: str) -> tfds.core.DatasetBuilder:
  """The prepared dataset of `task` under data_dir, for direct inspection (tests, tools)."""
  return tfds.builder(tfds_name(task), data_dir=data_dir)
