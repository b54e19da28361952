"""Forge record schema: typed records and their validation.

Every Forge record is one JSON object with these common fields:

  type     one of "tool_doc", "trajectory", "code", "text", "ift"
  id       non-empty string, unique within a file
  source   non-empty string naming where the record came from
           (e.g. "python:math", "bfcl:simple_python", "stdlib:json/decoder.py")
  split    "train" (default) or "eval"; eval records (e.g. BFCL questions) must
           never enter a training mixture unless decontaminated
  license  optional string (SPDX id of the upstream data when known)
  meta     optional object with free-form extra facts (versions, categories...)

Per type:

  tool_doc    name, description, parameters (JSON Schema of type "object" with
              "properties" and "required"), returns (JSON Schema or null),
              examples (list of {"arguments": {...}, "result": any}),
              signature (optional string, e.g. "gcd(*integers)")
  trajectory  tools (list of {"name", "description", "parameters"}), messages
              (list of {"role", "content", ...}); roles are system, user,
              assistant and tool. An assistant message may carry "tool_calls":
              [{"name", "arguments": {...}, "id"?}]; a tool message is the
              observation of the call before it ("name"?, "tool_call_id"?). The
              last assistant message without tool calls is the final answer.
  ift         same fields as trajectory; must hold at least one assistant
              message (the completions that IFT puts the loss on)
  code        content (non-empty), language (default "python"), path (optional)
  text        content (non-empty), title (optional)

`validate(record)` returns a normalized copy (defaults filled in) or raises
`ForgeDataError` naming the field path, e.g. "messages[2].tool_calls[0].arguments:
expected an object, got str".
"""
from __future__ import annotations

import copy
import json
import math
from typing import Any
from heph_jax.errors import HephError

RECORD_TYPES = ("tool_doc", "trajectory", "code", "text", "ift")
SPLITS = ("train", "eval")
ROLES = ("system", "user", "assistant", "tool")
JSON_SCHEMA_TYPES = ("object", "array", "string", "integer", "number", "boolean", "null")

_COMMON_FIELDS = ("type", "id", "source", "split", "license", "meta")
_TYPE_FIELDS = {
    "tool_doc": ("name", "description", "parameters", "returns", "examples", "signature"),
    "trajectory": ("tools", "messages"),
    "ift": ("tools", "messages"),
    "code": ("content", "language", "path"),
    "text": ("content", "title"),
}
_TOOL_FIELDS = ("name", "description", "parameters", "returns")
_MESSAGE_FIELDS = ("role", "content", "tool_calls", "name", "tool_call_id")
_CALL_FIELDS = ("name", "arguments", "id")
_EXAMPLE_FIELDS = ("arguments", "result")


class ForgeDataError(HephError, ValueError):
  """Bad Forge input. The message says where ("path:line: field: reason")."""


_TYPE_NAMES = {dict: "object", list: "array", str: "string", bool: "boolean", int: "integer",
               float: "number", type(None): "null"}
_ARTICLES = {"object": "an object", "array": "an array", "string": "a string",
             "integer": "an integer", "number": "a number", "boolean": "a boolean"}


def type_name(value: Any, article: bool = False) -> str:
  """The JSON name of a value's type ("array", or with article "an array"), for error messages."""
  name = _TYPE_NAMES.get(type(value), type(value).__name__)
  return _ARTICLES.get(name, name) if article else name


def _fail(where: str, reason: str):
  raise ForgeDataError(f"{where}: {reason}" if where else reason)


def _join(where: str, key: str | int) -> str:
  if isinstance(key, int):
    return f"{where}[{key}]"
  return f"{where}.{key}" if where else key


def _expect(value: Any, kind: type | tuple, where: str, what: str):
  # bool is an int subclass; a boolean is never accepted where a number is meant.
  ok = isinstance(value, kind) and not (isinstance(value, bool) and kind in (int, (int, float)))
  if not ok:
    _fail(where, f"expected {what}, got {type_name(value)}")


def _string(rec: dict, key: str, where: str, *, required=True, nonempty=False,
            default: str | None = None) -> str | None:
  if key not in rec or rec[key] is None:
    if required:
      _fail(_join(where, key), "missing required field")
    return default
  value = rec[key]
  _expect(value, str, _join(where, key), "a string")
  if nonempty and not value.strip():
    _fail(_join(where, key), "must be a non-empty string")
  return value


def _no_unknown(rec: dict, allowed: tuple, where: str, kind: str):
  unknown = sorted(set(rec) - set(allowed))
  if unknown:
    _fail(_join(where, unknown[0]),
          f"unknown field for {kind} (allowed: {', '.join(allowed)}; put extras under 'meta')")


