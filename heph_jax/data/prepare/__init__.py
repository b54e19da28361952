"""Forge JSONL -> tokenized TFDS dataset (train / validation), prepared once per source.

Tokenizing here, in Python, keeps the tf.data pipeline to file reads and int ops: it stays
checkpointable (no py_function) and works with any tokenizer (SentencePiece or tokenizer.json).
The tokenized documents are stored by a versioned TFDS builder (heph_jax.data.prepare.tfds_builder) and read
with seqio.TfdsDataSource. A prepared source is a folder named by a fingerprint of everything it
depends on (input bytes, tokenizer files, template and builder versions, loss mode, split
fraction), so a change re-prepares and an unchanged source is reused:

    CACHE/<task>/<fingerprint>/                      the TFDS data_dir of this source
        forge_<task>/<version>/{dataset_info.json, features.json, *.tfrecord-*}
        manifest.json                                what went in, record and token counts
        {train,validation}-lengths.npy               document lengths (token-share correction)

Run ahead of a large job: `python -m heph_jax.data.prepare --config configs/X.py`.
"""
from __future__ import annotations

import dataclasses
import hashlib
import json
import os
import shutil
import tempfile

import numpy as np

from heph_jax.errors import ConfigError

PREPARE_VERSION = "3"  # 3: TFDS datasets instead of hand-written TFRecord shards


@dataclasses.dataclass(frozen=True)
class PreparedSource:
  task: str
  directory: str
  manifest: dict

  @property
  def tfds_name(self) -> str:
    """`name:version` of the TFDS dataset; `directory` is its data_dir."""
    return self.manifest["tfds_name"]

  def files(self, split: str) -> list[str]:
    return [os.path.join(self.directory, f) for f in self.manifest["files"][split]]

  def mean_chunk_tokens(self, split: str, seq_len: int) -> float:
    """Mean tokens per example once documents are cut into chunks of <= seq_len."""
    lengths = np.load(os.path.join(self.directory, f"{split}-lengths.npy")).astype(np.int64)
    return float(lengths.sum() / np.ceil(lengths / seq_len).sum())


def _file_digest(path: str) -> str:
  digest = hashlib.sha256()
  with open(path, "rb") as f:
    for block in iter(lambda: f.read(1 << 20), b""):
      digest.update(block)
  return digest.hexdigest()


def fingerprint(files, tokenizer, data_cfg) -> str:
  from heph_jax.data import forge
  from heph_jax.data.prepare import tfds_builder as tfds_forge
  parts = [PREPARE_VERSION, tfds_forge.VERSION, forge.TEMPLATE_VERSION, tokenizer.fingerprint(),
           data_cfg.loss_on, repr(float(data_cfg.validation_fraction))]
  parts += [_file_digest(f) for f in files]
  return hashlib.sha256("\n".join(parts).encode()).hexdigest()[:16]


def _bucket(record_id: str) -> float:
  return int(hashlib.sha256(record_id.encode()).hexdigest()[:8], 16) / 0xFFFFFFFF


def encode_record(record, tokenizer, loss_on: str):
  """Token ids and loss weights of one Forge record (BOS/EOS as the tokenizer's model expects).

  Trajectories and IFT samples use the base model's chat template when the tokenizer has one.
  """
  from heph_jax.data.tokenizers.chat_template import render_record
  pieces = render_record(record, tokenizer)
  if loss_on == "all":
    pieces = [(text, True) for text, _ in pieces]
  return tokenizer.encode_pieces(pieces, add_bos=True, add_eos=True)


