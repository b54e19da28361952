"""Tool documentation from installed Python modules: signature + docstring -> tool_doc.

Only imports modules named in an allow-list (importing runs module code; the list
holds libraries known to import without side effects) and never calls what it
documents.
"""
from __future__ import annotations

import ast
import enum
import functools
import importlib
import importlib.metadata
import inspect
import json
import math
import re
import sys
import types
import typing
from typing import Any, Iterator

from heph_jax.data.forge.schema import json_schema_type
from heph_jax.data.harvest.docstrings import parse_docstring

# Modules whose public callables become tool docs. Standard library first, then
# installed third-party packages (skipped when not installed).
STDLIB_MODULES = (
    "base64", "binascii", "bisect", "calendar", "cmath", "colorsys", "copy", "csv",
    "datetime", "decimal", "difflib", "email.utils", "fnmatch", "fractions", "functools",
    "glob", "gzip", "hashlib", "heapq", "html", "ipaddress", "itertools", "json", "keyword",
    "math", "operator", "os.path", "pathlib", "pprint", "random", "re", "secrets", "shlex",
    "shutil", "statistics", "string", "struct", "tarfile", "tempfile", "textwrap",
    "unicodedata", "urllib.parse", "uuid", "zipfile", "zlib",
)
PACKAGE_MODULES = (
    "numpy", "numpy.linalg", "numpy.fft", "scipy.special", "scipy.stats", "scipy.linalg",
    "scipy.optimize", "scipy.signal", "networkx", "sympy", "dateutil.parser",
    "dateutil.relativedelta", "yaml", "packaging.version", "humanize", "editdistance",
    "einops", "optax", "requests", "jinja2", "markdown_it", "pygments", "toml", "simplejson",
    "huggingface_hub", "safetensors.numpy", "ml_collections", "tqdm", "regex", "idna",
    "immutabledict", "more_itertools", "attrs", "click", "typer", "filelock", "fsspec",
)

_STDLIB_LICENSE = "PSF-2.0"


def _json_default(value: Any) -> tuple[bool, Any]:
  """(ok, value) where ok says the default is a plain JSON value."""
  if value is None or isinstance(value, (bool, str)):
    return True, value
  if isinstance(value, int) and not isinstance(value, enum.Enum):
    return True, value
  if isinstance(value, float):
    return (True, value) if math.isfinite(value) else (False, None)
  if isinstance(value, (list, tuple)) and len(value) <= 8:
    items = [_json_default(v) for v in value]
    if all(ok for ok, _ in items):
      return True, [v for _, v in items]
  return False, None


def annotation_schema(annotation: Any) -> dict:
  """JSON Schema for a Python annotation (best effort; unknown -> {})."""
  if annotation is inspect.Parameter.empty or annotation is None:
    return {}
  if isinstance(annotation, str):
    kind = json_schema_type(annotation)
    return {"type": kind} if kind else {}
  simple = {int: "integer", float: "number", complex: "string", str: "string",
            bool: "boolean", bytes: "string", list: "array", tuple: "array", set: "array",
            frozenset: "array", dict: "object", type(None): "null"}
  if annotation in simple:
    return {"type": simple[annotation]}
  origin = typing.get_origin(annotation)
  args = typing.get_args(annotation)
  if origin in (list, tuple, set, frozenset) or (
      origin is not None and getattr(origin, "__name__", "") in ("Sequence", "Iterable", "Collection")):
    out = {"type": "array"}
    item_args = [a for a in args if a is not Ellipsis]
    if len(set(item_args)) == 1:
      item = annotation_schema(item_args[0])
      if item:
        out["items"] = item
    return out
  if origin in (dict,) or (origin is not None and getattr(origin, "__name__", "") == "Mapping"):
    return {"type": "object"}
  if origin is typing.Literal:
    values = [a for a in args if _json_default(a)[0]]
    return {"enum": values} if values else {}
  if origin in (typing.Union, types.UnionType):
    subs = [annotation_schema(a) for a in args]
    kinds = [s.get("type") for s in subs]
    if subs and all(isinstance(k, str) for k in kinds):
      unique = list(dict.fromkeys(kinds))
      return {"type": unique[0] if len(unique) == 1 else unique}
    return {}
  return {}


