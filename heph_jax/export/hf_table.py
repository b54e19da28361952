"""The one table between Hugging Face Llama/Mistral tensors and heph_jax params.

HF stores torch Linear weights as [out, in] with heads merged into one axis; heph_jax keeps
[in, out] with heads split out (heph_jax/model/llama.py). Each row says how to get ours from theirs:
split each HF axis into the sizes of the axes it merges (`hf_groups`), then permute (`to_ours`).
Per-layer HF tensors ("{layer}" in the name) stack along our leading `layers` axis.

    HF name ("..." = model.layers.{i})    HF shape     heph_jax path            our shape
    model.embed_tokens.weight              [V, D]       embed/embedding          [V, D]
    ....input_layernorm.weight             [D]          layers/attn_norm/scale   [L, D]
    ....self_attn.q_proj.weight            [H*hd, D]    layers/attn/q            [L, D, H, hd]
    ....self_attn.k_proj.weight            [KV*hd, D]   layers/attn/k            [L, D, KV, hd]
    ....self_attn.v_proj.weight            [KV*hd, D]   layers/attn/v            [L, D, KV, hd]
    ....self_attn.o_proj.weight            [D, H*hd]    layers/attn/o            [L, H, hd, D]
    ....post_attention_layernorm.weight    [D]          layers/mlp_norm/scale    [L, D]
    ....mlp.gate_proj.weight               [F, D]       layers/mlp/gate          [L, D, F]
    ....mlp.up_proj.weight                 [F, D]       layers/mlp/up            [L, D, F]
    ....mlp.down_proj.weight               [D, F]       layers/mlp/down          [L, F, D]
    model.norm.weight                      [D]          final_norm/scale         [D]
    lm_head.weight                         [V, D]       lm_head/kernel           [D, V]  (untied)

No head permutation is needed: our RoPE uses HF's rotate-half layout.
"""
from __future__ import annotations

import dataclasses
import math
from typing import Callable, Optional, Sequence

import numpy as np

from heph_jax.model.config import ModelConfig

# Tensors some HF checkpoints carry that hold no parameters (recomputed buffers).
IGNORED_SUFFIXES = (".rotary_emb.inv_freq",)


@dataclasses.dataclass(frozen=True)
class TensorMapping:
  path: tuple[str, ...]  # key path in the params pytree
  hf_name: str  # "{layer}" stands for the layer index
  hf_groups: tuple[tuple[int, ...], ...]  # each HF axis as the sizes of the axes it merges
  to_ours: tuple[int, ...]  # ours = split(hf).transpose(to_ours)

  @property
  def stacked(self) -> bool:
    return "{layer}" in self.hf_name

  @property
  def hf_shape(self) -> tuple[int, ...]:
    return tuple(math.prod(group) for group in self.hf_groups)

  @property
  def split_shape(self) -> tuple[int, ...]:
    return tuple(size for group in self.hf_groups for size in group)

  @property
  def layer_shape(self) -> tuple[int, ...]:
    """Our shape of one layer's tensor (without the stacked `layers` axis)."""
    split = self.split_shape
    return tuple(split[axis] for axis in self.to_ours)

  def our_shape(self, num_layers: int) -> tuple[int, ...]:
    return ((num_layers,) if self.stacked else ()) + self.layer_shape

  def name(self, layer: Optional[int] = None) -> str:
    return self.hf_name.format(layer=layer) if self.stacked else self.hf_name

  def to_hf_array(self, our_array: np.ndarray) -> np.ndarray:
    back = np.argsort(self.to_ours)
    return np.ascontiguousarray(np.asarray(our_array).transpose(back).reshape(self.hf_shape))

  def read_block(self, read_hf: Callable[[tuple[slice, ...]], np.ndarray],
                 our_index: Sequence[slice]) -> np.ndarray:
    """Our block at `our_index` (unit-step slices of one layer's tensor), reading only the HF rows
    and columns it needs: `read_hf(hf_slices)` returns that box of the HF tensor."""
    split_shape = self.split_shape
    split_index = [slice(None)] * len(split_shape)
    for our_axis, split_axis in enumerate(self.to_ours):
      split_index[split_axis] = our_index[our_axis]
    hf_slices, block_shape, inner_index = [], [], []
    axis = 0
    for group in self.hf_groups:
      # The outermost axis of a merged group selects a contiguous HF range; inner axes are read
      # whole and cut after the reshape (only head_dim could be inner, and it is rarely sharded).
      start, stop, _ = split_index[axis].indices(group[0])
      inner = math.prod(group[1:])
      hf_slices.append(slice(start * inner, stop * inner))
      block_shape += [stop - start] + list(group[1:])
      inner_index += [slice(None)] + [split_index[axis + k] for k in range(1, len(group))]
      axis += len(group)
    block = np.asarray(read_hf(tuple(hf_slices))).reshape(block_shape)
    return block[tuple(inner_index)].transpose(self.to_ours)


def tensor_table(cfg: ModelConfig) -> list[TensorMapping]:
  d, f, v = cfg.hidden_size, cfg.intermediate_size, cfg.vocab_size
  h, kv, hd = cfg.num_attention_heads, cfg.num_key_value_heads, cfg.head_dim
  layer, row = "model.layers.{layer}.", TensorMapping
  table = [
      row(("embed", "embedding"), "model.embed_tokens.weight", ((v,), (d,)), (0, 1)),
      row(("layers", "attn_norm", "scale"), layer + "input_layernorm.weight", ((d,),), (0,)),
      row(("layers", "attn", "q"), layer + "self_attn.q_proj.weight", ((h, hd), (d,)), (2, 0, 1)),
      row(("layers", "attn", "k"), layer + "self_attn.k_proj.weight", ((kv, hd), (d,)), (2, 0, 1)),
      row(("layers", "attn", "v"), layer + "self_attn.v_proj.weight", ((kv, hd), (d,)), (2, 0, 1)),
      row(("layers", "attn", "o"), layer + "self_attn.o_proj.weight", ((d,), (h, hd)), (1, 2, 0)),
      row(("layers", "mlp_norm", "scale"), layer + "post_attention_layernorm.weight", ((d,),), (0,)),
      row(("layers", "mlp", "gate"), layer + "mlp.gate_proj.weight", ((f,), (d,)), (1, 0)),
      row(("layers", "mlp", "up"), layer + "mlp.up_proj.weight", ((f,), (d,)), (1, 0)),
      row(("layers", "mlp", "down"), layer + "mlp.down_proj.weight", ((d,), (f,)), (1, 0)),
      row(("final_norm", "scale"), "model.norm.weight", ((d,),), (0,)),
  ]
  if not cfg.tie_word_embeddings:
    table.append(TensorMapping(("lm_head", "kernel"), "lm_head.weight", ((v,), (d,)), (1, 0)))
  return table


def hf_names_in_order(cfg: ModelConfig) -> list[tuple[TensorMapping, Optional[int]]]:
  """(mapping, layer) for every HF tensor, in the order transformers writes them."""
  table = tensor_table(cfg)
  head = [(m, None) for m in table if not m.stacked and m.path[0] == "embed"]
  layers = [(m, i) for i in range(cfg.num_hidden_layers) for m in table if m.stacked]
  tail = [(m, None) for m in table if not m.stacked and m.path[0] != "embed"]
  return head + layers + tail


def get_path(tree, path: Sequence[str]):
  for key in path:
    tree = tree[key]
  return tree
