"""HF export to a non-local filesystem (TF's ram://, served by tf.io.gfile like gs://): the same
bytes as a local export, tokenizer included, and the shards read back as the params."""
import os
import sys

import jax
import numpy as np
from safetensors.numpy import load

sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..", "data"))
import ram_fs  # noqa: E402
from heph_jax.data.tokenizers import load_tokenizer  # noqa: E402
from heph_jax.export import hf  # noqa: E402
from heph_jax.model import ModelConfig, llama  # noqa: E402

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def test_export_to_ram_fs_equals_local_export(tmp_path):
  from etils import epath
  cfg = ModelConfig(vocab_size=384, hidden_size=64, intermediate_size=128, num_hidden_layers=2,
                    num_attention_heads=4, num_key_value_heads=2, dtype="float32")
  rng = np.random.RandomState(0)
  shapes = jax.eval_shape(lambda: llama.init(cfg, jax.random.PRNGKey(0)))
  params = jax.tree_util.tree_map(lambda s: rng.randn(*s.shape).astype(np.float32), shapes)
  tok = load_tokenizer("sp:" + os.path.join(REPO, "data", "tokenizer", "tokenizer.model"))
  remote = epath.Path(ram_fs.enable() + f"heph_export_{tmp_path.name}/hf")
  local = tmp_path / "hf"
  for out in (str(remote), str(local)):
    hf.save(cfg, params, out, tokenizer=tok, max_shard_bytes=100_000)
  names = sorted(p.name for p in remote.iterdir())
  assert names == sorted(os.listdir(local))
  assert "config.json" in names and "model.safetensors.index.json" in names
  assert any(n.startswith("tokenizer") for n in names)
  for name in names:
    assert (remote / name).read_bytes() == (local / name).read_bytes(), name
  tensors = {}
  for name in names:
    if name.endswith(".safetensors"):
      tensors.update(load((remote / name).read_bytes()))
  # embed/embedding -> model.embed_tokens.weight, unchanged [V, D] (export/hf_table.py)
  np.testing.assert_array_equal(tensors["model.embed_tokens.weight"], params["embed"]["embedding"])