@functools.lru_cache(maxsize=None)
def _distributions() -> dict:
  return importlib.metadata.packages_distributions()


def _json_result(value: Any, depth: int = 0) -> tuple[bool, Any]:
  if depth > 8:
    return False, None
  if value is None or isinstance(value, (bool, str, int)):
    return True, value
  if isinstance(value, float):
    return (True, value) if math.isfinite(value) else (False, None)
  if isinstance(value, (list, tuple)):
    items = [_json_result(v, depth + 1) for v in value]
    return (True, [v for _, v in items]) if all(ok for ok, _ in items) else (False, None)
  if isinstance(value, dict) and all(isinstance(k, str) for k in value):
    items = {k: _json_result(v, depth + 1) for k, v in value.items()}
    ok = all(o for o, _ in items.values())
    return (True, {k: v for k, (_, v) in items.items()}) if ok else (False, None)
  return False, None


def doctest_examples(doc_text: str, short_name: str, sig: inspect.Signature,
                     limit: int = 3) -> list[dict]:
  """Examples from doctest lines `>>> f(literal args)` followed by a literal output."""
  examples = []
  lines = doc_text.splitlines()
  for i, line in enumerate(lines):
    stripped = line.strip()
    if not stripped.startswith(">>> ") or i + 1 >= len(lines):
      continue
    output = lines[i + 1].strip()
    if not output or output.startswith((">>>", "...")):
      continue
    try:
      call = ast.parse(stripped[4:], mode="eval").body
      if not isinstance(call, ast.Call):
        continue
      func = call.func
      called = func.attr if isinstance(func, ast.Attribute) else getattr(func, "id", None)
      if called != short_name or any(isinstance(a, ast.Starred) for a in call.args):
        continue
      args = [ast.literal_eval(a) for a in call.args]
      kwargs = {k.arg: ast.literal_eval(k.value) for k in call.keywords if k.arg}
      bound = sig.bind(*args, **kwargs).arguments
      ok_args, arguments = _json_result(dict(bound))
      ok_out, result = _json_result(ast.literal_eval(output))
    except Exception:  # not a literal call: not an example we can store
      continue
    if ok_args and ok_out:
      examples.append({"arguments": arguments, "result": result})
    if len(examples) >= limit:
      break
  return examples


@functools.lru_cache(maxsize=None)
def _license_of(module_name: str) -> str | None:
  top = module_name.split(".")[0]
  if top in sys.stdlib_module_names:
    return _STDLIB_LICENSE
  try:
    dists = _distributions().get(top, [])
    if not dists:
      return None
    meta = importlib.metadata.metadata(dists[0])
    value = meta.get("License-Expression") or meta.get("License") or ""
    value = value.strip()
    return value if value and len(value) <= 40 and "\n" not in value else None
  except Exception:  # metadata is best effort
    return None


@functools.lru_cache(maxsize=None)
def _version_of(module_name: str) -> str:
  top = module_name.split(".")[0]
  if top in sys.stdlib_module_names:
    return "python-" + ".".join(map(str, sys.version_info[:3]))
  try:
    dists = _distributions().get(top, [])
    return importlib.metadata.version(dists[0]) if dists else ""
  except Exception:
    return ""


