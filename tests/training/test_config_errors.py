"""Invalid configs fail before compilation with a message naming the key."""
import os
import subprocess
import sys

import pytest

from conftest import REPO_ROOT, config_flags_for, tiny_test_config
from heph_jax.errors import ConfigError
from heph_jax.train import train_and_evaluate


@pytest.mark.parametrize("overrides, key", [
    ({"mesh.data": 3}, "config.mesh"),
    ({"mesh.tensor": 16}, "config.mesh"),
    ({"global_batch_size": 12}, "config.global_batch_size"),
    ({"global_batch_size": 8, "grad_accum_steps": 3}, "config.global_batch_size"),
    ({"per_device_batch_size": 2}, "config.per_device_batch_size"),
    ({"data.sources.code": "/nonexistent/code-*.jsonl"}, "config.data.sources.code"),
    ({"data.tokenizer": "sp:/nonexistent/tok.model"}, "config.data.tokenizer"),
    ({"data.rates.code": -1.0}, "config.data.rates"),
    ({"model.num_key_value_heads": 3}, "config.model.num_key_value_heads"),
    ({"model.attention_impl": "cuda"}, "config.model.attention_impl"),
    ({"model.attention_impl": "pallas", "model.attention_block_sizes": (100, 128)},
     "config.model.attention_block_sizes"),
    ({"model.attention_block_sizes": (128, 128, 128)}, "config.model.attention_block_sizes"),
    ({"seq_len": 4096}, "config.seq_len"),
    ({"loss_chunk_size": -8}, "config.loss_chunk_size"),
    ({"optimizer.schedule": "exp"}, "config.optimizer.schedule"),
    ({"init_from": "s3://bucket/x"}, "config.init_from"),
])
def test_bad_config_names_the_key(tiny_corpus, tmp_path, overrides, key):
  config = tiny_test_config(tiny_corpus, **overrides)
  with pytest.raises(ConfigError, match=key.replace(".", r"\.")):
    train_and_evaluate(config, str(tmp_path))
  assert not os.path.exists(tmp_path / "checkpoints"), "failed after starting work"


def test_unknown_model_key(tiny_corpus, tmp_path):
  config = tiny_test_config(tiny_corpus)
  config.model.unlock()
  config.model.num_experts = 8
  with pytest.raises(ConfigError, match=r"config\.model: unknown key.*num_experts"):
    train_and_evaluate(config, str(tmp_path))


def test_cli_rejects_unknown_key_and_reports_config_errors(tiny_corpus, tmp_path):
  env = dict(os.environ, JAX_PLATFORMS="cpu", PYTHONPATH=str(REPO_ROOT))
  base = [sys.executable, "-m", "heph_jax.train", "--config", str(REPO_ROOT / "configs" / "tiny.py"),
          "--workdir", str(tmp_path)]
  unknown = subprocess.run(base + ["--config.optimizer.lr_peak=1"], env=env, capture_output=True, text=True)
  assert unknown.returncode != 0 and "lr_peak" in unknown.stderr
  bad = subprocess.run(base + config_flags_for(tiny_corpus) + ["--config.mesh.fsdp=3"],
                       env=env, capture_output=True, text=True)
  assert bad.returncode == 2
  assert "configuration error: config.mesh" in bad.stderr
  assert "Traceback" not in bad.stderr


def test_cpu_attention_without_a_compiler_names_the_key(tiny_corpus, tmp_path, monkeypatch):
  monkeypatch.setenv("HEPH_JAX_CACHE", str(tmp_path / "cache"))
  monkeypatch.setenv("CXX", "/nonexistent/g++")
  config = tiny_test_config(tiny_corpus, **{"model.attention_impl": "cpu"})
  with pytest.raises(ConfigError, match=r"config\.model\.attention_impl.*/nonexistent/g\+\+"):
    train_and_evaluate(config, str(tmp_path / "work"))
  assert not os.path.exists(tmp_path / "work" / "checkpoints")


def test_cpu_attention_is_refused_for_tpu():
  from heph_jax import config as config_lib
  config = tiny_test_config({"sources": {}, "tokenizer": ""}, **{"model.attention_impl": "cpu"})
  with pytest.raises(ConfigError, match=r"config\.model\.attention_impl: 'cpu' .* on 'tpu'"):
    config_lib.validate(config, 8, check_data=False, platform="tpu")


def test_validation_does_not_build_the_cpu_kernel(tmp_path, monkeypatch):
  """validate() only checks; the C++ build happens at run start (build_kernels), naming the key."""
  from heph_jax import config as config_lib
  monkeypatch.setenv("HEPH_JAX_CACHE", str(tmp_path / "cache"))
  monkeypatch.setenv("CXX", "/nonexistent/g++")
  config = tiny_test_config({"sources": {}, "tokenizer": ""}, **{"model.attention_impl": "cpu"})
  config_lib.validate(config, 8, check_data=False, platform="cpu")
  assert not (tmp_path / "cache").exists()
  with pytest.raises(ConfigError, match=r"config\.model\.attention_impl.*/nonexistent/g\+\+"):
    config_lib.build_kernels(config)
