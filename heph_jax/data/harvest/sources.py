"""Code and text records from what is installed on the machine.

code: the standard library's own .py sources, cut at top-level statement
      boundaries into chunks of at most `max_chars` characters.
text: documentation prose - Python's pydoc topics (pydoc_data.topics), installed
      packages' long descriptions (their README in the wheel metadata) and long
      module docstrings of the standard library - split at paragraph boundaries.
"""
from __future__ import annotations

import ast
import hashlib
import importlib
import importlib.metadata
import os
import random
import re
import sys
import sysconfig
from typing import Iterator

_STDLIB_SKIP_DIRS = {"test", "tests", "idlelib", "tkinter", "turtledemo", "lib2to3", "ensurepip",
                     "site-packages", "dist-packages", "__pycache__", "config-3", "venv", "pydoc_data"}
_STDLIB_LICENSE = "PSF-2.0"


def stdlib_dir() -> str:
  return sysconfig.get_paths()["stdlib"]


def stdlib_files(root: str | None = None) -> list[str]:
  """Relative paths of standard-library .py files, sorted (tests and GUIs left out)."""
  root = root or stdlib_dir()
  out = []
  for dirpath, dirnames, filenames in os.walk(root):
    dirnames[:] = sorted(d for d in dirnames
                         if d not in _STDLIB_SKIP_DIRS and not d.startswith(("config-", "test")))
    for name in sorted(filenames):
      if name.endswith(".py") and not name.startswith("test_"):
        out.append(os.path.relpath(os.path.join(dirpath, name), root))
  return sorted(out)


def chunk_source(source: str, max_chars: int) -> list[tuple[int, int, str]]:
  """(first line, last line, text) chunks split between top-level statements.

  A single statement longer than max_chars is cut at line boundaries.
  """
  lines = source.splitlines(keepends=True)
  try:
    tree = ast.parse(source)
    # decorators start the statement: use the smallest line of the node's decorators
    starts = sorted({min([n.lineno] + [d.lineno for d in getattr(n, "decorator_list", [])])
                     for n in tree.body})
  except (SyntaxError, ValueError):
    starts = []
  bounds = [0] + [s - 1 for s in starts if s > 1] + [len(lines)]
  bounds = sorted(set(bounds))
  units = []  # (start line idx, end line idx) of each statement (leading comments included)
  for a, b in zip(bounds, bounds[1:]):
    units.append((a, b))
  chunks: list[tuple[int, int]] = []
  cur_a, cur_len = None, 0
  for a, b in units:
    size = sum(len(l) for l in lines[a:b])
    if size > max_chars:
      if cur_a is not None:
        chunks.append((cur_a, a))
        cur_a, cur_len = None, 0
      piece_a, piece_len = a, 0
      for i in range(a, b):
        if piece_len + len(lines[i]) > max_chars and i > piece_a:
          chunks.append((piece_a, i))
          piece_a, piece_len = i, 0
        piece_len += len(lines[i])
      chunks.append((piece_a, b))
      continue
    if cur_a is not None and cur_len + size > max_chars:
      chunks.append((cur_a, a))
      cur_a, cur_len = None, 0
    if cur_a is None:
      cur_a = a
    cur_len += size
  if cur_a is not None:
    chunks.append((cur_a, len(lines)))
  out = []
  for a, b in chunks:
    text = "".join(lines[a:b])
    if text.strip():
      out.append((a + 1, b, text))
  return out


def _python_version() -> str:
  return ".".join(map(str, sys.version_info[:3]))


def harvest_code(rng: random.Random, limit: int, max_chars: int,
                 chunks_per_file: int = 2, root: str | None = None) -> Iterator[dict]:
  """Code records from a seeded sample of standard-library files."""
  root = root or stdlib_dir()
  files = stdlib_files(root)
  rng.shuffle(files)
  count = 0
  for rel in files:
    if count >= limit:
      return
    try:
      with open(os.path.join(root, rel), encoding="utf-8") as f:
        source = f.read()
    except (UnicodeDecodeError, OSError):
      continue
    chunks = [c for c in chunk_source(source, max_chars) if len(c[2].strip()) >= 200]
    if not chunks:
      continue
    start = rng.randrange(len(chunks))
    for first, last, text in chunks[start:start + chunks_per_file]:
      yield {"type": "code", "id": f"stdlib:{rel}:{first}-{last}", "source": "python-stdlib",
             "license": _STDLIB_LICENSE, "content": text, "language": "python",
             "path": f"Lib/{rel}", "meta": {"python": _python_version(), "lines": [first, last]}}
      count += 1
      if count >= limit:
        return


