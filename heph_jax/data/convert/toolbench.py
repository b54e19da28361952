"""ToolBench (OpenBMB ToolBench / ToolLLaMA, Apache-2.0) -> Forge records.

Three published layouts are recognized per object:

  ToolLLaMA training data (data/toolllama_G123_dfs_*.json, a JSON array):
    {"id": "...", "conversations": [{"from": "system"|"user"|"assistant"|"function",
     "value": str}]}. The system message lists the APIs as a Python literal after
    "Specifically, you have access to the following APIs: [...]"; an assistant
    value reads "Thought: ...\\nAction: <api>\\nAction Input: <JSON>", and the
    "Finish" action carries {"return_type": "give_answer", "final_answer": ...}.
    -> trajectory (thought = content, action = tool call, function = observation,
       final_answer = final assistant message).
  Instruction queries (data/instruction/G1_query.json): {"query", "query_id",
    "api_list": [{"tool_name", "api_name", "api_description", "required_parameters",
    "optional_parameters", "method", "category_name"}], "relevant APIs"}
    -> one tool_doc per distinct API (tool_name + api_name).
  Tool environment files (data/toolenv/tools/<Category>/<tool>.json): {"tool_name",
    "tool_description", "api_list": [{"name", "description", "method",
    "required_parameters", "optional_parameters"}]} -> one tool_doc per API.
Parameters are [{"name", "type" ("STRING", "NUMBER", "ENUM", ...), "description",
"default"}] and become JSON Schema properties.
"""
from __future__ import annotations

import ast
import json
import os
import re
from typing import Any, Iterator

from heph_jax.data.convert.common import Context, input_files, need, slug
from heph_jax.data.forge.schema import ForgeDataError, json_schema_type, normalize_schema

_API_LIST_MARK = "Specifically, you have access to the following APIs:"
_ACTION = re.compile(r"^\s*(?:Thought:\s*(?P<thought>.*?))?\s*Action:\s*(?P<action>[^\n]+?)\s*\n"
                     r"\s*Action Input:\s*(?P<input>.*)$", re.S)


def _schema_from_params(required: Any, optional: Any, where: str) -> dict:
  props, req = {}, []
  for group, is_required in ((required, True), (optional, False)):
    if group is None:
      continue
    if not isinstance(group, list):
      raise ForgeDataError(f"{where}: expected a list of parameters, got {type(group).__name__}")
    for i, p in enumerate(group):
      name = need(p, "name", str, f"{where}[{i}]")
      schema: dict[str, Any] = {}
      kind = json_schema_type(str(p.get("type", "")))
      if kind:
        schema["type"] = kind
      if isinstance(p.get("description"), str) and p["description"].strip():
        schema["description"] = p["description"].strip()
      default = p.get("default")
      if default not in (None, "") and isinstance(default, (str, int, float, bool)):
        schema["default"] = default
      props[name] = schema
      if is_required:
        req.append(name)
  return {"type": "object", "properties": props, "required": req}


def _api_tool_doc(tool_name: str, api: dict, where: str, source: str, split: str,
                  tool_description: str = "", category: str | None = None) -> dict:
  api_name = need(api, "api_name", str, where) if "api_name" in api else need(api, "name", str, where)
  desc = api.get("api_description", api.get("description")) or ""
  params = _schema_from_params(api.get("required_parameters"), api.get("optional_parameters"),
                               f"{where}.required_parameters")
  meta = {"tool_name": tool_name, "api_name": api_name}
  for key, value in (("method", api.get("method")), ("category", category or api.get("category_name")),
                     ("tool_description", tool_description)):
    if isinstance(value, str) and value:
      meta[key] = value
  return {"type": "tool_doc", "id": f"toolbench:{slug(tool_name)}.{slug(api_name)}", "source": source,
          "split": split, "name": f"{tool_name}.{api_name}", "description": str(desc).strip(),
          "parameters": params, "meta": meta}


def parse_system_tools(system: str, where: str) -> tuple[str, list[dict]]:
  """(system text without the API list, tools) from a ToolLLaMA system message."""
  if _API_LIST_MARK not in system:
    return system, []
  head, _, rest = system.partition(_API_LIST_MARK)
  start, end = rest.find("["), rest.rfind("]")
  if start < 0 or end < start:
    raise ForgeDataError(f"{where}: API list after {_API_LIST_MARK!r} is not a [...] literal")
  try:
    apis = ast.literal_eval(rest[start:end + 1])
  except (ValueError, SyntaxError):
    try:
      apis = json.loads(rest[start:end + 1])
    except json.JSONDecodeError:
      raise ForgeDataError(f"{where}: cannot parse the API list (not a Python or JSON literal)") from None
  tools = []
  for i, api in enumerate(apis):
    name = need(api, "name", str, f"{where}.apis[{i}]")
    params = normalize_schema(api.get("parameters") or {})
    params.pop("optional", None)  # ToolBench lists optional names; JSON Schema does not
    params["type"] = "object"
    params.setdefault("properties", {})
    tools.append({"name": name, "description": str(api.get("description") or ""), "parameters": params})
  return head.strip(), tools


