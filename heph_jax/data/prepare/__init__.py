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
import io
import os
import tempfile
import uuid

import numpy as np
from etils import epath

from heph_jax.data.prepare import stream
from heph_jax.errors import ConfigError

PREPARE_VERSION = "4"  # 3: TFDS datasets; 4: streamed, config.data.num_shards shards per split


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
    return [str(epath.Path(self.directory) / f) for f in self.manifest["files"][split]]

  def lengths(self, split: str) -> np.ndarray:
    """Token count of every document of a split, in dataset order."""
    return np.load(io.BytesIO((epath.Path(self.directory) / f"{split}-lengths.npy").read_bytes()))

  def mean_chunk_tokens(self, split: str, seq_len: int) -> float:
    """Mean tokens per example once documents are cut into chunks of <= seq_len."""
    lengths = self.lengths(split).astype(np.int64)
    return float(lengths.sum() / np.ceil(lengths / seq_len).sum())


def _file_digest(path: str) -> str:
  digest = hashlib.sha256()
  with epath.Path(path).open("rb") as f:
    for block in iter(lambda: f.read(1 << 20), b""):
      digest.update(block)
  return digest.hexdigest()


def fingerprint(files, tokenizer, data_cfg) -> str:
  from heph_jax.data import forge
  from heph_jax.data.prepare import tfds_builder as tfds_forge
  parts = [PREPARE_VERSION, tfds_forge.VERSION, forge.TEMPLATE_VERSION, tokenizer.fingerprint(),
           data_cfg.loss_on, repr(float(data_cfg.validation_fraction))]
  # the shard layout decides which host reads what under process_sharding="records"
  parts.append(repr((data_cfg.get("num_shards"), data_cfg.get("shard_min_records"))))
  parts += [_file_digest(f) for f in files]
  return hashlib.sha256("\n".join(parts).encode()).hexdigest()[:16]


_bucket = stream.bucket  # the split hash (kept under its old name for callers)


def encode_record(record, tokenizer, loss_on: str):
  """Token ids and loss weights of one Forge record (BOS/EOS as the tokenizer's model expects).

  Trajectories and IFT samples use the base model's chat template when the tokenizer has one.
  """
  from heph_jax.data.tokenizers.chat_template import render_record
  pieces = render_record(record, tokenizer)
  if loss_on == "all":
    pieces = [(text, True) for text, _ in pieces]
  return tokenizer.encode_pieces(pieces, add_bos=True, add_eos=True)


def encode_batch(records, tokenizer, loss_on: str) -> list[tuple[str, tuple[list, list]]]:
  """(id, (ids, weights)) of each record: `encode_record` with one batched tokenizer call."""
  from heph_jax.data.tokenizers.chat_template import render_record
  documents = []
  for record in records:
    pieces = render_record(record, tokenizer)
    documents.append([(text, True) for text, _ in pieces] if loss_on == "all" else pieces)
  encoded = tokenizer.encode_pieces_batch(documents, add_bos=True, add_eos=True)
  return [(str(r["id"]), e) for r, e in zip(records, encoded)]


def _read_manifest(directory: epath.Path) -> dict | None:
  path = directory / "manifest.json"
  return json.loads(path.read_text()) if path.exists() else None


def prepare_source(task: str, files: list[str], tokenizer, data_cfg, cache_root: str,
                   log=print) -> PreparedSource:
  """Prepares (once) the TFDS dataset of one source; memory stays bounded (see stream.py).

  Every path goes through etils.epath, so cache_root may be gs:// (or any fsspec/TF filesystem).
  """
  if "://" not in cache_root:
    cache_root = os.path.abspath(cache_root)  # the TFDS data_dir; reads may run from elsewhere
  key = fingerprint(files, tokenizer, data_cfg)
  final = epath.Path(cache_root) / task / key
  manifest = _read_manifest(final)
  if manifest is not None:
    return PreparedSource(task, str(final), manifest)
  with tempfile.TemporaryDirectory(prefix="heph_prepare_") as scratch:
    spill = stream.Spill(scratch)
    try:
      skipped = stream.encode_sources(files, tokenizer, data_cfg, spill, encode_batch)
    finally:
      spill.close()
    manifest = _write_prepared(task, files, tokenizer, data_cfg, key, spill, skipped, final)
  log(f"prepared {task}: {manifest['records']['train']} train / {manifest['records']['validation']} "
      f"validation records, {manifest['tokens']['train']:,} train tokens, {manifest['skipped']} "
      f"bad lines skipped -> {final}")
  return PreparedSource(task, str(final), _read_manifest(final))


