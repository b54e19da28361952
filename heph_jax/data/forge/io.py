"""Robust JSON Lines reading and writing with precise errors.

Each problem is reported as "path:line: reason" (line 0 = the file as a whole).
With on_error="raise" (default) the first problem raises ForgeDataError; with
on_error="skip" the bad line is counted in `ReadStats` and reading goes on.

Problems detected: missing file, empty file, non-UTF-8 bytes, oversize lines,
malformed JSON, a JSON value that is not an object, and (in `read_records`)
schema violations and duplicate ids. Blank lines are ignored.
"""
from __future__ import annotations

import contextlib
import dataclasses
import json
import os
from typing import Any, Callable, Iterable, Iterator

from etils import epath

from heph_jax.data.forge.schema import ForgeDataError, type_name, validate

ON_ERROR_CHOICES = ("raise", "skip")
DEFAULT_MAX_RECORD_BYTES = 4 * 1024 * 1024


@dataclasses.dataclass
class ReadStats:
  """What a read saw: records kept, lines skipped and why (first few reasons kept)."""
  path: str = ""
  records: int = 0
  skipped: int = 0
  errors: list[str] = dataclasses.field(default_factory=list)
  max_errors_kept: int = 100

  def add_error(self, message: str):
    self.skipped += 1
    if len(self.errors) < self.max_errors_kept:
      self.errors.append(message)

  def summary(self) -> str:
    return f"{self.path}: {self.records} records, {self.skipped} skipped"


@dataclasses.dataclass
class ReadResult:
  records: list[dict]
  stats: ReadStats


def problem(on_error: str, stats: ReadStats, where: str, line: int, reason: str) -> None:
  """The one error policy for bad input: raise "where:line: reason", or count it in `stats`."""
  message = f"{where}:{line}: {reason}"
  if on_error == "raise":
    raise ForgeDataError(message)
  stats.add_error(message)


def parse_json_object(text: str, where: str, error: type[Exception] = ForgeDataError) -> dict:
  """The JSON object `text` holds; `error` says where and what is wrong."""
  try:
    value = json.loads(text)
  except json.JSONDecodeError as e:
    raise error(f"{where}: not valid JSON (line {e.lineno}, column {e.colno}: {e.msg})") from None
  if not isinstance(value, dict):
    raise error(f"{where}: expected a JSON object, got {type_name(value, article=True)}")
  return value


def read_json_object(path: str, error: type[Exception] = ForgeDataError) -> dict:
  """The JSON object in a file (a config, a rates file); errors name the path."""
  return parse_json_object(epath.Path(path).read_text(encoding="utf-8"), path, error)


def check_on_error(on_error: str) -> str:
  if on_error not in ON_ERROR_CHOICES:
    raise ForgeDataError(f"on_error: expected one of {', '.join(ON_ERROR_CHOICES)}, got {on_error!r}")
  return on_error


@contextlib.contextmanager
def _readable(name: str, expected: str):
  """OS errors of reading `name` as ForgeDataError("name:0: why")."""
  try:
    yield
  except FileNotFoundError:
    raise ForgeDataError(f"{name}:0: file not found") from None
  except IsADirectoryError:
    raise ForgeDataError(f"{name}:0: is a directory, expected {expected}") from None
  except OSError as e:
    raise ForgeDataError(f"{name}:0: cannot read ({e.strerror})") from None


def _lines_from(source: str | os.PathLike | bytes, name: str) -> Iterator[bytes]:
  if isinstance(source, bytes):
    yield from source.splitlines()
    return
  with _readable(name, "a JSON Lines file"):
    with epath.Path(source).open("rb") as f:
      for line in f:
        yield line.rstrip(b"\r\n")


