"""OpenAI-style chat transcripts and tool schemas -> Forge records.

Accepted objects (one per JSON line, or a JSON array of them):

  chat      {"messages": [...], "tools": [{"type": "function", "function": {name,
            description, parameters}}], "id"?}. Assistant messages may carry
            "tool_calls": [{"id", "type": "function", "function": {"name",
            "arguments": "<JSON string>"}}]; tool results are {"role": "tool",
            "tool_call_id", "content"}. The legacy layout ("functions",
            "function_call", role "function") is accepted too. Content may be a
            string, null, or a list of {"type": "text", "text"} parts.
  tools     a tool schema on its own, {"type": "function", "function": {...}} or
            {"name", "description", "parameters"}, or {"tools": [...]} without
            messages -> one tool_doc per function.
"""
from __future__ import annotations

import os
from typing import Any, Iterator

from heph_jax.data.convert.common import Context, input_files, need, slug
from heph_jax.data.forge.io import parse_json_object
from heph_jax.data.forge.schema import ForgeDataError, normalize_schema

_ROLE_MAP = {"system": "system", "developer": "system", "user": "user", "assistant": "assistant",
             "tool": "tool", "function": "tool"}


def tool_from_schema(obj: Any, where: str) -> dict:
  """A Forge tool from {"type": "function", "function": {...}} or a bare function schema."""
  if isinstance(obj, dict) and obj.get("type") == "function" and "function" in obj:
    obj, where = obj["function"], f"{where}.function"
  name = need(obj, "name", str, where)
  params = need(obj, "parameters", dict, where, optional=True, default={})
  params = normalize_schema(params)
  if params.get("type", "object") != "object":
    raise ForgeDataError(f"{where}.parameters.type: expected 'object', got {params.get('type')!r}")
  params["type"] = "object"
  return {"name": name, "description": need(obj, "description", str, where, optional=True, default=""),
          "parameters": params}


def _content(msg: dict, where: str) -> str:
  content = msg.get("content")
  if content is None:
    return ""
  if isinstance(content, str):
    return content
  if isinstance(content, list):
    texts = []
    for i, part in enumerate(content):
      if isinstance(part, str):
        texts.append(part)
      elif isinstance(part, dict) and part.get("type") in ("text", "input_text", "output_text"):
        texts.append(need(part, "text", str, f"{where}.content[{i}]"))
      else:
        kind = part.get("type") if isinstance(part, dict) else type(part).__name__
        raise ForgeDataError(f"{where}.content[{i}]: unsupported content part {kind!r} (text only)")
    return "".join(texts)
  raise ForgeDataError(f"{where}.content: expected a string, null or a list of parts, "
                       f"got {type(content).__name__}")


def parse_arguments(value: Any, where: str) -> dict:
  """Tool-call arguments: a JSON string (OpenAI) or already an object."""
  if isinstance(value, dict):
    return value
  if value is None or value == "":
    return {}
  if not isinstance(value, str):
    raise ForgeDataError(f"{where}: expected a JSON string or an object, got {type(value).__name__}")
  return parse_json_object(value, where)


def convert_messages(messages: Any, where: str = "messages") -> list[dict]:
  if not isinstance(messages, list):
    raise ForgeDataError(f"{where}: expected a list of messages")
  out = []
  call_names: dict[str, str] = {}
  last_call_name = None
  for i, msg in enumerate(messages):
    w = f"{where}[{i}]"
    role_in = need(msg, "role", str, w)
    role = _ROLE_MAP.get(role_in)
    if role is None:
      raise ForgeDataError(f"{w}.role: unknown role {role_in!r} (expected one of {', '.join(_ROLE_MAP)})")
    norm: dict[str, Any] = {"role": role, "content": _content(msg, w)}
    if role == "assistant":
      calls = []
      for j, call in enumerate(msg.get("tool_calls") or []):
        cw = f"{w}.tool_calls[{j}]"
        fn = need(call, "function", dict, cw)
        name = need(fn, "name", str, f"{cw}.function")
        entry = {"name": name, "arguments": parse_arguments(fn.get("arguments"), f"{cw}.function.arguments")}
        if isinstance(call.get("id"), str):
          entry["id"] = call["id"]
          call_names[call["id"]] = name
        calls.append(entry)
      if isinstance(msg.get("function_call"), dict):
        fc = msg["function_call"]
        name = need(fc, "name", str, f"{w}.function_call")
        calls.append({"name": name,
                      "arguments": parse_arguments(fc.get("arguments"), f"{w}.function_call.arguments")})
      if calls:
        norm["tool_calls"] = calls
        last_call_name = calls[-1]["name"]
    elif role == "tool":
      call_id = msg.get("tool_call_id")
      if isinstance(call_id, str):
        norm["tool_call_id"] = call_id
      name = msg.get("name") or call_names.get(call_id) or last_call_name
      if isinstance(name, str):
        norm["name"] = name
    out.append(norm)
  return out


def record_from(obj: dict, *, default_id: str, source: str, record_type: str, split: str) -> list[dict]:
  tools_in = obj.get("tools") if obj.get("tools") is not None else obj.get("functions")
  if tools_in is not None and not isinstance(tools_in, list):
    raise ForgeDataError("tools: expected a list of tool schemas")
  base = {"source": source, "split": split}
  if "messages" in obj:
    rec = dict(base, type=record_type, id=str(obj.get("id", default_id)),
               tools=[tool_from_schema(t, f"tools[{i}]") for i, t in enumerate(tools_in or [])],
               messages=convert_messages(obj["messages"]))
    return [rec]
  schemas = tools_in if tools_in is not None else [obj]
  out = []
  for i, schema in enumerate(schemas):
    tool = tool_from_schema(schema, f"tools[{i}]" if tools_in is not None else "")
    out.append(dict(base, type="tool_doc", id=f"{default_id}:{slug(tool['name'])}",
                    name=tool["name"], description=tool["description"],
                    parameters=tool["parameters"]))
  return out


def convert(path: str, *, ctx: Context | None = None, record_type: str = "trajectory",
            split: str = "train", source: str | None = None, **kwargs) -> Iterator[dict]:
  ctx = ctx or Context(**kwargs)
  for file in input_files(path):
    stem = os.path.splitext(os.path.basename(file))[0]
    src = source or f"openai:{stem}"
    for line, obj in ctx.documents(file, file):
      yield from ctx.emit(file, line, lambda obj=obj, line=line: record_from(
          obj, default_id=f"{src}:{line}", source=src, record_type=record_type, split=split))
