"""Drops training records that share a long n-gram with named eval sets.

    python -m heph_jax.data.decontaminate \\
        --train data/forge/tool_doc.jsonl data/forge/trajectory.jsonl \\
        --eval bfcl=data/eval/bfcl.jsonl --eval bfcl_full=/tmp/bfcl/bfcl_eval-2026.3.23-py3-none-any.whl \\
        --output_dir /tmp/clean [--ngram 13] [--report report.json]

Text is compared as lowercased word tokens (regex \\w+) of each natural-language
field separately (message contents, descriptions, tool-call argument strings, code
and text bodies), never across fields and never over template or JSON syntax, so
shared boilerplate cannot cause a match. An eval text shorter than --ngram tokens
but at least --min_tokens long counts as one n-gram of its own length. Records
whose split is "eval" are always dropped from training files. An eval set is a
Forge JSONL file, or a BFCL wheel / directory (converted on the fly).
"""
from __future__ import annotations

import dataclasses
import json
import os
import re
from typing import Iterable, Iterator

from absl import flags

from heph_jax.data.forge.schema import ForgeDataError
from heph_jax import cli
from heph_jax.data.forge.io import ReadStats, iter_records, write_records

DEFAULT_NGRAM = 13
DEFAULT_MIN_TOKENS = 8
_TOKEN = re.compile(r"\w+")


def tokens(text: str) -> list[str]:
  return _TOKEN.findall(text.lower())


def _strings_in(value) -> Iterator[str]:
  if isinstance(value, str):
    yield value
  elif isinstance(value, dict):
    for v in value.values():
      yield from _strings_in(v)
  elif isinstance(value, list):
    for v in value:
      yield from _strings_in(v)


def _schema_descriptions(schema) -> Iterator[str]:
  if isinstance(schema, dict):
    if isinstance(schema.get("description"), str):
      yield schema["description"]
    for key in ("properties",):
      for sub in (schema.get(key) or {}).values():
        yield from _schema_descriptions(sub)
    if isinstance(schema.get("items"), dict):
      yield from _schema_descriptions(schema["items"])


def content_texts(record: dict) -> list[str]:
  """The natural-language fields of a record, one string per field."""
  kind = record.get("type")
  out: list[str] = []
  if kind == "tool_doc":
    out.append(record.get("description", ""))
    out.extend(_schema_descriptions(record.get("parameters")))
    out.extend(_schema_descriptions(record.get("returns")))
  elif kind in ("trajectory", "ift"):
    for tool in record.get("tools", []):
      out.append(tool.get("description", ""))
      out.extend(_schema_descriptions(tool.get("parameters")))
    for msg in record.get("messages", []):
      out.append(msg.get("content", ""))
      for call in msg.get("tool_calls", []):
        out.extend(_strings_in(call.get("arguments")))
  else:
    out.append(record.get("content", ""))
  return [t for t in out if t and t.strip()]


@dataclasses.dataclass
class NgramIndex:
  """Hashed n-grams of one eval set (plus whole short texts of their own length)."""
  name: str
  n: int
  min_tokens: int
  grams: set = dataclasses.field(default_factory=set)
  lengths: set = dataclasses.field(default_factory=set)
  texts: int = 0

  def add_text(self, text: str):
    toks = tokens(text)
    if len(toks) >= self.n:
      self.lengths.add(self.n)
      for i in range(len(toks) - self.n + 1):
        self.grams.add(hash(tuple(toks[i:i + self.n])))
    elif len(toks) >= self.min_tokens:
      self.lengths.add(len(toks))
      self.grams.add(hash(tuple(toks)))
    self.texts += 1

  def add_record(self, record: dict):
    for text in content_texts(record):
      self.add_text(text)

  def first_match(self, text: str) -> str | None:
    toks = tokens(text)
    for length in sorted(self.lengths, reverse=True):
      for i in range(len(toks) - length + 1):
        if hash(tuple(toks[i:i + length])) in self.grams:
          return " ".join(toks[i:i + length])
    return None

  def match_record(self, record: dict) -> str | None:
    for text in content_texts(record):
      hit = self.first_match(text)
      if hit is not None:
        return hit
    return None


def eval_records(path: str, on_error: str = "raise") -> Iterator[dict]:
  """Records of an eval set: Forge JSONL, or a BFCL wheel / directory."""
  if path.endswith(".whl") or os.path.isdir(path):
    from heph_jax.data.convert import bfcl  # only needed for raw BFCL input
    yield from bfcl.convert(path, on_error=on_error)
  else:
    yield from iter_records(path, on_error=on_error)


def build_index(name: str, path: str, n: int = DEFAULT_NGRAM,
                min_tokens: int = DEFAULT_MIN_TOKENS, on_error: str = "raise") -> NgramIndex:
  index = NgramIndex(name=name, n=n, min_tokens=min_tokens)
  for rec in eval_records(path, on_error=on_error):
    index.add_record(rec)
  return index