def tool_doc_from_callable(fn: Any, qualname: str, module_name: str) -> dict | None:
  """A tool_doc record for one callable, or None when it has no signature or docstring."""
  doc_text = inspect.getdoc(fn)
  if not doc_text or len(doc_text.strip()) < 10:
    return None
  try:
    sig = inspect.signature(fn)
  except (TypeError, ValueError):
    return None
  doc = parse_docstring(doc_text)
  properties: dict[str, dict] = {}
  required: list[str] = []
  for name, param in sig.parameters.items():
    if name in ("self", "cls"):
      continue
    if param.kind is inspect.Parameter.VAR_KEYWORD:
      continue
    schema = annotation_schema(param.annotation)
    if not schema and name in doc.param_types:
      kind = json_schema_type(doc.param_types[name])
      schema = {"type": kind} if kind else {}
    if param.kind is inspect.Parameter.VAR_POSITIONAL:
      schema = {"type": "array", "items": schema} if schema else {"type": "array"}
    desc = doc.params.get(name) or doc.params.get("*" + name) or ""
    if desc:
      schema["description"] = desc
    if param.default is not inspect.Parameter.empty:
      ok, value = _json_default(param.default)
      if ok:
        schema["default"] = value
      else:
        extra = f"(default: {param.default!r})"
        if len(extra) < 80 and "<" not in extra:  # skip sentinel reprs like <no value>
          schema["description"] = (desc + " " + extra).strip()
    elif param.kind is not inspect.Parameter.VAR_POSITIONAL:
      required.append(name)
    properties[name] = schema
  returns = None
  ret_schema = annotation_schema(sig.return_annotation)
  if doc.return_type and not ret_schema:
    kind = json_schema_type(doc.return_type)
    ret_schema = {"type": kind} if kind else {}
  if doc.returns or ret_schema:
    returns = dict(ret_schema)
    if doc.returns:
      returns["description"] = doc.returns
  try:
    # object reprs carry memory addresses: drop them so output is reproducible
    signature_text = re.sub(r" at 0x[0-9a-fA-F]+", "", f"{qualname.split('.')[-1]}{sig}")
  except Exception:
    signature_text = None
  full_name = f"{module_name}.{qualname}"
  record = {
      "type": "tool_doc",
      "id": f"pydoc:{full_name}",
      "source": f"python:{module_name}",
      "name": full_name,
      "description": doc.description or doc_text.strip(),
      "parameters": {"type": "object", "properties": properties, "required": required},
      "returns": returns,
      "examples": doctest_examples(doc_text, qualname.split(".")[-1], sig),
      "meta": {"module": module_name, "version": _version_of(module_name)},
  }
  if signature_text and len(signature_text) < 400:
    record["signature"] = signature_text
  lic = _license_of(module_name)
  if lic:
    record["license"] = lic
  json.dumps(record, allow_nan=False)  # fail here, not in the writer, on odd defaults
  return record


def _public_members(module: types.ModuleType) -> Iterator[tuple[str, Any]]:
  names = getattr(module, "__all__", None)
  if not isinstance(names, (list, tuple)):
    names = [n for n in dir(module) if not n.startswith("_")]
  for name in sorted(set(names)):
    if not isinstance(name, str) or name.startswith("_"):
      continue
    try:
      value = getattr(module, name)
    except Exception:
      continue
    yield name, value


def harvest_module(module_name: str) -> Iterator[dict]:
  """Tool docs for the public functions of one module and the methods of its classes."""
  try:
    module = importlib.import_module(module_name)
  except Exception:  # not installed or broken: nothing to harvest
    return
  home = module.__name__.split(".")[0]  # os.path is posixpath
  for name, value in _public_members(module):
    if inspect.isroutine(value) or type(value).__name__ == "ufunc":
      owner = str(getattr(value, "__module__", None) or module_name)
      if not owner.startswith(home) and not owner.startswith("_"):
        continue  # re-exported from another library: documented there
      try:
        rec = tool_doc_from_callable(value, name, module_name)
      except Exception:
        rec = None
      if rec:
        yield rec
    elif inspect.isclass(value) and str(getattr(value, "__module__", "")).startswith(home):
      for meth_name, meth in sorted(vars(value).items()):
        if meth_name.startswith("_") or not inspect.isfunction(meth):
          continue
        try:
          rec = tool_doc_from_callable(meth, f"{name}.{meth_name}", module_name)
        except Exception:
          rec = None
        if rec:
          yield rec


def harvest_tool_docs(modules: tuple[str, ...] = STDLIB_MODULES + PACKAGE_MODULES) -> Iterator[dict]:
  seen = set()
  for module_name in modules:
    for rec in harvest_module(module_name):
      if rec["id"] not in seen:
        seen.add(rec["id"])
        yield rec
