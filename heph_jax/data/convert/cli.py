"""Converts public tool-use data to Forge JSONL.

    python -m heph_jax.data.convert --format bfcl --input bfcl_eval-2026.3.23-py3-none-any.whl \
        --output bfcl.jsonl [--on_error skip] [--limit_per_source 20]

Formats: bfcl (wheel or directory; records are split "eval"), openai (chat
transcripts and tool schemas), toolbench, xlam (xLAM-60k and APIGen-MT), forge
(re-validate Forge JSONL). --input may be a file or a directory of .json/.jsonl.
With --on_error=raise (default) the first bad record stops the run with
"file:line: reason"; with --on_error=skip bad records are counted and reported.
Prints a JSON summary; exit status 2 on an error.
"""
from __future__ import annotations

import collections
import json
import re

from absl import flags

from heph_jax.data.convert import FORMATS, get_converter
from heph_jax.data.convert.common import Context
from heph_jax.data.forge.schema import SPLITS, ForgeDataError
from heph_jax import cli
from heph_jax.data.forge.io import DEFAULT_MAX_RECORD_BYTES, ReadStats, write_records

PROG = "heph_jax.data.convert"


def _limited(records, per_source: int | None, counts: collections.Counter,
             keep: str | None = None, drop: str | None = None):
  keep_re = re.compile(keep) if keep else None
  drop_re = re.compile(drop) if drop else None
  for rec in records:
    if keep_re and not keep_re.search(rec["source"]):
      continue
    if drop_re and drop_re.search(rec["source"]):
      continue
    if per_source is not None and counts[rec["source"]] >= per_source:
      continue
    counts[rec["source"]] += 1
    yield rec


def run(fmt: str, input_path: str, output: str, *, on_error: str = "raise",
        max_record_bytes: int = DEFAULT_MAX_RECORD_BYTES, record_type: str = "trajectory",
        split: str = "train", limit_per_source: int | None = None,
        source_regex: str | None = None, exclude_source_regex: str | None = None) -> dict:
  """Converts and writes; returns the summary. Raises ForgeDataError on bad input."""
  convert, takes_options = get_converter(fmt)
  if record_type not in ("trajectory", "ift"):
    raise ForgeDataError(f"--record_type: expected trajectory or ift, got {record_type!r}")
  if split not in SPLITS:
    raise ForgeDataError(f"--split: expected one of {', '.join(SPLITS)}, got {split!r}")
  ctx = Context(on_error=on_error, max_record_bytes=max_record_bytes, stats=ReadStats(path=input_path))
  options = {"record_type": record_type, "split": split} if takes_options else {}
  counts: collections.Counter = collections.Counter()
  for flag, pattern in (("--source_regex", source_regex), ("--exclude_source_regex", exclude_source_regex)):
    if pattern:
      try:
        re.compile(pattern)
      except re.error as e:
        raise ForgeDataError(f"{flag}: invalid regular expression ({e})") from None
  records = convert(input_path, ctx=ctx, **options)
  written = write_records(output, _limited(records, limit_per_source, counts, source_regex,
                                           exclude_source_regex), validator=None)
  return {"format": fmt, "input": input_path, "output": output, "records": written,
          "converted": ctx.stats.records, "skipped": ctx.stats.skipped,
          "errors": ctx.stats.errors[:20], "by_source": dict(sorted(counts.items()))}


def define_flags(values, argv):
  del argv
  flags.DEFINE_string("format", None, f"one of: {', '.join(sorted(FORMATS))}", flag_values=values)
  flags.DEFINE_string("input", None, "input file or directory", flag_values=values)
  flags.DEFINE_string("output", None, "output Forge JSONL file", flag_values=values)
  flags.DEFINE_string("on_error", "raise", "raise (default) or skip", flag_values=values)
  flags.DEFINE_integer("max_record_bytes", DEFAULT_MAX_RECORD_BYTES,
                       "longest accepted input record (a JSON line or array element)", flag_values=values)
  flags.DEFINE_string("record_type", "trajectory", "trajectory or ift (chat formats)", flag_values=values)
  flags.DEFINE_string("split", "train", "train or eval (bfcl is always eval)", flag_values=values)
  flags.DEFINE_integer("limit_per_source", None,
                       "keep at most N records per source (e.g. per BFCL category)", flag_values=values)
  flags.DEFINE_string("source_regex", None, "keep only records whose source matches", flag_values=values)
  flags.DEFINE_string("exclude_source_regex", None, "drop records whose source matches", flag_values=values)
  for name in ("format", "input", "output"):
    flags.mark_flag_as_required(name, flag_values=values)


def _convert(args, positional) -> int:
  del positional
  if args.on_error not in ("raise", "skip"):
    raise ForgeDataError(f"--on_error: expected raise or skip, got {args.on_error!r}")
  summary = run(args.format, args.input, args.output, on_error=args.on_error,
                max_record_bytes=args.max_record_bytes, record_type=args.record_type,
                split=args.split, limit_per_source=args.limit_per_source,
                source_regex=args.source_regex, exclude_source_regex=args.exclude_source_regex)
  print(json.dumps(summary, indent=2, ensure_ascii=False))
  return 0


def main(argv: list[str] | None = None) -> int:
  return cli.run(PROG, define_flags, _convert, argv)
