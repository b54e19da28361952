"""Streamed, sharded preparation: the same documents, split and lengths as an in-memory reference
of the old algorithm; never a whole source in memory; N shards per split; hosts under
process_sharding="auto" read disjoint shard files that cover the split; concurrent finishers
agree on one published result."""
import collections
import hashlib
import os

import numpy as np
import pytest

from conftest import tiny_test_config
from heph_jax.data import forge
from heph_jax.data.pipeline.config import resolved_process_sharding, source_files
from heph_jax.data.prepare import encode_record, prepare_source, stream
from heph_jax.data.prepare import tfds_builder as tfds_forge
from heph_jax.data.tokenizers import load_tokenizer


def _reference_splits(files, tok, data_cfg):
  """The pre-streaming algorithm, written out: whole files in memory, sha256 bucket, fallback."""
  encoded = []
  for path in files:
    for record in forge.read_records(path).records:
      if forge.is_train(record):
        ids, weights = encode_record(record, tok, data_cfg.loss_on)
        if any(weights):
          h = int(hashlib.sha256(str(record["id"]).encode()).hexdigest()[:8], 16) / 0xFFFFFFFF
          encoded.append((h, tuple(ids), tuple(weights)))
  held = [h < data_cfg.validation_fraction for h, _, _ in encoded]
  if len(encoded) >= 2 and not any(held):
    held[min(range(len(encoded)), key=lambda i: encoded[i][0])] = True
  out = {"train": [], "validation": []}
  for (_, ids, w), v in zip(encoded, held):
    out["validation" if v else "train"].append((ids, w))
  return out


def _stored(prepared, split):
  builder = tfds_forge.read_builder(prepared.task, prepared.directory)
  return [(tuple(ex["targets"]), tuple(ex["loss_weights"]))
          for ex in builder.as_dataset(split=split).as_numpy_iterator()]


@pytest.mark.parametrize("fraction", [0.2, 1e-9])  # 1e-9: the one-record fallback
def test_streamed_prepare_matches_the_in_memory_reference(tiny_corpus, tmp_path, monkeypatch, fraction):
  config = tiny_test_config(tiny_corpus, **{"data.validation_fraction": fraction,
                                            "data.num_shards": 3, "data.shard_min_records": 1})
  tok = load_tokenizer(config.data.tokenizer)
  files = source_files(config.data, "trajectory")
  want = _reference_splits(files, tok, config.data)

  def no_whole_reads(*a, **k):
    raise AssertionError("prepare read a whole source into memory")
  monkeypatch.setattr(forge, "read_records", no_whole_reads)
  prepared = prepare_source("trajectory", files, tok, config.data, str(tmp_path), log=lambda *_: None)
  for split in ("train", "validation"):
    assert collections.Counter(_stored(prepared, split)) == collections.Counter(want[split])
    # lengths in source order, exactly as the reference saw them
    assert prepared.lengths(split).tolist() == [len(ids) for ids, _ in want[split]]
    assert prepared.manifest["records"][split] == len(want[split])
    assert len(prepared.manifest["files"][split]) == min(3, len(want[split]))
  if fraction < 1e-6:
    assert len(want["validation"]) == 1


def test_spill_round_trip_and_mask():
  import tempfile
  rng = np.random.default_rng(0)
  docs = [(rng.integers(0, 1 << 30, n), rng.integers(0, 2, n)) for n in (1, 7, 300, 2)]
  with tempfile.TemporaryDirectory() as d:
    spill = stream.Spill(d)
    for i, (ids, w) in enumerate(docs):
      spill.add(0.1 * i, ids, w)
    spill.close()
    keep = [True, False, True, True]
    back = list(spill.read(keep))
  assert [(a.tolist(), b.tolist()) for a, b in back] == [
      (a.tolist(), b.tolist()) for (a, b), k in zip(docs, keep) if k]
  assert stream.validation_mask(spill.buckets, 0.15).tolist() == [True, True, False, False]
  assert stream.validation_mask(spill.buckets, 0.0).tolist() == [True, False, False, False]


def test_shard_count_follows_config():
  from ml_collections import ConfigDict
  cfg = ConfigDict({"num_shards": 256, "shard_min_records": 64})
  assert [stream.shard_count(n, cfg) for n in (1, 63, 640, 10**6)] == [1, 1, 10, 256]


def test_auto_sharding_gives_two_hosts_disjoint_files_covering_the_split(tiny_corpus, tmp_path):
  import tensorflow as tf
  overrides = {"data.num_shards": 4, "data.shard_min_records": 1}
  config = tiny_test_config(tiny_corpus, **overrides)
  assert config.data.process_sharding == "auto"
  assert resolved_process_sharding(config.data, 2) == "records"
  assert resolved_process_sharding(config.data, 1) == "rows"
  tok = load_tokenizer(config.data.tokenizer)
  prepared = prepare_source("code", source_files(config.data, "code"), tok, config.data,
                            str(tmp_path), log=lambda *_: None)
  assert len(prepared.manifest["files"]["train"]) == 4
  builder = tfds_forge.read_builder("code", prepared.directory)
  per_host = []
  for index in range(2):  # what seqio.TfdsDataSource asks TFDS for under ShardInfo(index, 2)
    read = tfds_forge.tfds.ReadConfig(input_context=tf.distribute.InputContext(2, index, 1))
    per_host.append(collections.Counter(
        (tuple(ex["targets"]), tuple(ex["loss_weights"]))
        for ex in builder.as_dataset(split="train", read_config=read).as_numpy_iterator()))
  whole = collections.Counter(_stored(prepared, "train"))
  assert per_host[0] and per_host[1] and per_host[0] + per_host[1] == whole
  unique = {d for d, n in whole.items() if n == 1}
  assert not (set(per_host[0]) & set(per_host[1]) & unique)


