"""BFCL questions with their possible answers, from the bfcl-eval wheel, a directory in its layout
(read through heph_jax/data/convert/bfcl.py's Tree, as the converter does), one
BFCL_v*_<category>.json file (its answers from possible_answer/ beside it, when there), or the
converter's Forge output (a .jsonl of trajectories with meta.ground_truth, e.g. data/eval/bfcl.jsonl)."""
from __future__ import annotations

import dataclasses
import os
import re
from typing import Optional

from heph_jax.data.convert import bfcl
from heph_jax.data.convert.common import Context
from heph_jax.errors import HephError

CATEGORIES = ("simple", "multiple", "parallel", "parallel_multiple", "irrelevance")
# BFCL v4 renamed "simple" to "simple_python" (simple_java / simple_javascript beside it).
_ALIASES = {"simple": ("simple", "simple_python")}
_FILE = re.compile(r"^BFCL_v\d+_(.+)\.json$")


class BfclDataError(HephError):
  pass


@dataclasses.dataclass
class Question:
  id: str
  category: str  # the category asked for ("simple"), which picks the scoring rule
  messages: list  # the first turn's messages [{"role", "content"}]
  functions: list  # BFCL function docs {"name", "description", "parameters"}
  ground_truth: Optional[list]  # [{fn: {param: [allowed]}}], None for irrelevance


def _read_jsonl(data: bytes, name: str) -> list[dict]:
  return [obj for _, obj in Context().documents(data, name)]


def _files(path: str) -> dict[str, tuple[bytes, str]]:
  """relative BFCL data path -> (bytes, name for messages)."""
  m = _FILE.match(os.path.basename(path))
  if os.path.isfile(path) and m and not path.endswith(".whl"):
    out = {os.path.basename(path): (open(path, "rb").read(), path)}
    answer = os.path.join(os.path.dirname(path), "possible_answer", os.path.basename(path))
    if os.path.isfile(answer):
      out[f"possible_answer/{os.path.basename(path)}"] = (open(answer, "rb").read(), answer)
    return out
  try:
    tree = bfcl.Tree(path)
  except HephError as e:
    raise BfclDataError(str(e)) from e
  return {rel: (tree.read(rel), tree.name(rel)) for rel in tree.files
          if _FILE.match(os.path.basename(rel))}


def _check(category):
  if category not in CATEGORIES:
    raise BfclDataError(f"category {category!r}: expected one of {', '.join(CATEGORIES)}")


def _load_forge(path: str, categories, limit) -> list[Question]:
  """Questions from converted Forge records: the turns before the first assistant message."""
  with open(path, "rb") as f:
    records = _read_jsonl(f.read(), path)
  out = []
  for category in categories:
    _check(category)
    names = {f"bfcl:{n}" for n in _ALIASES.get(category, (category,))}
    picked = [r for r in records if r.get("type") == "trajectory" and r.get("source") in names][:limit]
    if not picked:
      raise BfclDataError(f"{path}: no Forge trajectory with source {' or '.join(sorted(names))}")
    for r in picked:
      messages = r.get("messages") or []
      first = next((i for i, m in enumerate(messages) if m.get("role") == "assistant"), len(messages))
      out.append(Question(r["id"].removeprefix("bfcl:"), category, messages[:first], list(r.get("tools") or []),
                          (r.get("meta") or {}).get("ground_truth")))
  return out


def load(path: str, categories=CATEGORIES, limit: Optional[int] = None) -> list[Question]:
  """The first `limit` questions of each category, in file order."""
  if os.path.isfile(path) and path.endswith(".jsonl"):
    return _load_forge(path, categories, limit)
  files = _files(path)
  out = []
  for category in categories:
    _check(category)
    names = _ALIASES.get(category, (category,))
    rel = next((r for r in sorted(files) if "/" not in r and _FILE.match(r).group(1) in names), None)
    if rel is None:
      raise BfclDataError(f"{path}: no BFCL_v*_{names[-1]}.json question file")
    data, name = files[rel]
    answers = {}
    if f"possible_answer/{rel}" in files:
      adata, aname = files[f"possible_answer/{rel}"]
      answers = {a.get("id"): a.get("ground_truth") for a in _read_jsonl(adata, aname)}
    for obj in _read_jsonl(data, name)[:limit]:
      if category != "irrelevance" and obj.get("id") not in answers:
        raise BfclDataError(f"{name}: question {obj.get('id')!r} has no possible answer")
      question = obj.get("question") or [[]]
      out.append(Question(obj["id"], category, list(question[0]), list(obj.get("function") or []),
                          answers.get(obj["id"])))
  return out