def iter_json_objects(source: str | os.PathLike | bytes, *, name: str | None = None,
                      on_error: str = "raise",
                      max_record_bytes: int = DEFAULT_MAX_RECORD_BYTES,
                      stats: ReadStats | None = None,
                      allow_empty: bool = False) -> Iterator[tuple[int, dict]]:
  """Yields (line_number, object) for each JSON object line of a file or bytes.

  `name` is what errors call the source (defaults to the path); `allow_empty` accepts a file
  with no lines (a log that has none yet).
  """
  check_on_error(on_error)
  name = name or (str(source) if not isinstance(source, bytes) else "<bytes>")
  stats = stats if stats is not None else ReadStats(path=name)
  stats.path = stats.path or name

  def bad(line_no: int, reason: str):
    problem(on_error, stats, name, line_no, reason)

  seen_content = False
  for line_no, raw in enumerate(_lines_from(source, name), start=1):
    if not raw.strip():
      continue
    seen_content = True
    if len(raw) > max_record_bytes:
      bad(line_no, f"record is {len(raw)} bytes, over the limit of {max_record_bytes} "
                       "(max_record_bytes)")
      continue
    try:
      text = raw.decode("utf-8")
    except UnicodeDecodeError as e:
      bad(line_no, f"not valid UTF-8 (byte 0x{raw[e.start]:02x} at offset {e.start})")
      continue
    try:
      obj = json.loads(text)
    except json.JSONDecodeError as e:
      bad(line_no, f"malformed JSON: {e.msg} at column {e.colno}")
      continue
    except RecursionError:
      bad(line_no, "malformed JSON: nested too deeply")
      continue
    if not isinstance(obj, dict):
      bad(line_no, f"expected a JSON object per line, got {type_name(obj, article=True)}")
      continue
    yield line_no, obj
  if not seen_content and not allow_empty:
    bad(0, "file is empty (no JSON lines)")


def _read_bytes(source: str | os.PathLike | bytes, name: str) -> bytes:
  if isinstance(source, bytes):
    return source
  with _readable(name, "a JSON or JSON Lines file"):
    with epath.Path(source).open("rb") as f:
      return f.read()


def _has_bad_bytes(text: str) -> bool:
  # surrogateescape maps each undecodable byte to U+DC80..U+DCFF
  return any("\udc80" <= ch <= "\udcff" for ch in text)


def iter_json_documents(source: str | os.PathLike | bytes, *, name: str | None = None,
                        on_error: str = "raise",
                        max_record_bytes: int = DEFAULT_MAX_RECORD_BYTES,
                        stats: ReadStats | None = None) -> Iterator[tuple[int, dict]]:
  """Like iter_json_objects, but also reads a JSON array of objects or one JSON object.

  Public datasets ship either way (ToolBench and xLAM as one JSON array, BFCL as
  JSON Lines named .json). Line numbers are where each element starts.
  """
  check_on_error(on_error)
  name = name or (str(source) if not isinstance(source, bytes) else "<bytes>")
  data = _read_bytes(source, name)
  head = data.lstrip()[:1]
  if head != b"[":
    first_line = data.lstrip().split(b"\n", 1)[0].strip()
    if head == b"{" and not (first_line.endswith(b"}") and _is_json(first_line)):
      # A pretty-printed single object: JSON Lines would fail on line 1.
      yield from _iter_array(data, name, on_error, max_record_bytes, stats, single=True)
      return
    yield from iter_json_objects(data, name=name, on_error=on_error,
                                 max_record_bytes=max_record_bytes, stats=stats)
    return
  yield from _iter_array(data, name, on_error, max_record_bytes, stats)


def _is_json(line: bytes) -> bool:
  try:
    json.loads(line)
    return True
  except (ValueError, RecursionError):
    return False