def test_concurrent_finishers_agree_on_one_result(tiny_corpus, tmp_path):
  from etils import epath
  from heph_jax.data import prepare
  final = epath.Path(tmp_path) / "t" / "key"
  for n, text in enumerate(["first", "second"]):
    tmp = epath.Path(tmp_path) / "t" / f".key-{n}"
    tmp.mkdir(parents=True)
    (tmp / "manifest.json").write_text(f'{{"who": "{text}"}}')
    prepare._publish(tmp, final)
    assert not tmp.exists()
  assert (final / "manifest.json").read_text() == '{"who": "first"}'


def _bad_corpus(tmp_path, tiny_corpus):
  lines = open(tiny_corpus["sources"]["code"]).read().splitlines()[:40]
  lines.insert(17, '{"type": "code", "id": "broken"')  # line 18: not JSON
  path = tmp_path / "bad.jsonl"
  path.write_text("\n".join(lines) + "\n")
  return str(path)


def test_two_workers_write_the_same_dataset_and_keep_the_error_contract(tiny_corpus, tmp_path):
  from heph_jax.data.forge import ForgeDataError
  base = {"data.num_shards": 2, "data.shard_min_records": 1, "data.on_error": "skip"}
  bad = _bad_corpus(tmp_path, tiny_corpus)
  out = {}
  for workers in (1, 2):
    config = tiny_test_config(tiny_corpus, **base, **{"data.prepare_workers": workers})
    tok = load_tokenizer(config.data.tokenizer)
    files = source_files(config.data, "code") + [bad]
    prepared = prepare_source("code", files, tok, config.data, str(tmp_path / f"w{workers}"),
                              log=lambda *_: None)
    out[workers] = prepared
    assert prepared.manifest["skipped"] == 1  # the broken line, counted
  one, two = out[1], out[2]
  assert one.manifest["fingerprint"] == two.manifest["fingerprint"]
  for split in ("train", "validation"):
    assert _stored(one, split) == _stored(two, split)  # same order too: same keys, same shards
    assert one.lengths(split).tolist() == two.lengths(split).tolist()
  config = tiny_test_config(tiny_corpus, **{**base, "data.prepare_workers": 2,
                                            "data.on_error": "raise"})
  with pytest.raises(ForgeDataError, match=r"bad\.jsonl:18: "):
    prepare_source("code", [bad], load_tokenizer(config.data.tokenizer), config.data,
                   str(tmp_path / "raise"), log=lambda *_: None)


def test_workers_use_the_tokenizer_they_are_given(tiny_corpus, tmp_path):
  """prepare_source's tokenizer argument, not config.data.tokenizer, reaches the worker processes
  (benchmarks and library callers pass a tokenizer the config does not name)."""
  config = tiny_test_config(tiny_corpus, **{"data.prepare_workers": 2, "data.num_shards": 1})
  tok = load_tokenizer(config.data.tokenizer)
  with config.unlocked():
    config.data.tokenizer = "sp:no/such/tokenizer.model"
  files = source_files(config.data, "code")
  two = prepare_source("code", files, tok, config.data, str(tmp_path / "two"), log=lambda *_: None)
  config.data.prepare_workers = 1
  one = prepare_source("code", files, tok, config.data, str(tmp_path / "one"), log=lambda *_: None)
  assert one.lengths("train").tolist() == two.lengths("train").tolist()


def test_prepare_cli_prepares_every_source_with_overrides(tmp_path, monkeypatch, capsys):
  """python -m heph_jax.data.prepare reads flags the one CLI way: --config.key overrides apply,
  a missing --config or a bad key exits 2 naming it."""
  import json as json_lib
  from heph_jax.data.prepare import main
  root = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
  monkeypatch.chdir(root)  # the tiny config names its tokenizer relative to the repo
  assert main(["--config=configs/tiny.py", f"--cache_dir={tmp_path}", "--config.data.num_shards=2"]) == 0
  manifests = sorted(tmp_path.glob("*/*/manifest.json"))
  assert [m.parent.parent.name for m in manifests] == ["code", "text", "tool_doc", "trajectory"]
  for manifest in manifests:
    shards = json_lib.loads(manifest.read_text())["files"]["train"]
    assert len(shards) == 2  # the override reached the shard count
  assert main([f"--cache_dir={tmp_path}"]) == 2
  assert "heph_jax.data.prepare: --config is required" in capsys.readouterr().err
  assert main(["--config=configs/tiny.py", "--config.data.on_error=bogus"]) == 2
  assert "config.data.on_error" in capsys.readouterr().err
