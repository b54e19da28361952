"""TFDS builders for Forge sources: what goes in comes back (through TFDS and through SeqIO), the
prepared cache is a versioned TFDS dataset plus the manifest and lengths the mixture needs, and an
unchanged source is reused while a changed one is prepared anew."""
import collections
import json
import os

import numpy as np
import pytest

from conftest import tiny_test_config
from heph_jax.data.prepare import tfds_builder as tfds_forge
from heph_jax.data.prepare import prepare_source
from heph_jax.data.pipeline.config import source_files
from heph_jax.data.tokenizers import load_tokenizer


def _random_examples(n, seed):
  rng = np.random.default_rng(seed)
  out = []
  for _ in range(n):
    length = int(rng.integers(1, 300))
    # Id 0 is a real token (Llama-3): it must survive storage like any other id.
    out.append((rng.integers(0, 130_000, length).tolist(), rng.integers(0, 2, length).tolist()))
  return out


def _as_multiset(examples):
  return collections.Counter((tuple(map(int, a)), tuple(map(int, b))) for a, b in examples)


def test_built_dataset_reads_back_exactly_through_tfds_and_seqio(tmp_path):
  import seqio
  examples = {"train": _random_examples(57, 0), "validation": _random_examples(5, 1)}
  files = tfds_forge.build_dataset("Tool-Doc", examples, str(tmp_path))
  assert tfds_forge.tfds_name("Tool-Doc") == "forge_tool_doc:1.0.0"
  assert not os.path.exists(tmp_path / ".downloads")
  for split, names in files.items():
    assert names and all(os.path.isfile(tmp_path / n) for n in names)
    assert all(n.startswith(os.path.join("forge_tool_doc", "1.0.0")) for n in names)

  # A fresh reader finds the dataset from its files alone (no builder class is registered).
  builder = tfds_forge.read_builder("Tool-Doc", str(tmp_path))
  assert str(builder.info.version) == tfds_forge.VERSION
  counts = {s: builder.info.splits[s].num_examples for s in examples}
  assert counts == {"train": 57, "validation": 5}
  source = seqio.TfdsDataSource(tfds_name=tfds_forge.tfds_name("Tool-Doc"),
                                tfds_data_dir=str(tmp_path), read_only=True)
  for split, want in examples.items():
    for ds in (builder.as_dataset(split=split), source.get_dataset(split, shuffle=False)):
      assert ds.element_spec["targets"].dtype.name == "int32"
      got = [(ex["targets"], ex["loss_weights"]) for ex in ds.as_numpy_iterator()]
      assert _as_multiset(got) == _as_multiset(want)


def test_mismatched_lengths_are_refused(tmp_path):
  with pytest.raises(ValueError, match="3 ids but 2 loss weights"):
    tfds_forge.build_dataset("t", {"train": [([1, 2, 3], [1, 1])]}, str(tmp_path))


def _tfds_documents(prepared, split):
  builder = tfds_forge.read_builder(prepared.task, prepared.directory)
  return [(tuple(ex["targets"]), tuple(ex["loss_weights"]))
          for ex in builder.as_dataset(split=split).as_numpy_iterator()]


def test_prepared_source_is_a_tfds_dataset_with_manifest_and_lengths(tiny_corpus, tmp_path):
  config = tiny_test_config(tiny_corpus)
  tok = load_tokenizer(config.data.tokenizer)
  files = source_files(config.data, "text")
  prepared = prepare_source("text", files, tok, config.data, str(tmp_path), log=lambda *_: None)
  assert prepared.tfds_name == "forge_text:1.0.0"
  assert prepared.directory == os.path.join(str(tmp_path), "text", prepared.manifest["fingerprint"])

  # Every record of the file, tokenized (BOS unweighted, text and EOS weighted), is stored once:
  # most in train, a few held out for validation.
  with open(files[0]) as f:
    contents = [json.loads(line)["content"] for line in f]
  want = collections.Counter()
  for content in contents:
    ids, _ = tok.encode_pieces([(content, True)])
    want[(tuple(ids), (0,) + (1,) * (len(ids) - 1))] += 1
  stored = {s: _tfds_documents(prepared, s) for s in ("train", "validation")}
  assert collections.Counter(stored["train"]) + collections.Counter(stored["validation"]) == want
  assert 0 < len(stored["validation"]) < 0.2 * len(contents)
  for split, docs in stored.items():
    lengths = np.load(os.path.join(prepared.directory, f"{split}-lengths.npy"))
    assert sorted(lengths.tolist()) == sorted(len(ids) for ids, _ in docs)
    assert prepared.manifest["records"][split] == len(docs)
    assert prepared.manifest["tokens"][split] == sum(len(ids) for ids, _ in docs)

  # Unchanged inputs: the same folder, not written again. A changed setting: a new folder.
  info = os.path.join(prepared.directory, "forge_text", "1.0.0", "dataset_info.json")
  before = os.stat(info).st_mtime_ns
  again = prepare_source("text", files, tok, config.data, str(tmp_path), log=lambda *_: None)
  assert again.directory == prepared.directory and os.stat(info).st_mtime_ns == before
  config.data.validation_fraction = 0.3
  other = prepare_source("text", files, tok, config.data, str(tmp_path), log=lambda *_: None)
  assert other.directory != prepared.directory
  assert other.manifest["records"]["validation"] > prepared.manifest["records"]["validation"]


def test_stored_records_are_the_bytes_the_sequence_feature_wrote():
  """features() stores ids as a 1-D Tensor for speed; the records must stay byte for byte those of
  the Sequence(np.int32) spec earlier caches were written with, so both read back the same."""
  import tensorflow_datasets as tfds
  from tensorflow_datasets.core import example_serializer
  sequence = tfds.features.FeaturesDict({"targets": tfds.features.Sequence(np.int32),
                                         "loss_weights": tfds.features.Sequence(np.int32)})
  current = tfds_forge.features()
  assert current.get_serialized_info() == sequence.get_serialized_info()
  old = example_serializer.ExampleSerializer(sequence.get_serialized_info())
  new = example_serializer.ExampleSerializer(current.get_serialized_info())
  for ids, weights in _random_examples(20, 2) + [([0], [1])]:
    example = {"targets": np.asarray(ids, np.int32), "loss_weights": np.asarray(weights, np.int32)}
    assert (new.serialize_example(current.encode_example(example))
            == old.serialize_example(sequence.encode_example(example)))
