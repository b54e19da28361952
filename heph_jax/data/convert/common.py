"""Shared plumbing of the converters: error policy, field access, input files."""
from __future__ import annotations

import dataclasses
import os
from typing import Any, Callable, Iterable, Iterator

from heph_jax.data.forge.schema import ForgeDataError, type_name, validate
from heph_jax.data.forge.io import (DEFAULT_MAX_RECORD_BYTES, ReadStats, check_on_error,
                                 iter_json_documents, problem)

_JSON_SUFFIXES = (".json", ".jsonl", ".ndjson")
@dataclasses.dataclass
class Context:
  """Error policy and counters of one conversion run."""
  on_error: str = "raise"
  max_record_bytes: int = DEFAULT_MAX_RECORD_BYTES
  stats: ReadStats = dataclasses.field(default_factory=ReadStats)
  seen_ids: dict = dataclasses.field(default_factory=dict)

  def __post_init__(self):
    check_on_error(self.on_error)

  def problem(self, name: str, line: int, reason: str):
    problem(self.on_error, self.stats, name, line, reason)

  def documents(self, source, name: str) -> Iterator[tuple[int, dict]]:
    """(line, object) of a JSON / JSON Lines file or bytes, under this policy."""
    yield from iter_json_documents(source, name=name, on_error=self.on_error,
                                   max_record_bytes=self.max_record_bytes, stats=self.stats)

  def emit(self, name: str, line: int, build: Callable[[], Any]) -> list[dict]:
    """Runs `build` (one record, a list, or None) and validates; problems go through policy."""
    try:
      built = build()
      records = [] if built is None else built if isinstance(built, list) else [built]
      out = []
      for rec in records:
        rec = validate(rec)
        if rec["id"] in self.seen_ids:
          raise ForgeDataError(f"duplicate id {rec['id']!r} (first made from {self.seen_ids[rec['id']]})")
        out.append(rec)
    except ForgeDataError as e:
      self.problem(name, line, str(e))
      return []
    except (KeyError, TypeError, ValueError, AttributeError, IndexError) as e:
      self.problem(name, line, f"unexpected layout ({type(e).__name__}: {e})")
      return []
    for rec in out:
      self.seen_ids[rec["id"]] = f"{name}:{line}"
      self.stats.records += 1
    return out


def need(obj: Any, key: str, kind: type | tuple, where: str = "", what: str | None = None,
         optional: bool = False, default: Any = None) -> Any:
  """obj[key] checked to be of `kind`; ForgeDataError names the field otherwise."""
  label = f"{where}.{key}" if where else key
  if not isinstance(obj, dict):
    raise ForgeDataError(f"{where or 'record'}: expected an object, got {type_name(obj)}")
  if key not in obj or obj[key] is None:
    if optional:
      return default
    raise ForgeDataError(f"{label}: missing required field")
  value = obj[key]
  if not isinstance(value, kind) or (isinstance(value, bool) and kind in (int, float)):
    kinds = kind if isinstance(kind, tuple) else (kind,)
    names = what or " or ".join(type_name(k(), article=True) for k in kinds)
    raise ForgeDataError(f"{label}: expected {names}, got {type_name(value)}")
  return value


def input_files(path: str, suffixes: Iterable[str] = _JSON_SUFFIXES) -> list[str]:
  """The file itself, or the sorted JSON files under a directory."""
  if os.path.isdir(path):
    out = []
    for dirpath, dirnames, filenames in os.walk(path):
      dirnames.sort()
      out.extend(os.path.join(dirpath, f) for f in sorted(filenames) if f.endswith(tuple(suffixes)))
    if not out:
      raise ForgeDataError(f"{path}:0: no {', '.join(suffixes)} files in this directory")
    return out
  if not os.path.exists(path):
    raise ForgeDataError(f"{path}:0: file not found")
  return [path]


def slug(text: str) -> str:
  return "".join(ch if ch.isalnum() or ch in "._-" else "_" for ch in text)