def parse_action(value: str) -> tuple[str, str | None, Any]:
  """(thought, action name or None, parsed action input) of an assistant turn."""
  m = _ACTION.match(value)
  if not m:
    return value.strip(), None, None
  raw = m.group("input").strip()
  try:
    args = json.loads(raw) if raw else {}
  except json.JSONDecodeError:
    args = {"input": raw}  # ToolBench keeps malformed inputs; so do we, as text
  if not isinstance(args, dict):
    args = {"input": args}
  return (m.group("thought") or "").strip(), m.group("action").strip(), args


def _conversation(obj: dict, default_id: str, source: str, split: str, record_type: str) -> dict:
  turns = need(obj, "conversations", list, "")
  tools: list[dict] = []
  messages: list[dict] = []
  last_call = None
  for i, turn in enumerate(turns):
    w = f"conversations[{i}]"
    who = need(turn, "from", str, w)
    value = need(turn, "value", str, w)
    if who == "system":
      text, found = parse_system_tools(value, f"{w}.value")
      tools.extend(found)
      if text:
        messages.append({"role": "system", "content": text})
    elif who == "user":
      messages.append({"role": "user", "content": value.strip()})
    elif who == "assistant":
      thought, action, args = parse_action(value)
      if action is None:
        messages.append({"role": "assistant", "content": thought})
      elif action == "Finish":
        kind = args.get("return_type")
        answer = args.get("final_answer") if kind == "give_answer" else "I give up and restart."
        text = "\n".join(t for t in (thought, str(answer or "")) if t)
        messages.append({"role": "assistant", "content": text or "Finish."})
      else:
        last_call = action
        messages.append({"role": "assistant", "content": thought,
                         "tool_calls": [{"name": action, "arguments": args}]})
    elif who == "function":
      if last_call is None:
        raise ForgeDataError(f"{w}: function output without a preceding action")
      messages.append({"role": "tool", "name": last_call, "content": value})
    else:
      raise ForgeDataError(f"{w}.from: unknown speaker {who!r} (system, user, assistant, function)")
  rec_id = obj.get("id")
  rec_id = f"toolbench:{rec_id}" if isinstance(rec_id, (str, int)) and len(str(rec_id)) <= 200 else default_id
  return {"type": record_type, "id": rec_id, "source": source, "split": split,
          "tools": tools, "messages": messages}


def records_from(obj: dict, default_id: str, source: str, split: str, record_type: str,
                 seen: set) -> list[dict]:
  if "conversations" in obj:
    return [_conversation(obj, default_id, source, split, record_type)]
  if "api_list" in obj:
    apis = need(obj, "api_list", list, "")
    out = []
    tool_desc = obj.get("tool_description") if isinstance(obj.get("tool_description"), str) else ""
    for i, api in enumerate(apis):
      tool_name = obj.get("tool_name") if "query" not in obj else need(api, "tool_name", str, f"api_list[{i}]")
      if not isinstance(tool_name, str):
        raise ForgeDataError("tool_name: missing required field")
      rec = _api_tool_doc(tool_name, api, f"api_list[{i}]", source, split, tool_desc)
      if rec["id"] not in seen:  # queries repeat the same APIs many times
        seen.add(rec["id"])
        out.append(rec)
    return out
  raise ForgeDataError("not a ToolBench layout: expected 'conversations' or 'api_list'")


def convert(path: str, *, ctx: Context | None = None, record_type: str = "trajectory",
            split: str = "train", source: str | None = None, **kwargs) -> Iterator[dict]:
  ctx = ctx or Context(**kwargs)
  seen: set = set()
  for file in input_files(path):
    stem = os.path.splitext(os.path.basename(file))[0]
    src = source or f"toolbench:{stem}"
    for line, obj in ctx.documents(file, file):
      yield from ctx.emit(file, line, lambda obj=obj, line=line: records_from(
          obj, f"{src}:{line}", src, split, record_type, seen))