def prepare_source(task: str, files: list[str], tokenizer, data_cfg, cache_root: str,
                   log=print) -> PreparedSource:
  from heph_jax.data import forge
  if "://" not in cache_root:
    cache_root = os.path.abspath(cache_root)  # the TFDS data_dir; reads may run from elsewhere
  key = fingerprint(files, tokenizer, data_cfg)
  final = os.path.join(cache_root, task, key)
  manifest_path = os.path.join(final, "manifest.json")
  if os.path.exists(manifest_path):
    with open(manifest_path) as f:
      return PreparedSource(task, final, json.load(f))

  encoded = []  # (hash bucket of the id, ids) - the bucket decides the split, stably
  skipped = 0
  for path in files:
    result = forge.read_records(path, on_error=data_cfg.on_error,
                                max_record_bytes=data_cfg.max_record_bytes)
    skipped += result.stats.skipped
    for record in result.records:
      if not forge.is_train(record):
        continue  # eval data (e.g. BFCL questions) never enters a training mixture
      ids, weights = encode_record(record, tokenizer, data_cfg.loss_on)
      if any(weights):
        encoded.append((_bucket(str(record["id"])), ids, weights))
  is_validation = [bucket < data_cfg.validation_fraction for bucket, _, _ in encoded]
  if len(encoded) >= 2 and not any(is_validation):  # small source: still hold one record out
    is_validation[min(range(len(encoded)), key=lambda i: encoded[i][0])] = True
  examples = {"train": [], "validation": []}
  lengths = {"train": [], "validation": []}
  for (_, ids, weights), held_out in zip(encoded, is_validation):
    split = "validation" if held_out else "train"
    examples[split].append((ids, weights))
    lengths[split].append(len(ids))
  tokens = {split: int(sum(v)) for split, v in lengths.items()}
  for split in examples:
    if not examples[split]:
      raise ConfigError(f"config.data.sources.{task}: {files} gave no {split} records: "
                       "a source needs at least 2 trainable records")

  os.makedirs(os.path.join(cache_root, task), exist_ok=True)
  tmp = tempfile.mkdtemp(prefix=f".{key}-", dir=os.path.join(cache_root, task))
  from heph_jax.data.prepare import tfds_builder as tfds_forge
  shard_files = tfds_forge.build_dataset(
      task, examples, tmp, description=f"Forge source {task!r} from {files}, tokenizer "
      f"{tokenizer.name}, template {forge.TEMPLATE_VERSION}, loss_on={data_cfg.loss_on!r}")
  manifest = {"task": task, "fingerprint": key, "inputs": files, "tokenizer": tokenizer.name,
              "template": forge.TEMPLATE_VERSION, "loss_on": data_cfg.loss_on,
              "tfds_name": tfds_forge.tfds_name(task), "files": shard_files,
              "records": {s: len(v) for s, v in examples.items()}, "tokens": tokens, "skipped": skipped}
  for split in examples:
    np.save(os.path.join(tmp, f"{split}-lengths.npy"), np.asarray(lengths[split], np.int32))
  with open(os.path.join(tmp, "manifest.json"), "w") as f:
    json.dump(manifest, f, indent=1)
  try:
    os.rename(tmp, final)  # atomic: concurrent preparers (several hosts) agree on one result
  except OSError:
    shutil.rmtree(tmp, ignore_errors=True)
  log(f"prepared {task}: {manifest['records']['train']} train / {manifest['records']['validation']} "
      f"validation records, {tokens['train']:,} train tokens -> {final}")
  with open(manifest_path) as f:
    return PreparedSource(task, final, json.load(f))


def default_cache_root(data_cfg, workdir: str | None) -> str:
  if data_cfg.cache_dir:
    return data_cfg.cache_dir
  if workdir:
    return os.path.join(workdir, "data_cache")
  return os.path.join(os.path.expanduser("~"), ".cache", "heph_jax")


def main(argv=None):
  import argparse
  from heph_jax.config import load_config_file
  from heph_jax.data.pipeline.config import source_files, validate_data_config
  from heph_jax.data.tokenizers import load_tokenizer
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("--config", required=True)
  parser.add_argument("--cache_dir", default="", help="where shards go (default: config.data.cache_dir)")
  args = parser.parse_args(argv)
  config = load_config_file(args.config)
  validate_data_config(config.data)
  tokenizer = load_tokenizer(config.data.tokenizer)
  root = args.cache_dir or default_cache_root(config.data, None)
  for task in config.data.sources.keys():
    prepare_source(task, source_files(config.data, task), tokenizer, config.data, root)