def split_paragraphs(text: str, max_chars: int) -> list[str]:
  """Groups paragraphs into chunks of at most max_chars (a longer paragraph stands alone, cut by lines)."""
  paras = [p for p in re.split(r"\n\s*\n", text.strip()) if p.strip()]
  chunks, cur = [], ""
  for p in paras:
    while len(p) > max_chars:  # cut an overlong paragraph at a line break when possible
      cut = p.rfind("\n", 0, max_chars)
      cut = cut if cut > max_chars // 4 else max_chars
      if cur:
        chunks.append(cur)
        cur = ""
      chunks.append(p[:cut].rstrip())
      p = p[cut:].lstrip("\n")
    if cur and len(cur) + 2 + len(p) > max_chars:
      chunks.append(cur)
      cur = ""
    cur = f"{cur}\n\n{p}" if cur else p
  if cur:
    chunks.append(cur)
  return chunks


def _pydoc_topics() -> Iterator[tuple[str, str, str, str | None]]:
  from pydoc_data import topics  # standard library: the text of `help("TOPIC")`
  for name in sorted(topics.topics):
    yield f"pydoc:{name}", f"Python reference: {name}", topics.topics[name], _STDLIB_LICENSE


def _package_descriptions() -> Iterator[tuple[str, str, str, str | None]]:
  seen = set()
  dists = sorted(importlib.metadata.distributions(), key=lambda d: (d.metadata["Name"] or "").lower())
  for dist in dists:
    name = dist.metadata["Name"]
    if not name or name.lower() in seen:
      continue
    seen.add(name.lower())
    body = dist.metadata.get_payload() or dist.metadata.get("Description") or ""
    if len(body.strip()) < 300:
      continue
    lic = (dist.metadata.get("License-Expression") or dist.metadata.get("License") or "").strip()
    lic = lic if lic and len(lic) <= 40 and "\n" not in lic else None
    yield f"pkg:{name}", f"{name} {dist.version}", body, lic


def _module_docstrings(modules: tuple[str, ...]) -> Iterator[tuple[str, str, str, str | None]]:
  for name in modules:
    try:
      module = importlib.import_module(name)
    except Exception:
      continue
    doc = module.__doc__ or ""
    if len(doc.strip()) >= 600:
      yield f"moddoc:{name}", f"Module {name}", doc.strip(), _STDLIB_LICENSE


def harvest_text(rng: random.Random, limit: int, max_chars: int,
                 modules: tuple[str, ...] = ()) -> Iterator[dict]:
  """Text records: all chunks from all sources, then a seeded sample of `limit`."""
  chunks = []
  sources = ((_pydoc_topics(), "python-docs:pydoc_topics"),
             (_package_descriptions(), "package-metadata:long_description"),
             (_module_docstrings(modules), "python-docs:module_docstrings"))
  for docs, source in sources:
    for doc_id, title, body, lic in docs:
      for i, chunk in enumerate(split_paragraphs(body, max_chars)):
        if len(chunk) >= 200:
          chunks.append((doc_id, i, title, chunk, lic, source))
  picked = sorted(rng.sample(range(len(chunks)), min(limit, len(chunks))))
  for k in picked:
    doc_id, i, title, chunk, lic, source = chunks[k]
    rec = {"type": "text", "id": f"{doc_id}#{i}", "source": source, "title": title,
           "content": chunk, "meta": {"sha1": hashlib.sha1(chunk.encode()).hexdigest()[:12]}}
    if lic:
      rec["license"] = lic
    yield rec
