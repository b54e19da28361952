"""Params and optimizer state carry the shardings the logical rules ask for (2x2x2 mesh)."""
import jax
import numpy as np
import pytest
from jax.sharding import PartitionSpec as P

from heph_jax.config import load_config_file
from heph_jax.model import ModelConfig
from heph_jax.parallel.mesh import make_mesh, mesh_shape
from heph_jax.training import optimizer, state as state_lib
from heph_jax.errors import ConfigError

CFG = ModelConfig(vocab_size=256, hidden_size=64, intermediate_size=128, num_hidden_layers=2,
                  num_attention_heads=4, num_key_value_heads=2, dtype="float32")


@pytest.fixture(scope="module")
def sharded_state(repo_root):
  config = load_config_file(str(repo_root / "configs" / "base.py"))
  config.mesh.update(dict(data=2, fsdp=2, tensor=2))
  mesh = make_mesh(config.mesh)
  tx, _ = optimizer.make_optimizer(config.optimizer, 10)
  shardings = state_lib.state_shardings(CFG, tx, mesh, config.logical_axis_rules)
  with jax.set_mesh(mesh):
    state = state_lib.create_state(CFG, tx, jax.random.PRNGKey(0), shardings)
  return mesh, state


# Expected specs written out by hand from base.py's rules: embed->fsdp, mlp/heads/kv_heads/vocab->tensor.
EXPECTED = {
    ("embed", "embedding"): P("tensor", "fsdp"),
    ("lm_head", "kernel"): P("fsdp", "tensor"),
    ("final_norm", "scale"): P(None),
    ("layers", "attn", "q"): P(None, "fsdp", "tensor", None),
    ("layers", "attn", "k"): P(None, "fsdp", "tensor", None),
    ("layers", "attn", "o"): P(None, "tensor", None, "fsdp"),
    ("layers", "mlp", "gate"): P(None, "fsdp", "tensor"),
    ("layers", "mlp", "down"): P(None, "tensor", "fsdp"),
    ("layers", "attn_norm", "scale"): P(None, None),
}


def _leaf(tree, path):
  for key in path:
    tree = tree[key]
  return tree


def _same_spec(actual, expected):
  pad = lambda s, n: tuple(s) + (None,) * (n - len(tuple(s)))
  n = max(len(tuple(actual)), len(tuple(expected)))
  return pad(actual, n) == pad(expected, n)


@pytest.mark.parametrize("path", list(EXPECTED))
def test_params_carry_rule_shardings(sharded_state, path):
  _, state = sharded_state
  arr = _leaf(state["params"], path)
  assert _same_spec(arr.sharding.spec, EXPECTED[path]), (path, arr.sharding.spec)
  # And the shards really are split: each device holds 1/(product of sharded axis sizes).
  mesh_sizes = {"data": 2, "fsdp": 2, "tensor": 2}
  factor = int(np.prod([mesh_sizes[a] for a in EXPECTED[path] if a]))
  assert arr.addressable_shards[0].data.size == arr.size // factor


def test_adam_moments_follow_their_params(sharded_state):
  _, state = sharded_state
  adam = [s for s in jax.tree.leaves(state["opt_state"], is_leaf=lambda x: hasattr(x, "mu"))
          if hasattr(s, "mu")]
  assert adam, "no Adam state found"
  for moments in (adam[0].mu, adam[0].nu):
    for path, spec in EXPECTED.items():
      assert _same_spec(_leaf(moments, path).sharding.spec, spec), path


def test_mesh_shape_fills_and_rejects():
  assert mesh_shape({"data": 2, "fsdp": -1, "tensor": 2}, 8) == {"dcn_data": 1, "data": 2, "fsdp": 2, "tensor": 2}
  with pytest.raises(ConfigError, match="config.mesh"):
    mesh_shape({"data": 3, "fsdp": -1}, 8)
  with pytest.raises(ConfigError, match="config.mesh"):
    mesh_shape({"data": 2, "fsdp": 2, "tensor": 1}, 8)
  with pytest.raises(ConfigError, match="only one axis"):
    mesh_shape({"data": -1, "fsdp": -1}, 8)
