"""Splits Python docstrings (Google, NumPy and Sphinx styles) into their parts.

`parse_docstring(text)` returns a `Docstring` with the description (the prose
before the first section), parameter descriptions and types, and the return
description and type. Unknown layouts keep the whole text as the description.
"""
from __future__ import annotations

import dataclasses
import inspect
import re

_GOOGLE_PARAM_HEADERS = ("args", "arguments", "parameters", "params", "keyword args",
                         "keyword arguments", "kwargs", "other parameters")
_GOOGLE_RETURN_HEADERS = ("returns", "return", "yields", "yield")
_ANY_SECTION = _GOOGLE_PARAM_HEADERS + _GOOGLE_RETURN_HEADERS + (
    "raises", "raise", "examples", "example", "notes", "note", "see also", "references",
    "warnings", "warning", "attributes", "methods", "todo", "usage", "warns")

_GOOGLE_HEADER = re.compile(r"^\s*([A-Za-z][A-Za-z ]*):\s*$")
_NUMPY_UNDERLINE = re.compile(r"^\s*-{3,}\s*$")
_GOOGLE_ENTRY = re.compile(r"^(\*{0,2}[A-Za-z_][\w.]*)\s*(?:\(([^)]*)\))?\s*:\s*(.*)$")
_NUMPY_ENTRY = re.compile(r"^(\*{0,2}[A-Za-z_][\w]*(?:\s*,\s*\*{0,2}[A-Za-z_]\w*)*)\s*(?::\s*(.*))?$")
_SPHINX_FIELD = re.compile(r"^:(param|parameter|arg|argument|key|keyword|type|returns?|rtype)"
                           r"(?:\s+([^:]+))?:\s*(.*)$")


@dataclasses.dataclass
class Docstring:
  description: str = ""
  params: dict[str, str] = dataclasses.field(default_factory=dict)
  param_types: dict[str, str] = dataclasses.field(default_factory=dict)
  returns: str = ""
  return_type: str = ""


def _indent(line: str) -> int:
  return len(line) - len(line.lstrip())


def _join_lines(lines: list[str]) -> str:
  return re.sub(r"\s+", " ", " ".join(l.strip() for l in lines)).strip()


def _section_starts(lines: list[str]) -> list[tuple[int, str, str, int]]:
  """(line index, header name, style, first body line) of each recognized section."""
  starts = []
  for i, line in enumerate(lines):
    name = line.strip().lower().rstrip(":")
    if name not in _ANY_SECTION:
      continue
    if i + 1 < len(lines) and _NUMPY_UNDERLINE.match(lines[i + 1]) and not line.strip().endswith(":"):
      starts.append((i, name, "numpy", i + 2))
    elif _GOOGLE_HEADER.match(line):
      starts.append((i, name, "google", i + 1))
  return starts


def _google_entries(body: list[str]) -> tuple[dict, dict]:
  descs, types = {}, {}
  if not body:
    return descs, types
  base = min((_indent(l) for l in body if l.strip()), default=0)
  current = None
  for line in body:
    if not line.strip():
      continue
    if _indent(line) == base:
      m = _GOOGLE_ENTRY.match(line.strip())
      if m:
        current = m.group(1).lstrip("*")
        descs[current] = [m.group(3)]
        if m.group(2):
          types[current] = m.group(2).strip()
        continue
    if current is not None:
      descs[current].append(line)
  return {k: _join_lines(v) for k, v in descs.items()}, types


def _numpy_entries(body: list[str]) -> tuple[dict, dict]:
  descs, types = {}, {}
  base = min((_indent(l) for l in body if l.strip()), default=0)
  current: list[str] = []
  for line in body:
    if not line.strip():
      continue
    if _indent(line) == base:
      m = _NUMPY_ENTRY.match(line.strip())
      if m:
        current = [n.strip().lstrip("*") for n in m.group(1).split(",")]
        for name in current:
          descs[name] = []
          if m.group(2):
            types[name] = m.group(2).strip()
        continue
    for name in current:
      descs[name].append(line)
  return {k: _join_lines(v) for k, v in descs.items()}, types


def _sphinx(lines: list[str], doc: Docstring) -> int | None:
  """Parses :param x: fields; returns the index of the first field line, if any."""
  first = None
  current: tuple[str, str] | None = None
  buffers: dict[tuple[str, str], list[str]] = {}
  for i, line in enumerate(lines):
    m = _SPHINX_FIELD.match(line.strip())
    if m:
      first = i if first is None else first
      kind, arg, text = m.group(1), (m.group(2) or "").strip(), m.group(3)
      if kind in ("param", "parameter", "arg", "argument", "key", "keyword"):
        parts = arg.split()
        name = parts[-1] if parts else ""
        if len(parts) > 1:
          doc.param_types[name] = " ".join(parts[:-1])
        current = ("param", name)
      elif kind == "type":
        doc.param_types[arg] = text
        current = None
        continue
      elif kind == "rtype":
        doc.return_type = text
        current = None
        continue
      else:
        current = ("returns", "")
      buffers[current] = [text]
    elif current is not None and line.strip() and first is not None:
      buffers[current].append(line)
    elif not line.strip():
      current = None
  for (kind, name), text in buffers.items():
    if kind == "param" and name:
      doc.params[name] = _join_lines(text)
    elif kind == "returns":
      doc.returns = _join_lines(text)
  return first


def parse_docstring(text: str | None) -> Docstring:
  doc = Docstring()
  if not text:
    return doc
  lines = inspect.cleandoc(text).splitlines()
  starts = _section_starts(lines)
  sphinx_first = _sphinx(lines, doc)
  cut = min([s[0] for s in starts] + ([sphinx_first] if sphinx_first is not None else []),
            default=len(lines))
  doc.description = "\n".join(lines[:cut]).strip()
  for n, (header, name, style, body_start) in enumerate(starts):
    body_end = starts[n + 1][0] if n + 1 < len(starts) else len(lines)
    if style == "google":  # the section ends where text returns to the header's indent
      for i in range(body_start, body_end):
        if lines[i].strip() and _indent(lines[i]) <= _indent(lines[header]):
          body_end = i
          break
    body = lines[body_start:body_end]
    if name in _GOOGLE_PARAM_HEADERS:
      descs, types = (_google_entries if style == "google" else _numpy_entries)(body)
      for k, v in descs.items():
        doc.params.setdefault(k, v)
      for k, v in types.items():
        doc.param_types.setdefault(k, v)
    elif name in _GOOGLE_RETURN_HEADERS and not doc.returns:
      if style == "numpy":
        nonblank = [l for l in body if l.strip()]
        if nonblank:
          head = nonblank[0].strip()
          m = re.match(r"^(\w+)\s*:\s*(.+)$", head)
          doc.return_type = m.group(2).strip() if m else head
          doc.returns = _join_lines(nonblank[1:])
      else:
        joined = _join_lines(body)
        m = re.match(r"^([\w\[\], .|]+?):\s+(.*)$", joined)
        if m and len(m.group(1)) < 40:
          doc.return_type, doc.returns = m.group(1).strip(), m.group(2).strip()
        else:
          doc.returns = joined
  return doc