def _write_prepared(task, files, tokenizer, data_cfg, key, spill, skipped, final) -> dict:
  from heph_jax.data import forge
  from heph_jax.data.prepare import tfds_builder as tfds_forge
  held_out = stream.validation_mask(spill.buckets, data_cfg.validation_fraction)
  lengths = np.frombuffer(spill.lengths, np.int32)
  masks = {"train": ~held_out, "validation": held_out}
  for split, mask in masks.items():
    if not mask.any():
      raise ConfigError(f"config.data.sources.{task}: {files} gave no {split} records: "
                       "a source needs at least 2 trainable records")
  # Written under a temporary sibling, then renamed: concurrent preparers (several hosts or
  # workers finishing at once) each write their own copy and agree on the first one renamed.
  tmp = final.parent / f".{key}-{uuid.uuid4().hex[:12]}"
  tmp.mkdir(parents=True, exist_ok=True)
  examples = {s: (lambda m=m: spill.read(m)) for s, m in masks.items()}
  shard_files = tfds_forge.build_dataset(
      task, examples, str(tmp), num_shards=lambda n: stream.shard_count(n, data_cfg),
      description=f"Forge source {task!r} from {files}, tokenizer "
      f"{tokenizer.name}, template {forge.TEMPLATE_VERSION}, loss_on={data_cfg.loss_on!r}")
  manifest = {"task": task, "fingerprint": key, "inputs": files, "tokenizer": tokenizer.name,
              "template": forge.TEMPLATE_VERSION, "loss_on": data_cfg.loss_on,
              "tfds_name": tfds_forge.tfds_name(task), "files": shard_files,
              "records": {s: int(m.sum()) for s, m in masks.items()},
              "tokens": {s: int(lengths[m].astype(np.int64).sum()) for s, m in masks.items()},
              "skipped": skipped}
  for split, mask in masks.items():
    buf = io.BytesIO()
    np.save(buf, lengths[mask])
    (tmp / f"{split}-lengths.npy").write_bytes(buf.getvalue())
  (tmp / "manifest.json").write_text(json.dumps(manifest, indent=1))
  _publish(tmp, final)
  return manifest


def _publish(tmp: epath.Path, final: epath.Path) -> None:
  """Moves tmp to final unless another preparer got there first (then drops tmp)."""
  if not final.exists():
    try:
      tmp.rename(final)  # atomic on local disk; on GCS a copy, guarded by the check below
      return
    except OSError:
      pass
  tmp.rmtree(missing_ok=True)
  if _read_manifest(final) is None:
    raise OSError(f"{final}: another preparer left it without a manifest.json")


def default_cache_root(data_cfg, workdir: str | None) -> str:
  if data_cfg.cache_dir:
    return data_cfg.cache_dir
  if workdir:
    return str(epath.Path(workdir) / "data_cache")
  return os.path.join(os.path.expanduser("~"), ".cache", "heph_jax")


def define_flags(values, argv):
  from absl import flags
  from ml_collections import config_flags
  config_flags.DEFINE_config_file("config", None, "Config file (configs/*.py); --config.key=value overrides.",
                                  flag_values=values, lock_config=False, sys_argv=argv)
  flags.DEFINE_string("cache_dir", "", "Where the prepared datasets go (default: config.data.cache_dir; "
                      "may be gs://).", flag_values=values)
  flags.DEFINE_integer("workers", 0, "Tokenizer processes (default: config.data.prepare_workers).",
                       flag_values=values)
  flags.mark_flag_as_required("config", flag_values=values)


def _prepare_all(args, positional) -> int:
  del positional
  from heph_jax.data.pipeline.config import source_files, validate_data_config
  from heph_jax.data.tokenizers import load_tokenizer
  config = args.config
  if args.workers:
    config.data.prepare_workers = args.workers
  validate_data_config(config.data)
  tokenizer = load_tokenizer(config.data.tokenizer)
  root = args.cache_dir or default_cache_root(config.data, None)
  for task in config.data.sources.keys():
    prepare_source(task, source_files(config.data, task), tokenizer, config.data, root)
  return 0


def main(argv=None) -> int:
  """python -m heph_jax.data.prepare --config configs/X.py [--cache_dir DIR] [--workers N]."""
  os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
  from heph_jax import cli
  return cli.run("heph_jax.data.prepare", define_flags, _prepare_all, argv)
