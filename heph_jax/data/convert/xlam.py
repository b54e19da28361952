"""xLAM / APIGen (Salesforce) -> Forge records.

Two published layouts (a JSON array or JSON Lines of objects):

  xlam-function-calling-60k (APIGen): {"id": int, "query": str,
    "answers": "<JSON string: [{"name", "arguments": {...}}]>",
    "tools": "<JSON string: [{"name", "description",
              "parameters": {param: {"type": "str, optional", "description", "default"}}}]>"}
    -> a trajectory: the tools, the user query, the assistant's reference calls.
    A parameter is required unless it has a default or its type says "optional".
  APIGen-MT (multi-turn): {"conversations": [{"from": "human"|"gpt"|"function_call"|
    "observation", "value": str}], "tools": "<JSON string: [JSON Schema tools]>",
    "system": str} -> a trajectory; a function_call value is {"name", "arguments"}
    as JSON, consecutive calls join one assistant message.
The answers/tools fields may also be already-parsed lists.
"""
from __future__ import annotations

import json
import os
from typing import Any, Iterator

from heph_jax.data.convert.common import Context, input_files, need
from heph_jax.data.convert.openai_chat import parse_arguments
from heph_jax.data.forge.schema import ForgeDataError, json_schema_type, normalize_schema


def _json_field(obj: dict, key: str, kind: type) -> Any:
  value = need(obj, key, (str, kind), "")
  if isinstance(value, str):
    try:
      value = json.loads(value)
    except json.JSONDecodeError as e:
      raise ForgeDataError(f"{key}: the JSON string is not valid JSON ({e.msg} at column {e.colno})") from None
  if not isinstance(value, kind):
    raise ForgeDataError(f"{key}: expected a {kind.__name__} (directly or as a JSON string), "
                         f"got {type(value).__name__}")
  return value


def xlam_tool(tool: Any, where: str) -> dict:
  """xLAM tool: parameters map names to {"type", "description", "default"}; or JSON Schema."""
  name = need(tool, "name", str, where)
  params = need(tool, "parameters", dict, where, optional=True, default={})
  if params.get("type") == "object" or "properties" in params:
    schema = normalize_schema(params)
    schema["type"] = "object"
  else:
    props, required = {}, []
    for pname, spec in params.items():
      pw = f"{where}.parameters.{pname}"
      if not isinstance(spec, dict):
        raise ForgeDataError(f"{pw}: expected an object with type/description, got {type(spec).__name__}")
      type_text = str(spec.get("type", ""))
      prop: dict[str, Any] = {}
      kind = json_schema_type(type_text)
      if kind:
        prop["type"] = kind
      if isinstance(spec.get("description"), str):
        prop["description"] = spec["description"]
      if "default" in spec and spec["default"] not in ("", None):
        prop["default"] = spec["default"]
      props[pname] = normalize_schema(prop)
      if "default" not in spec and "optional" not in type_text.lower():
        required.append(pname)
    schema = {"type": "object", "properties": props, "required": required}
  return {"name": name, "description": need(tool, "description", str, where, optional=True, default=""),
          "parameters": schema}


def _single(obj: dict, default_id: str, source: str, split: str, record_type: str) -> dict:
  tools = [xlam_tool(t, f"tools[{i}]") for i, t in enumerate(_json_field(obj, "tools", list))]
  calls = []
  for i, ans in enumerate(_json_field(obj, "answers", list)):
    w = f"answers[{i}]"
    calls.append({"name": need(ans, "name", str, w),
                  "arguments": parse_arguments(ans.get("arguments"), f"{w}.arguments")})
  messages = [{"role": "user", "content": need(obj, "query", str, "")}]
  if calls:
    messages.append({"role": "assistant", "content": "", "tool_calls": calls})
  rec_id = obj.get("id")
  return {"type": record_type, "id": f"xlam:{rec_id}" if isinstance(rec_id, (int, str)) else default_id,
          "source": source, "split": split, "tools": tools, "messages": messages}


def _multi_turn(obj: dict, default_id: str, source: str, split: str, record_type: str) -> dict:
  tools_raw = _json_field(obj, "tools", list) if obj.get("tools") is not None else []
  tools = [xlam_tool(t, f"tools[{i}]") for i, t in enumerate(tools_raw)]
  messages: list[dict] = []
  if isinstance(obj.get("system"), str) and obj["system"].strip():
    messages.append({"role": "system", "content": obj["system"]})
  last_names: list[str] = []
  for i, turn in enumerate(need(obj, "conversations", list, "")):
    w = f"conversations[{i}]"
    who, value = need(turn, "from", str, w), need(turn, "value", str, w)
    if who == "human":
      messages.append({"role": "user", "content": value})
    elif who == "gpt":
      messages.append({"role": "assistant", "content": value})
    elif who == "function_call":
      call = parse_arguments(value, f"{w}.value")
      entry = {"name": need(call, "name", str, f"{w}.value"),
               "arguments": parse_arguments(call.get("arguments"), f"{w}.value.arguments")}
      if messages and messages[-1]["role"] == "assistant" and "tool_calls" in messages[-1]:
        messages[-1]["tool_calls"].append(entry)
      else:
        messages.append({"role": "assistant", "content": "", "tool_calls": [entry]})
      last_names = [c["name"] for c in messages[-1]["tool_calls"]]
    elif who == "observation":
      name = last_names.pop(0) if last_names else None
      msg = {"role": "tool", "content": value}
      if name:
        msg["name"] = name
      messages.append(msg)
    else:
      raise ForgeDataError(f"{w}.from: unknown speaker {who!r} (human, gpt, function_call, observation)")
  rec_id = obj.get("id")
  return {"type": record_type, "id": f"apigen_mt:{rec_id}" if isinstance(rec_id, (int, str)) else default_id,
          "source": source, "split": split, "tools": tools, "messages": messages}


def convert(path: str, *, ctx: Context | None = None, record_type: str = "trajectory",
            split: str = "train", source: str | None = None, **kwargs) -> Iterator[dict]:
  ctx = ctx or Context(**kwargs)
  for file in input_files(path):
    stem = os.path.splitext(os.path.basename(file))[0]
    src = source or f"xlam:{stem}"

    def build(obj, line):
      if "conversations" in obj:
        return _multi_turn(obj, f"{src}:{line}", src, split, record_type)
      if "query" in obj or "answers" in obj:
        return _single(obj, f"{src}:{line}", src, split, record_type)
      raise ForgeDataError("not an xLAM/APIGen layout: expected 'query'+'answers'+'tools' or 'conversations'")

    for line, obj in ctx.documents(file, file):
      yield from ctx.emit(file, line, lambda obj=obj, line=line: build(obj, line))
