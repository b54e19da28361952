"""The data cache on a non-local filesystem (TF's ram://, served by tf.io.gfile like gs://):
preparation, reuse and the training stream work there and give what a local cache gives."""
import numpy as np

import ram_fs
from conftest import tiny_test_config
from heph_jax.data.pipeline import DataPipeline
from heph_jax.data.tokenizers import load_tokenizer


def _batches(config, workdir, n=3):
  tok = load_tokenizer(config.data.tokenizer)
  pipe = DataPipeline(config, tok, workdir, log=lambda *_: None)
  it = pipe.train_iterator(8)
  return pipe, [next(it) for _ in range(n)]


def test_data_cache_on_ram_fs_equals_local(tiny_corpus, tmp_path):
  from etils import epath
  root = ram_fs.enable() + f"heph_test_{tmp_path.name}/cache"
  remote = tiny_test_config(tiny_corpus, **{"data.cache_dir": root})
  pipe, got = _batches(remote, None)
  for task, prepared in pipe.prepared.items():
    assert prepared.directory.startswith("ram://")
    assert (epath.Path(prepared.directory) / "manifest.json").exists()
    assert prepared.lengths("train").sum() == prepared.manifest["tokens"]["train"]
  local = tiny_test_config(tiny_corpus, **{"data.cache_dir": str(tmp_path / "local")})
  _, want = _batches(local, None)
  for a, b in zip(got, want):
    assert all(np.array_equal(a[k], b[k]) for k in a)
  again, _ = _batches(remote, None, n=1)  # reused, not prepared again
  assert {t: p.directory for t, p in again.prepared.items()} == {
      t: p.directory for t, p in pipe.prepared.items()}
