"""Forge JSONL -> Forge JSONL: validates and normalizes existing records."""
from __future__ import annotations

from typing import Iterator

from heph_jax.data.convert.common import Context, input_files


def convert(path: str, *, ctx: Context | None = None, **kwargs) -> Iterator[dict]:
  ctx = ctx or Context(**kwargs)
  for file in input_files(path):
    for line, obj in ctx.documents(file, file):
      yield from ctx.emit(file, line, lambda obj=obj: obj)