def _check_json_value(value: Any, where: str, depth: int = 0):
  """Values must survive a JSON round trip: no NaN/inf, no tuples or objects."""
  if depth > 64:
    _fail(where, "nested deeper than 64 levels")
  if isinstance(value, float) and not math.isfinite(value):
    _fail(where, f"non-finite number {value!r} is not valid JSON")
  if isinstance(value, dict):
    for k, v in value.items():
      if not isinstance(k, str):
        _fail(where, f"object key {k!r} is not a string")
      _check_json_value(v, _join(where, k), depth + 1)
  elif isinstance(value, list):
    for i, v in enumerate(value):
      _check_json_value(v, _join(where, i), depth + 1)
  elif not (value is None or isinstance(value, (str, int, float, bool))):
    _fail(where, f"{type(value).__name__} is not a JSON value")


def validate_schema(schema: Any, where: str, depth: int = 0) -> None:
  """Checks the parts of a JSON Schema that the renderer relies on."""
  _expect(schema, dict, where, "a JSON Schema object")
  if depth > 32:
    _fail(where, "schema nested deeper than 32 levels")
  if "type" in schema:
    types = schema["type"]
    names = types if isinstance(types, list) else [types]
    for name in names:
      if name not in JSON_SCHEMA_TYPES:
        _fail(_join(where, "type"),
              f"unknown JSON Schema type {name!r} (expected one of {', '.join(JSON_SCHEMA_TYPES)})")
  if "description" in schema and not isinstance(schema["description"], str):
    _fail(_join(where, "description"), f"expected a string, got {type_name(schema['description'])}")
  if "properties" in schema:
    props = schema["properties"]
    _expect(props, dict, _join(where, "properties"), "an object of property schemas")
    for name, sub in props.items():
      validate_schema(sub, _join(_join(where, "properties"), name), depth + 1)
  if "required" in schema:
    req = schema["required"]
    _expect(req, list, _join(where, "required"), "a list of property names")
    props = schema.get("properties", {})
    for i, name in enumerate(req):
      _expect(name, str, _join(_join(where, "required"), i), "a property name string")
      if name not in props:
        _fail(_join(_join(where, "required"), i), f"required property {name!r} is not in properties")
  if "items" in schema:
    items = schema["items"]
    if isinstance(items, list):
      for i, sub in enumerate(items):
        validate_schema(sub, _join(_join(where, "items"), i), depth + 1)
    else:
      validate_schema(items, _join(where, "items"), depth + 1)
  if "enum" in schema:
    _expect(schema["enum"], list, _join(where, "enum"), "a list")
  for key in ("anyOf", "oneOf", "allOf"):
    if key in schema:
      _expect(schema[key], list, _join(where, key), "a list of schemas")
      for i, sub in enumerate(schema[key]):
        validate_schema(sub, _join(_join(where, key), i), depth + 1)


def _parameters(rec: dict, where: str) -> dict:
  key = _join(where, "parameters")
  params = rec.get("parameters")
  if params is None:
    return {"type": "object", "properties": {}, "required": []}
  _expect(params, dict, key, "a JSON Schema object")
  if params.get("type", "object") != "object":
    _fail(_join(key, "type"), f"parameters must be a schema of type 'object', got {params.get('type')!r}")
  validate_schema(params, key)
  _check_json_value(params, key)
  out = dict(params)
  out["type"] = "object"
  out.setdefault("properties", {})
  out.setdefault("required", [])
  return out


def _returns(rec: dict, where: str) -> dict | None:
  value = rec.get("returns")
  if value is None:
    return None
  validate_schema(value, _join(where, "returns"))
  _check_json_value(value, _join(where, "returns"))
  return value


def _tool(tool: Any, where: str) -> dict:
  _expect(tool, dict, where, "a tool object")
  _no_unknown(tool, _TOOL_FIELDS, where, "a tool")
  out = {"name": _string(tool, "name", where, nonempty=True),
         "description": _string(tool, "description", where, required=False, default=""),
         "parameters": _parameters(tool, where)}
  returns = _returns(tool, where)
  if returns is not None:
    out["returns"] = returns
  return out


def _tool_call(call: Any, where: str) -> dict:
  _expect(call, dict, where, "a tool call object")
  _no_unknown(call, _CALL_FIELDS, where, "a tool call")
  out = {"name": _string(call, "name", where, nonempty=True)}
  if "arguments" not in call:
    _fail(_join(where, "arguments"), "missing required field")
  _expect(call["arguments"], dict, _join(where, "arguments"), "an object")
  _check_json_value(call["arguments"], _join(where, "arguments"))
  out["arguments"] = call["arguments"]
  call_id = _string(call, "id", where, required=False)
  if call_id is not None:
    out["id"] = call_id
  return out


