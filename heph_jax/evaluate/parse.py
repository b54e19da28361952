"""Model output text -> function calls [{"name": str, "arguments": dict}], or None when unparseable.

Accepted syntaxes (whichever the text holds, tried in this order):
  forge-v1      <tool_call>{"name": ..., "arguments": {...}}</tool_call>, one per call
  JSON          {"name": ..., "arguments"|"parameters": {...}}, a list of those, or {fn: {args}}
                (Llama-3.1 JSON tool calls; Mistral's [TOOL_CALLS] prefix is dropped)
  Python calls  f(a=1) or [f(a=1), pkg.g(b="x")] (BFCL's own prompt format)
An empty list means "no call" (irrelevance); None means the text could not be read as calls.
Never raises on model output.
"""
from __future__ import annotations

import ast
import json
import re
from typing import Any, Optional

_TOOL_CALL = re.compile(r"<tool_call>(.*?)</tool_call>", re.S)
_PREFIXES = ("[TOOL_CALLS]", "<|python_tag|>", "```json", "```python", "```")


def _call_from_json(obj: Any) -> Optional[list[dict]]:
  if isinstance(obj, list):
    calls = [_call_from_json(o) for o in obj]
    return None if any(c is None for c in calls) else [c for cs in calls for c in cs]
  if not isinstance(obj, dict):
    return None
  if isinstance(obj.get("name"), str):
    args = obj.get("arguments", obj.get("parameters", {}))
    if isinstance(args, str):  # OpenAI style: arguments as a JSON string
      try:
        args = json.loads(args)
      except ValueError:
        return None
    return [{"name": obj["name"], "arguments": args}] if isinstance(args, dict) else None
  if obj and all(isinstance(v, dict) for v in obj.values()):
    return [{"name": k, "arguments": v} for k, v in obj.items()]
  return None


def _dotted(node: ast.AST) -> Optional[str]:
  if isinstance(node, ast.Name):
    return node.id
  if isinstance(node, ast.Attribute):
    base = _dotted(node.value)
    return None if base is None else f"{base}.{node.attr}"
  return None


def _python_calls(text: str) -> Optional[list[dict]]:
  try:
    tree = ast.parse(text.strip(), mode="eval").body
  except (SyntaxError, ValueError, RecursionError):
    return None
  nodes = tree.elts if isinstance(tree, (ast.List, ast.Tuple)) else [tree]
  calls = []
  for node in nodes:
    if not isinstance(node, ast.Call) or node.args or _dotted(node.func) is None:
      return None
    try:
      args = {kw.arg: ast.literal_eval(kw.value) for kw in node.keywords if kw.arg}
    except (ValueError, SyntaxError, TypeError, RecursionError):
      return None
    if len(args) != len(node.keywords):
      return None  # **kwargs
    calls.append({"name": _dotted(node.func), "arguments": args})
  return calls


def parse_calls(text: str) -> Optional[list[dict]]:
  text = text.strip()
  tagged = _TOOL_CALL.findall(text)
  if tagged:
    calls = []
    for body in tagged:
      try:
        got = _call_from_json(json.loads(body))
      except ValueError:
        return None
      if got is None:
        return None
      calls += got
    return calls
  if not text:
    return []
  for prefix in _PREFIXES:
    if text.startswith(prefix):
      text = text[len(prefix):].strip().removesuffix("```").strip()
  try:
    return _call_from_json(json.loads(text))
  except (ValueError, RecursionError):
    pass
  return _python_calls(text)
