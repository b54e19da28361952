"""Train state {step, params, opt_state}: sharded initialization from abstract shapes."""
import jax
import jax.numpy as jnp
from jax.sharding import NamedSharding, PartitionSpec

from heph_jax.model import llama
from heph_jax.parallel.mesh import logical_to_sharding


def param_shardings(model_cfg, mesh, rules):
  return logical_to_sharding(llama.logical_axes(model_cfg), mesh, rules)


def state_shardings(model_cfg, tx, mesh, rules):
  """Shardings of the whole state. Optimizer moments follow the params they belong to."""
  p_shard = param_shardings(model_cfg, mesh, rules)
  abstract_params = jax.eval_shape(lambda: llama.init(model_cfg, jax.random.PRNGKey(0)))
  abstract_opt = jax.eval_shape(tx.init, abstract_params)
  replicated = NamedSharding(mesh, PartitionSpec())
  # Optimizer moments (mu, nu) sit under optax containers at the same dict paths as their params.
  by_path = {_dict_keys(path): sh for path, sh in jax.tree_util.tree_flatten_with_path(p_shard)[0]}

  def pick(path, _):
    keys = _dict_keys(path)
    for start in range(len(keys)):
      if keys[start:] in by_path:
        return by_path[keys[start:]]
    return replicated

  opt_shard = jax.tree_util.tree_map_with_path(pick, abstract_opt)
  return {"step": replicated, "params": p_shard, "opt_state": opt_shard}


def _dict_keys(path):
  return tuple(k.key for k in path if isinstance(k, jax.tree_util.DictKey))


def abstract_state(model_cfg, tx, shardings):
  shapes = jax.eval_shape(lambda: init_state_fn(model_cfg, tx)(jax.random.PRNGKey(0)))
  return jax.tree.map(lambda s, sh: jax.ShapeDtypeStruct(s.shape, s.dtype, sharding=sh), shapes, shardings)


def init_state_fn(model_cfg, tx):
  def init(rng):
    params = llama.init(model_cfg, rng)
    return {"step": jnp.zeros((), jnp.int32), "params": params, "opt_state": tx.init(params)}
  return init


def create_state(model_cfg, tx, rng, shardings, params=None):
  """Initializes directly into the target shardings (no full copy on one device).

  With `params` given (from init_from), they are kept and only the optimizer state is created.
  """
  if params is None:
    return jax.jit(init_state_fn(model_cfg, tx), out_shardings=shardings)(rng)
  make = lambda p: {"step": jnp.zeros((), jnp.int32), "params": p, "opt_state": tx.init(p)}
  return jax.jit(make, out_shardings=shardings, donate_argnums=0)(params)