def _messages(rec: dict, where: str, kind: str) -> list[dict]:
  key = _join(where, "messages")
  if "messages" not in rec:
    _fail(key, "missing required field")
  msgs = rec["messages"]
  _expect(msgs, list, key, "a list of messages")
  if not msgs:
    _fail(key, "must hold at least one message")
  out = []
  open_calls = False  # whether an assistant tool call is waiting for observations
  for i, msg in enumerate(msgs):
    mwhere = _join(key, i)
    _expect(msg, dict, mwhere, "a message object")
    _no_unknown(msg, _MESSAGE_FIELDS, mwhere, "a message")
    role = _string(msg, "role", mwhere)
    if role not in ROLES:
      _fail(_join(mwhere, "role"), f"unknown role {role!r} (expected one of {', '.join(ROLES)})")
    content = _string(msg, "content", mwhere, required=False, default="")
    norm = {"role": role, "content": content}
    calls = msg.get("tool_calls")
    if calls is not None and calls != []:
      if role != "assistant":
        _fail(_join(mwhere, "tool_calls"), f"only assistant messages may call tools, not {role!r}")
      _expect(calls, list, _join(mwhere, "tool_calls"), "a list of tool calls")
      norm["tool_calls"] = [_tool_call(c, _join(_join(mwhere, "tool_calls"), j))
                            for j, c in enumerate(calls)]
    if role == "assistant" and not content.strip() and "tool_calls" not in norm:
      _fail(mwhere, "assistant message has neither content nor tool_calls")
    if role in ("user", "system") and not content.strip():
      _fail(_join(mwhere, "content"), f"{role} message must have non-empty content")
    for extra in ("name", "tool_call_id"):
      value = _string(msg, extra, mwhere, required=False)
      if value is not None:
        if role != "tool":
          _fail(_join(mwhere, extra), f"only tool messages carry {extra!r}")
        norm[extra] = value
    if role == "tool" and not open_calls:
      _fail(mwhere, "a tool message (observation) must follow an assistant message with tool_calls")
    if role == "assistant":
      open_calls = "tool_calls" in norm
    elif role != "tool":
      open_calls = False
    out.append(norm)
  if kind == "ift" and not any(m["role"] == "assistant" for m in out):
    _fail(key, "an ift record needs at least one assistant message (nothing to train on)")
  return out


def validate(record: Any) -> dict:
  """Returns a normalized copy of `record`; raises ForgeDataError naming the bad field."""
  _expect(record, dict, "", "a JSON object record")
  kind = record.get("type")
  if kind is None:
    _fail("type", "missing required field")
  if kind not in RECORD_TYPES:
    _fail("type", f"unknown record type {kind!r} (expected one of {', '.join(RECORD_TYPES)})")
  _no_unknown(record, _COMMON_FIELDS + _TYPE_FIELDS[kind], "", f"a {kind} record")
  out = {"type": kind,
         "id": _string(record, "id", "", nonempty=True),
         "source": _string(record, "source", "", nonempty=True)}
  split = _string(record, "split", "", required=False, default="train")
  if split not in SPLITS:
    _fail("split", f"unknown split {split!r} (expected one of {', '.join(SPLITS)})")
  out["split"] = split
  license_ = _string(record, "license", "", required=False)
  if license_ is not None:
    out["license"] = license_
  if record.get("meta") is not None:
    _expect(record["meta"], dict, "meta", "an object")
    _check_json_value(record["meta"], "meta")
    out["meta"] = copy.deepcopy(record["meta"])

  if kind == "tool_doc":
    out["name"] = _string(record, "name", "", nonempty=True)
    out["description"] = _string(record, "description", "", required=False, default="")
    out["parameters"] = copy.deepcopy(_parameters(record, ""))
    out["returns"] = copy.deepcopy(_returns(record, ""))
    examples = record.get("examples") or []
    _expect(examples, list, "examples", "a list of examples")
    norm_examples = []
    for i, ex in enumerate(examples):
      where = _join("examples", i)
      _expect(ex, dict, where, "an example object")
      _no_unknown(ex, _EXAMPLE_FIELDS, where, "an example")
      if "arguments" not in ex:
        _fail(_join(where, "arguments"), "missing required field")
      _expect(ex["arguments"], dict, _join(where, "arguments"), "an object")
      _check_json_value(ex, where)
      norm_examples.append(copy.deepcopy(ex))
    out["examples"] = norm_examples
    signature = _string(record, "signature", "", required=False)
    if signature is not None:
      out["signature"] = signature
  elif kind in ("trajectory", "ift"):
    tools = record.get("tools") or []
    _expect(tools, list, "tools", "a list of tools")
    out["tools"] = [copy.deepcopy(_tool(t, _join("tools", i))) for i, t in enumerate(tools)]
    out["messages"] = copy.deepcopy(_messages(record, "", kind))
  elif kind == "code":
    out["content"] = _string(record, "content", "", nonempty=True)
    out["language"] = _string(record, "language", "", required=False, default="python")
    path = _string(record, "path", "", required=False)
    if path is not None:
      out["path"] = path
  else:  # text
    out["content"] = _string(record, "content", "", nonempty=True)
    title = _string(record, "title", "", required=False)
    if title is not None:
      out["title"] = title
  return out


