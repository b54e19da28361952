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


def test_iterator_state_metrics_and_tensorboard_on_ram_fs(tiny_corpus, tmp_path):
  import tensorflow as tf
  from heph_jax.training.metrics import create_writer, read_metrics
  root = ram_fs.enable() + f"heph_test_{tmp_path.name}/run"
  config = tiny_test_config(tiny_corpus, **{"data.cache_dir": root + "/cache"})
  tok = load_tokenizer(config.data.tokenizer)
  pipe = DataPipeline(config, tok, None, log=lambda *_: None)
  it = pipe.train_iterator(8)
  next(it)
  it.save(root + "/ckpt/data")
  want = [next(it) for _ in range(2)]
  resumed = pipe.train_iterator(8)
  resumed.restore(root + "/ckpt/data")  # exact resume from a non-local state
  for a, b in zip(want, [next(resumed) for _ in range(2)]):
    assert all(np.array_equal(a[k], b[k]) for k in a)

  writer = create_writer(root, num_train_steps=2, tokens_per_step=8 * 64)
  writer.write_scalars(1, {"loss": 2.5})
  writer.write_scalars(2, {"loss": 2.0})
  writer.close()
  assert [r["loss"] for r in read_metrics(root)] == [2.5, 2.0]
  events = tf.io.gfile.glob(root + "/tensorboard/*")
  assert events, "no TensorBoard event file on ram://"
  losses = [float(tf.make_ndarray(v.tensor)) if v.HasField("tensor") else v.simple_value
            for e in tf.compat.v1.train.summary_iterator(events[0]) for v in e.summary.value]
  assert losses == [2.5, 2.0]


def test_mixing_rates_and_runs_files_on_ram_fs(tmp_path):
  from etils import epath
  from heph_jax.data.pipeline.rates import read_rates_file, write_json
  from heph_jax.mixing.runs import append_record, read_run_lines as read_records
  root = ram_fs.enable() + f"heph_test_{tmp_path.name}/mix"
  write_json(root + "/rates.json", {"rates": {"agent": 0.4, "code": 0.3, "text": 0.3}})
  assert not epath.Path(root + "/rates.json.tmp").exists()
  assert read_rates_file(root + "/rates.json")["rates"] == {"agent": 0.4, "code": 0.3, "text": 0.3}
  for i in range(3):
    append_record(root + "/runs.jsonl", {"run": i})
  records, lines = read_records(root + "/runs.jsonl")
  assert records == [{"run": 0}, {"run": 1}, {"run": 2}] and lines == [1, 2, 3]
