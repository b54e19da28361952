"""Converters from public tool-use data layouts to Forge records.

Each module has `convert(path, *, ctx=None, on_error=..., ...) -> Iterator[dict]`
yielding validated Forge records; problems follow the Context's on_error policy.
"""
from __future__ import annotations

import importlib
from typing import Callable

from heph_jax.data.forge.schema import ForgeDataError

# format name -> (module, whether it takes record_type/split options)
FORMATS = {
    "bfcl": ("heph_jax.data.convert.bfcl", False),
    "openai": ("heph_jax.data.convert.openai_chat", True),
    "toolbench": ("heph_jax.data.convert.toolbench", True),
    "xlam": ("heph_jax.data.convert.xlam", True),
    "forge": ("heph_jax.data.convert.forge_jsonl", False),
}


def get_converter(name: str) -> tuple[Callable, bool]:
  """(convert function, takes record_type/split) for a format name."""
  if name not in FORMATS:
    raise ForgeDataError(f"--format: unknown format {name!r} (known: {', '.join(sorted(FORMATS))})")
  module, options = FORMATS[name]
  return importlib.import_module(module).convert, options