# Loose type names seen in public tool data (BFCL uses "dict"/"float"/"tuple" and Java
# names; xLAM uses Python names) mapped to JSON Schema types. None = any type.
_TYPE_ALIASES = {
    "dict": "object", "object": "object", "hashmap": "object", "map": "object",
    "float": "number", "double": "number", "number": "number", "decimal": "number",
    "int": "integer", "integer": "integer", "long": "integer", "short": "integer",
    "str": "string", "string": "string", "char": "string", "text": "string",
    "bool": "boolean", "boolean": "boolean",
    "list": "array", "array": "array", "tuple": "array", "arraylist": "array", "set": "array",
    "null": "null", "none": "null",
    "enum": "string", "date": "string", "time": "string", "datetime": "string",
    "geopoint": "string", "credentials": "string", "file": "string", "url": "string",
    "any": None, "": None,
}


def json_schema_type(name: str) -> str | None:
  """Maps a loose type name ("dict", "List[int]", "str, optional") to a JSON Schema type."""
  original = name.split(",")[0].strip()
  base = original.lower()
  if base.split(" (")[0] in _TYPE_ALIASES:  # ToolBench: "DATE (YYYY-MM-DD)"
    base = base.split(" (")[0]
  for prefix in ("list[", "tuple[", "set[", "sequence[", "iterable["):
    if base.startswith(prefix):
      return "array"
  if base.startswith(("dict[", "mapping[")):
    return "object"
  if base.startswith("optional[") and base.endswith("]"):
    return json_schema_type(base[len("optional["):-1])
  if base.startswith("union[") or "|" in base:
    return None
  if base not in _TYPE_ALIASES:
    return "string" if original[:1].isupper() else None  # class names are passed as strings
  return _TYPE_ALIASES[base]


def normalize_schema(schema: Any) -> Any:
  """Returns a copy of a loose public schema with type names made JSON Schema types.

  Unknown/any types are dropped (an untyped schema accepts anything); "required"
  entries that name no property are dropped; a non-dict schema becomes {}.
  """
  if not isinstance(schema, dict):
    return {}
  out = {}
  for key, value in schema.items():
    if key == "type":
      names = value if isinstance(value, list) else [value]
      mapped = [json_schema_type(str(n)) for n in names]
      mapped = [m for m in mapped if m is not None]
      if len(mapped) == 1:
        out["type"] = mapped[0]
      elif mapped:
        out["type"] = list(dict.fromkeys(mapped))
    elif key == "properties" and isinstance(value, dict):
      out["properties"] = {str(k): normalize_schema(v) for k, v in value.items()}
    elif key == "items":
      out["items"] = ([normalize_schema(v) for v in value] if isinstance(value, list)
                      else normalize_schema(value))
    elif key in ("anyOf", "oneOf", "allOf") and isinstance(value, list):
      out[key] = [normalize_schema(v) for v in value]
    elif key == "description":
      out[key] = value if isinstance(value, str) else json.dumps(value, ensure_ascii=False)
    else:
      out[key] = value
  if "required" in out:
    props = out.get("properties", {})
    req = out["required"] if isinstance(out["required"], list) else []
    out["required"] = [r for r in req if isinstance(r, str) and r in props]
  _sanitize_json(out)
  return out


def _sanitize_json(value: Any):
  """Replaces non-finite floats (not valid JSON) inside schemas by strings, in place."""
  items = value.items() if isinstance(value, dict) else enumerate(value) if isinstance(value, list) else ()
  for k, v in list(items):
    if isinstance(v, float) and not math.isfinite(v):
      value[k] = str(v)
    elif isinstance(v, (dict, list)):
      _sanitize_json(v)
