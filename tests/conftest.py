"""Test setup: 8 simulated CPU devices, quiet TensorFlow, shared fixtures."""
import os

os.environ.setdefault("XLA_FLAGS", "--xla_force_host_platform_device_count=8")
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
os.environ.setdefault("TPU_SKIP_MDS_QUERY", "1")
os.environ.setdefault("TPU_WORKER_HOSTNAMES", "localhost")
os.environ.setdefault("ALLOW_MULTIPLE_LIBTPU_LOAD", "1")  # parallel test processes may all load libtpu

import pathlib

import pytest

REPO_ROOT = pathlib.Path(__file__).resolve().parent.parent


@pytest.fixture(scope="session")
def repo_root():
  return REPO_ROOT


def pytest_configure(config):
  config.addinivalue_line("markers", "slow: longer than ~30 s; run with -m slow")
  config.addinivalue_line("markers", "tpu_aot: compiles for TPU with libtpu (needs the test extra)")


def _write_corpus(root: pathlib.Path) -> dict:
  """Four small Forge sources (real stdlib code and pydoc prose) and a SentencePiece model."""
  import json
  import sys

  import pydoc_data.topics
  import sentencepiece as spm

  lib = pathlib.Path(sys.base_prefix) / "lib" / f"python{sys.version_info.major}.{sys.version_info.minor}"
  code = [p.read_text(encoding="utf-8", errors="replace") for p in sorted(lib.glob("*.py"))[:80]]
  prose = [v for _, v in sorted(pydoc_data.topics.topics.items())]
  docs = {
      "code": [{"type": "code", "content": c[:3000]} for c in code],
      "text": [{"type": "text", "content": t[:3000]} for t in prose[:60]],
      "tool_doc": [{"type": "text", "content": t[:1500]} for t in prose[60:]],
      "trajectory": [{"type": "code", "content": c[3000:6000] or c[:500]} for c in code[:60]],
  }
  files = {}
  for task, records in docs.items():
    path = root / f"{task}.jsonl"
    with open(path, "w") as f:
      for i, record in enumerate(records):
        f.write(json.dumps({"id": f"{task}-{i}", "source": "test", **record}) + "\n")
    files[task] = str(path)
  with open(root / "corpus.txt", "w") as f:
    for records in docs.values():
      for r in records:
        f.write(r["content"][:1500].replace("\n", " ") + "\n")
  spm.SentencePieceTrainer.train(
      input=str(root / "corpus.txt"), model_prefix=str(root / "sp"), vocab_size=512,
      model_type="unigram", byte_fallback=True, unk_id=0, bos_id=1, eos_id=2, pad_id=-1,
      minloglevel=2)
  return {"sources": files, "tokenizer": "sp:" + str(root / "sp.model")}


@pytest.fixture(scope="session")
def tiny_corpus(tmp_path_factory):
  return _write_corpus(tmp_path_factory.mktemp("corpus"))


def tiny_test_config(corpus: dict, **overrides):
  """configs/tiny.py shrunk for tests, reading `corpus` (the tiny_corpus fixture)."""
  from heph_jax.config import load_config_file, override
  config = load_config_file(str(REPO_ROOT / "configs" / "tiny.py"))
  config.data.tokenizer = corpus["tokenizer"]
  for task, path in corpus["sources"].items():
    config.data.sources[task] = path
  config.seq_len = 64
  config.global_batch_size = 8
  config.model.vocab_size = 512
  config.model.hidden_size = 64
  config.model.intermediate_size = 128
  config.eval_batches = 1
  config.data.shuffle_buffer = 64
  return override(config, overrides)


def config_flags_for(corpus: dict) -> list:
  """The same test overrides as command-line flags, for subprocess runs of heph_jax.train."""
  flags = [f"--config.data.tokenizer={corpus['tokenizer']}", "--config.seq_len=64",
           "--config.global_batch_size=8", "--config.model.vocab_size=512",
           "--config.model.hidden_size=64", "--config.model.intermediate_size=128",
           "--config.eval_batches=1", "--config.data.shuffle_buffer=64"]
  flags += [f"--config.data.sources.{t}={p}" for t, p in corpus["sources"].items()]
  return flags