@dataclasses.dataclass
class FileReport:
  path: str
  kept: int = 0
  dropped_eval_split: int = 0
  dropped_by_eval_set: dict = dataclasses.field(default_factory=dict)
  examples: list = dataclasses.field(default_factory=list)
  skipped_bad: int = 0

  @property
  def dropped(self) -> int:
    return self.dropped_eval_split + sum(self.dropped_by_eval_set.values())


def filter_records(records: Iterable[dict], indexes: list[NgramIndex], report: FileReport,
                   max_examples: int = 5) -> Iterator[dict]:
  """Yields the records that match no eval set; counts the rest in `report`."""
  for rec in records:
    if rec.get("split") == "eval":
      report.dropped_eval_split += 1
      continue
    hit_name = None
    for index in indexes:
      hit = index.match_record(rec)
      if hit is not None:
        hit_name = index.name
        report.dropped_by_eval_set[index.name] = report.dropped_by_eval_set.get(index.name, 0) + 1
        if len(report.examples) < max_examples:
          report.examples.append({"id": rec.get("id"), "eval_set": index.name, "ngram": hit})
        break
    if hit_name is None:
      report.kept += 1
      yield rec


def decontaminate_file(path: str, output: str, indexes: list[NgramIndex],
                       on_error: str = "raise") -> FileReport:
  report = FileReport(path=path)
  stats = ReadStats(path=path)
  records = iter_records(path, on_error=on_error, stats=stats)
  write_records(output, filter_records(records, indexes, report))
  report.skipped_bad = stats.skipped
  return report


def _parse_eval(spec: str) -> tuple[str, str]:
  if "=" not in spec:
    raise ForgeDataError(f"--eval: expected NAME=PATH, got {spec!r}")
  name, path = spec.split("=", 1)
  if not name or not path:
    raise ForgeDataError(f"--eval: expected NAME=PATH, got {spec!r}")
  return name, path


def define_flags(values, argv):
  del argv
  flags.DEFINE_multi_string("train", None, "Forge JSONL training files or globs (repeatable)",
                            flag_values=values)
  flags.DEFINE_multi_string("eval", None, "NAME=PATH: eval set (Forge JSONL, BFCL wheel or BFCL "
                            "directory); repeatable", flag_values=values)
  flags.DEFINE_string("output_dir", None, "where cleaned files go (same names)", flag_values=values)
  flags.DEFINE_integer("ngram", DEFAULT_NGRAM, "n-gram length", flag_values=values)
  flags.DEFINE_integer("min_tokens", DEFAULT_MIN_TOKENS, "shortest eval text indexed, in tokens",
                       flag_values=values)
  flags.DEFINE_enum("on_error", "raise", ["raise", "skip"], "bad input lines: stop or skip and count",
                    flag_values=values)
  flags.DEFINE_string("report", None, "also write the JSON report here", flag_values=values)
  for name in ("train", "eval", "output_dir"):
    flags.mark_flag_as_required(name, flag_values=values)


def _expand(patterns: list[str]) -> list[str]:
  """Each --train value as a file, or the files its glob matches (a bucket path too)."""
  import tensorflow as tf  # pylint: disable=g-import-not-at-top
  paths = []
  for pattern in patterns:
    matched = sorted(tf.io.gfile.glob(pattern)) if any(c in pattern for c in "*?[") else [pattern]
    if not matched:
      raise ForgeDataError(f"--train {pattern!r}: no file matches")
    paths.extend(matched)
  return paths


def _decontaminate(args, positional) -> int:
  if args.ngram < 1 or args.min_tokens < 1:
    raise ForgeDataError("--ngram and --min_tokens must be positive")
  indexes = [build_index(name, path, args.ngram, args.min_tokens, args.on_error)
             for name, path in map(_parse_eval, args.eval)]
  reports = []
  for path in _expand(args.train + positional):  # positional: a shell-expanded glob's other files
    out = os.path.join(args.output_dir, os.path.basename(path))
    if os.path.abspath(out) == os.path.abspath(path):
      raise ForgeDataError(f"--output_dir would overwrite the input {path}")
    reports.append(decontaminate_file(path, out, indexes, args.on_error))
  summary = {
      "ngram": args.ngram,
      "eval_sets": {i.name: {"texts": i.texts, "ngrams": len(i.grams)} for i in indexes},
      "files": [dict(dataclasses.asdict(r), dropped=r.dropped) for r in reports],
  }
  text = json.dumps(summary, indent=2, ensure_ascii=False)
  print(text)
  if args.report:
    with open(args.report, "w", encoding="utf-8") as f:
      f.write(text + "\n")
  return 0


def main(argv: list[str] | None = None) -> int:
  return cli.run("heph_jax.data.decontaminate", define_flags, _decontaminate, argv)
