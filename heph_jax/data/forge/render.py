"""Forge records rendered as training text.

`render(record)` returns a list of `(text, is_completion)` pieces. Joining the texts
gives the full document. Pre-training trains on every piece; IFT puts the loss on
completion pieces only. No tokenizer concerns here: no BOS/EOS, plain strings.

Template (version "forge-v1")
-----------------------------

text        "{title}\\n\\n{content}" (or just content when there is no title); one
            completion piece.
code        content verbatim; one completion piece.
tool_doc    one completion piece:

              Tool: {name}
              Signature: {signature}                       (only when known)
              Description: {description}                   (only when non-empty)
              Parameters:
              - {name} ({type}, required|optional[, default: {json}][, one of: {json}, ...]): {description}
                - {nested property of an object parameter, indented two spaces}
                (items: {type}) is appended to arrays with typed items
              (or "Parameters: none")
              Returns: {type}: {description}               (only when known)
              - {field} ({type}): {description}            (fields of an object result)
              Examples:                                    (only when present)
              {name}({key}={json}, ...) -> {json result}

trajectory  a chat transcript. When tools exist, a tools block comes first (one
ift         compact JSON object {"name", "description", "parameters"} per line):

              <|tools|>\\n{tool json}\\n{tool json}<|end|>\\n

            then each message as a header piece and a body piece:

              <|{role}|>\\n            (tool messages: <|tool:{name}|>\\n when named)
              {body}<|end|>\\n

            An assistant body is its content, then one line per tool call:
            <tool_call>{"name": ..., "arguments": {...}}</tool_call> (a newline
            separates content from the first call). Assistant bodies (including
            their "<|end|>\\n", so the model learns to stop) are completion pieces;
            headers, the tools block and all other bodies are prompt pieces.

JSON inside templates uses json.dumps(ensure_ascii=False) with default separators
and key order as stored.
"""
from __future__ import annotations

import json
from typing import Any

TEMPLATE_VERSION = "forge-v1"
END = "<|end|>\n"
TOOLS_HEADER = "<|tools|>\n"
TOOL_CALL_OPEN = "<tool_call>"
TOOL_CALL_CLOSE = "</tool_call>"


def _json(value: Any) -> str:
  return json.dumps(value, ensure_ascii=False)


def _type_label(schema: dict) -> str:
  kind = schema.get("type")
  if isinstance(kind, list):
    label = " or ".join(kind)
  elif kind:
    label = kind
  elif "anyOf" in schema or "oneOf" in schema:
    subs = schema.get("anyOf") or schema.get("oneOf")
    label = " or ".join(_type_label(s) for s in subs if isinstance(s, dict)) or "any"
  else:
    label = "any"
  items = schema.get("items")
  if isinstance(items, dict) and items.get("type"):
    label += f" of {_type_label(items)}"
  return label


def _param_lines(schema: dict, indent: str, inputs: bool = True) -> list[str]:
  """One line per property; `inputs` adds required/optional (not said of results)."""
  lines = []
  required = set(schema.get("required", []))
  for name, sub in schema.get("properties", {}).items():
    facts = [_type_label(sub)]
    if inputs:
      facts.append("required" if name in required else "optional")
    if "default" in sub:
      facts.append(f"default: {_json(sub['default'])}")
    if "enum" in sub:
      facts.append("one of: " + ", ".join(_json(v) for v in sub["enum"]))
    line = f"{indent}- {name} ({', '.join(facts)})"
    desc = (sub.get("description") or "").strip()
    lines.append(f"{line}: {desc}" if desc else line)
    if sub.get("properties"):
      lines.extend(_param_lines(sub, indent + "  ", inputs))
    items = sub.get("items")
    if isinstance(items, dict) and items.get("properties"):
      lines.extend(_param_lines(items, indent + "  ", inputs))
  return lines


def format_call(name: str, arguments: dict) -> str:
  """Python-like call text used in tool_doc examples: f(a=1, b="x")."""
  return f"{name}(" + ", ".join(f"{k}={_json(v)}" for k, v in arguments.items()) + ")"


def render_tool_doc(rec: dict) -> str:
  lines = [f"Tool: {rec['name']}"]
  if rec.get("signature"):
    lines.append(f"Signature: {rec['signature']}")
  desc = (rec.get("description") or "").strip()
  if desc:
    lines.append(f"Description: {desc}")
  params = rec.get("parameters") or {}
  param_lines = _param_lines(params, "")
  if param_lines:
    lines.append("Parameters:")
    lines.extend(param_lines)
  else:
    lines.append("Parameters: none")
  returns = rec.get("returns")
  if returns:
    rdesc = (returns.get("description") or "").strip()
    label = _type_label(returns)
    lines.append(f"Returns: {label}: {rdesc}" if rdesc else f"Returns: {label}")
    lines.extend(_param_lines(returns, "", inputs=False))
  examples = rec.get("examples") or []
  if examples:
    lines.append("Examples:")
    for ex in examples:
      call = format_call(rec["name"], ex["arguments"])
      lines.append(f"{call} -> {_json(ex['result'])}" if "result" in ex else call)
  return "\n".join(lines) + "\n"


def _tool_spec(tool: dict) -> str:
  spec = {"name": tool["name"], "description": tool.get("description", ""),
          "parameters": tool.get("parameters", {})}
  return _json(spec)


def _assistant_body(msg: dict) -> str:
  parts = []
  if msg.get("content"):
    parts.append(msg["content"])
  for call in msg.get("tool_calls", []):
    parts.append(TOOL_CALL_OPEN + _json({"name": call["name"], "arguments": call["arguments"]})
                 + TOOL_CALL_CLOSE)
  return "\n".join(parts)


def render_chat(rec: dict) -> list[tuple[str, bool]]:
  pieces: list[tuple[str, bool]] = []
  tools = rec.get("tools") or []
  if tools:
    pieces.append((TOOLS_HEADER + "\n".join(_tool_spec(t) for t in tools) + END, False))
  for msg in rec["messages"]:
    role = msg["role"]
    if role == "tool" and msg.get("name"):
      header = f"<|tool:{msg['name']}|>\n"
    else:
      header = f"<|{role}|>\n"
    pieces.append((header, False))
    if role == "assistant":
      pieces.append((_assistant_body(msg) + END, True))
    else:
      pieces.append((msg.get("content", "") + END, False))
  return pieces


def render(record: dict) -> list[tuple[str, bool]]:
  """Renders a validated record into (text, is_completion) pieces (see module doc)."""
  kind = record["type"]
  if kind == "tool_doc":
    return [(render_tool_doc(record), True)]
  if kind in ("trajectory", "ift"):
    return render_chat(record)
  if kind == "code":
    return [(record["content"], True)]
  if kind == "text":
    title = (record.get("title") or "").strip()
    return [(f"{title}\n\n{record['content']}" if title else record["content"], True)]
  raise ValueError(f"type: unknown record type {kind!r}")


def render_text(record: dict) -> str:
  """The whole document as one string (what pre-training sees)."""
  return "".join(text for text, _ in render(record))


def prompt_completion(record: dict) -> tuple[str, str]:
  """Single-turn IFT view: everything before the last completion piece, and that piece."""
  pieces = render(record)
  last = max((i for i, (_, done) in enumerate(pieces) if done), default=None)
  if last is None:
    raise ValueError(f"record {record.get('id')!r} has no completion piece")
  return "".join(t for t, _ in pieces[:last]), pieces[last][0]