def _iter_array(data: bytes, name: str, on_error: str, max_record_bytes: int,
                stats: ReadStats | None, single: bool = False) -> Iterator[tuple[int, dict]]:
  stats = stats if stats is not None else ReadStats(path=name)
  text = data.decode("utf-8", errors="surrogateescape")
  decoder = json.JSONDecoder()

  def line_of(pos: int) -> int:
    return text.count("\n", 0, pos) + 1

  def bad(line_no: int, reason: str):
    problem(on_error, stats, name, line_no, reason)

  pos = len(text) - len(text.lstrip())
  if not single:
    pos += 1  # past "["
  count = 0
  while True:
    while pos < len(text) and text[pos] in " \t\r\n":
      pos += 1
    if not single and pos < len(text) and text[pos] == "]":
      break
    if pos >= len(text):
      if not single:
        bad(line_of(pos), "malformed JSON: the array is not closed with ']'")
      break
    try:
      obj, end = decoder.raw_decode(text, pos)
    except json.JSONDecodeError as e:
      char = text[e.pos:e.pos + 1]
      if _has_bad_bytes(char):
        bad(e.lineno, f"not valid UTF-8 (byte 0x{ord(char) - 0xDC00:02x} at column {e.colno})")
      else:
        bad(e.lineno, f"malformed JSON: {e.msg} at column {e.colno}")
      return  # the rest of the array cannot be located reliably
    except RecursionError:
      bad(line_of(pos), "malformed JSON: nested too deeply")
      return
    line_no = line_of(pos)
    raw = text[pos:end]
    if len(raw.encode("utf-8", errors="surrogateescape")) > max_record_bytes:
      bad(line_no, f"record is over the limit of {max_record_bytes} bytes (max_record_bytes)")
    elif _has_bad_bytes(raw):
      bad(line_no, "not valid UTF-8")
    elif not isinstance(obj, dict):
      bad(line_no, f"expected a JSON object, got {type_name(obj, article=True)}")
    else:
      count += 1
      yield line_no, obj
    pos = end
    if single:
      break
    while pos < len(text) and text[pos] in " \t\r\n":
      pos += 1
    if pos < len(text) and text[pos] == ",":
      pos += 1
    elif pos < len(text) and text[pos] != "]":
      bad(line_of(pos), "malformed JSON: expected ',' or ']' between array elements")
      return
  if count == 0 and stats.skipped == 0:
    bad(0, "file is empty (no JSON objects)")


def iter_records(path: str | os.PathLike | bytes, *, name: str | None = None,
                 on_error: str = "raise", max_record_bytes: int = DEFAULT_MAX_RECORD_BYTES,
                 stats: ReadStats | None = None, validate_records: bool = True,
                 ) -> Iterator[dict]:
  """Yields validated, normalized Forge records; errors per `on_error` (see module doc)."""
  name = name or (str(path) if not isinstance(path, bytes) else "<bytes>")
  stats = stats if stats is not None else ReadStats(path=name)
  first_line_of: dict[str, int] = {}
  for line_no, obj in iter_json_objects(path, name=name, on_error=on_error,
                                        max_record_bytes=max_record_bytes, stats=stats):
    try:
      rec = validate(obj) if validate_records else obj
      rec_id = rec.get("id")
      if rec_id in first_line_of:
        raise ForgeDataError(f"id: duplicate id {rec_id!r} (first seen on line {first_line_of[rec_id]})")
    except ForgeDataError as e:
      message = f"{name}:{line_no}: {e}"
      if on_error == "raise":
        raise ForgeDataError(message) from None
      stats.add_error(message)
      continue
    first_line_of[rec_id] = line_no
    stats.records += 1
    yield rec


def read_records(path: str | os.PathLike, *, on_error: str = "raise",
                 max_record_bytes: int = DEFAULT_MAX_RECORD_BYTES,
                 validate_records: bool = True) -> ReadResult:
  """Reads a whole Forge JSONL file into memory."""
  stats = ReadStats(path=str(path))
  records = list(iter_records(path, on_error=on_error, max_record_bytes=max_record_bytes,
                              stats=stats, validate_records=validate_records))
  return ReadResult(records=records, stats=stats)


def dumps_record(record: dict) -> str:
  return json.dumps(record, ensure_ascii=False, allow_nan=False)


def write_records(path: str | os.PathLike, records: Iterable[dict],
                  validator: Callable[[Any], dict] | None = validate) -> int:
  """Writes records (validated unless validator is None) to JSONL; returns the count.

  Writes to a temporary file and renames it, so a crash never leaves half a file.
  """
  path = os.fspath(path)
  directory = os.path.dirname(path)
  if directory:
    os.makedirs(directory, exist_ok=True)
  tmp = path + ".tmp"
  count = 0
  try:
    with open(tmp, "w", encoding="utf-8") as f:
      for rec in records:
        if validator is not None:
          try:
            rec = validator(rec)
          except ForgeDataError as e:
            raise ForgeDataError(f"{path}: record {count} (id {rec.get('id')!r}): {e}") from None
        f.write(dumps_record(rec) + "\n")
        count += 1
  except BaseException:
    if os.path.exists(tmp):
      os.remove(tmp)
    raise
  os.replace(tmp, path)
  return count
