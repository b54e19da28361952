"""BFCL (Berkeley Function Calling Leaderboard, bfcl-eval wheel, Apache-2.0) -> Forge eval records.

Input: the wheel itself (read with zipfile, never installed), a directory in the wheel's layout
(`bfcl_eval/data/...`, `data/...` or the data folder itself), or one question file
`BFCL_v*_<category>.json` (its possible_answer/ and multi_turn_func_doc/ siblings used if present):

  BFCL_v4_<category>.json              JSON Lines questions: {"id", "question": [[turn msgs]],
                                       "function": [docs]} or, multi-turn,
                                       {"involved_classes", "initial_config", "path", ...}
  possible_answer/BFCL_v4_<cat>.json   {"id", "ground_truth"}: [{fn: {param: [allowed values]}}],
                                       multi-turn: [["f(a=1)", ...] per turn], memory and
                                       web search: ["answer", ...]
  multi_turn_func_doc/<api>.json       {"name", "description", "parameters", "response"}

Output (every record has split "eval" and license Apache-2.0):
  trajectory per question: the functions offered as tools, the user turns, and when
    a ground truth exists the assistant's reference calls (first allowed value of
    each argument; "" = may be omitted) or reference answer. The original ground
    truth stays in meta.ground_truth; irrelevance categories get meta.expect_no_call.
  tool_doc per multi-turn API function (id bfcl:func_doc:<api>.<name>).

Skipped: unused_datasets/, memory_prereq_conversation/ and format_sensitivity (an
index of ids, not questions).
"""
from __future__ import annotations

import ast
import os
import re
import zipfile
from typing import Any, Iterator

from heph_jax.data.convert.common import Context, need
from heph_jax.data.forge.schema import ForgeDataError, normalize_schema

LICENSE = "Apache-2.0"
# bfcl_eval/constants/executable_backend_config.py: class -> function-doc file.
CLASS_DOC_FILES = {
    "GorillaFileSystem": "gorilla_file_system", "MathAPI": "math_api", "MessageAPI": "message_api",
    "TwitterAPI": "posting_api", "TicketAPI": "ticket_api", "TradingBot": "trading_bot",
    "TravelAPI": "travel_booking", "VehicleControlAPI": "vehicle_control",
    "WebSearchAPI": "web_search", "MemoryAPI": "memory_kv",
}
_QUESTION_FILE = re.compile(r"^BFCL_v\d+_(.+)\.json$")
_SKIP_DIRS = ("unused_datasets/", "memory_prereq_conversation/")


class Tree:
  """The data folder of a BFCL wheel or directory: relative path -> bytes."""

  def __init__(self, path: str):
    self.path = path
    self.files: dict[str, str] = {}  # relative path under data/ -> location
    if os.path.isfile(path) and not zipfile.is_zipfile(path):
      self._zip = None
      self._one_question_file(path)
    elif os.path.isfile(path):
      self._zip = zipfile.ZipFile(path)
      for member in sorted(self._zip.namelist()):
        rel = _data_relative(member)
        if rel is not None:
          self.files[rel] = member
    elif os.path.isdir(path):
      self._zip = None
      for dirpath, dirnames, filenames in os.walk(path):
        dirnames.sort()
        for name in sorted(filenames):
          full = os.path.join(dirpath, name)
          rel = _data_relative(os.path.relpath(full, path).replace(os.sep, "/"), top_level_ok=True)
          if rel is not None:
            self.files[rel] = full
    else:
      raise ForgeDataError(f"{path}:0: file not found")
    if not any(_QUESTION_FILE.match(r) for r in self.files):
      raise ForgeDataError(f"{path}:0: no BFCL_v*_<category>.json question files found "
                           "(expected the bfcl-eval wheel or a directory in its data/ layout)")

  def _one_question_file(self, path: str) -> None:
    """A single BFCL_v*_<category>.json, as BFCL publishes them; the answers and multi-turn
    function docs beside it (possible_answer/, multi_turn_func_doc/) are used when present."""
    base = os.path.basename(path)
    if not _QUESTION_FILE.match(base):
      raise ForgeDataError(f"{path}:0: not a wheel (zip) file, a BFCL_v*_<category>.json question "
                           "file, nor a directory in the BFCL layout")
    self.files[base] = path
    folder = os.path.dirname(path)
    answer = os.path.join(folder, "possible_answer", base)
    if os.path.isfile(answer):
      self.files[f"possible_answer/{base}"] = answer
    docs = os.path.join(folder, "multi_turn_func_doc")
    if os.path.isdir(docs):
      for name in sorted(os.listdir(docs)):
        if name.endswith(".json"):
          self.files[f"multi_turn_func_doc/{name}"] = os.path.join(docs, name)

  def name(self, rel: str) -> str:
    return f"{self.path}!{self.files[rel]}" if self._zip else self.files[rel]

  def read(self, rel: str) -> bytes:
    if self._zip:
      return self._zip.read(self.files[rel])
    with open(self.files[rel], "rb") as f:
      return f.read()


def _data_relative(member: str, top_level_ok: bool = False) -> str | None:
  if not member.endswith(".json"):
    return None
  for marker in ("bfcl_eval/data/", "data/"):
    if member.startswith(marker) or f"/{marker}" in member:
      rel = member[member.index(marker) + len(marker):]
      break
  else:
    if not top_level_ok:
      return None
    rel = member
  if rel.startswith(_SKIP_DIRS):
    return None
  return rel


def _tool(fn: Any, where: str) -> dict:
  name = need(fn, "name", str, where)
  out = {"name": name, "description": need(fn, "description", str, where, optional=True, default=""),
         "parameters": normalize_schema(need(fn, "parameters", dict, where, optional=True, default={}))}
  out["parameters"]["type"] = "object"
  if isinstance(fn.get("response"), dict):
    out["returns"] = normalize_schema(fn["response"])
  return out


def _messages(question: Any, where: str) -> list[list[dict]]:
  """Turns of {role, content} messages; empty turns are kept (they align with answers)."""
  if not isinstance(question, list):
    raise ForgeDataError(f"{where}: expected a list of turns, got {type(question).__name__}")
  turns = []
  for t, turn in enumerate(question):
    if isinstance(turn, dict):  # a few files hold a flat list of messages
      turn = [turn]
    if not isinstance(turn, list):
      raise ForgeDataError(f"{where}[{t}]: expected a list of messages")
    msgs = []
    for m, msg in enumerate(turn):
      w = f"{where}[{t}][{m}]"
      msgs.append({"role": need(msg, "role", str, w), "content": need(msg, "content", str, w)})
    turns.append(msgs)
  return turns


def _pick(values: Any) -> tuple[bool, Any]:
  """(present, value) from BFCL's list of allowed values ("" means: may be omitted)."""
  if not isinstance(values, list):
    return True, values
  for v in values:
    if v != "":
      return True, v
  return False, None


def _reference_calls(ground_truth: list, where: str) -> list[dict]:
  calls = []
  for i, entry in enumerate(ground_truth):
    if not isinstance(entry, dict) or len(entry) != 1:
      raise ForgeDataError(f"{where}[{i}]: expected {{function: {{param: [values]}}}}")
    (fn, params), = entry.items()
    if not isinstance(params, dict):
      raise ForgeDataError(f"{where}[{i}].{fn}: expected an object of parameters")
    args = {}
    for key, values in params.items():
      present, value = _pick(values)
      if present:
        args[key] = value
    calls.append({"name": fn, "arguments": args})
  return calls


def parse_call(text: str, param_order: dict[str, list[str]]) -> dict:
  """'mv(source="a", destination="b")' -> {"name": "mv", "arguments": {...}} (literals only)."""
  try:
    node = ast.parse(text.strip(), mode="eval").body
  except SyntaxError as e:
    raise ForgeDataError(f"cannot parse call {text!r}: {e.msg}") from None
  if not isinstance(node, ast.Call):
    raise ForgeDataError(f"not a function call: {text!r}")
  name = ast.unparse(node.func)
  args = {}
  order = param_order.get(name, [])
  for i, arg in enumerate(node.args):
    key = order[i] if i < len(order) else f"arg{i}"
    args[key] = _literal(arg, text)
  for kw in node.keywords:
    if kw.arg is None:
      raise ForgeDataError(f"**kwargs in call {text!r}")
    args[kw.arg] = _literal(kw.value, text)
  return {"name": name, "arguments": args}


def _literal(node: ast.AST, text: str) -> Any:
  try:
    value = ast.literal_eval(node)
  except ValueError:
    raise ForgeDataError(f"non-literal argument in call {text!r}") from None
  return _jsonable(value)


def _jsonable(value: Any) -> Any:
  if isinstance(value, (tuple, set)):
    return [_jsonable(v) for v in value]
  if isinstance(value, list):
    return [_jsonable(v) for v in value]
  if isinstance(value, dict):
    return {str(k): _jsonable(v) for k, v in value.items()}
  return value


def _base(category: str, qid: str) -> dict:
  return {"type": "trajectory", "id": f"bfcl:{qid}", "source": f"bfcl:{category}",
          "split": "eval", "license": LICENSE}


def _single_turn(obj: dict, category: str, answer: Any, where: str) -> dict:
  qid = need(obj, "id", str, where)
  functions = need(obj, "function", list, where)
  rec = _base(category, qid)
  rec["tools"] = [_tool(f, f"function[{i}]") for i, f in enumerate(functions)]
  messages = [m for turn in _messages(need(obj, "question", list, where), "question") for m in turn]
  meta: dict[str, Any] = {"category": category}
  if answer is not None:
    gt = need(answer, "ground_truth", list, "ground_truth")
    calls = _reference_calls(gt, "ground_truth")
    if calls:
      messages.append({"role": "assistant", "content": "", "tool_calls": calls})
    meta["ground_truth"] = gt
  if "irrelevance" in category:
    meta["expect_no_call"] = True
  rec["messages"] = messages
  rec["meta"] = meta
  return rec


def _multi_turn(obj: dict, category: str, answer: Any, docs: dict[str, list[dict]],
                where: str) -> dict:
  qid = need(obj, "id", str, where)
  classes = need(obj, "involved_classes", list, where)
  excluded = set(obj.get("excluded_function") or [])
  tools = []
  for cls in classes:
    doc_file = CLASS_DOC_FILES.get(cls)
    if doc_file is None or doc_file not in docs:
      raise ForgeDataError(f"involved_classes: no function docs for class {cls!r}")
    tools.extend(t for t in docs[doc_file] if t["name"] not in excluded)
  order = {t["name"]: list(t["parameters"].get("properties", {})) for t in tools}
  turns = _messages(need(obj, "question", list, where), "question")
  gt = need(answer, "ground_truth", list, "ground_truth") if answer is not None else None
  messages = []
  for t, turn in enumerate(turns):
    messages.extend(turn)
    if gt is None or t >= len(gt):
      continue
    step = gt[t]
    if isinstance(step, list) and step and all(isinstance(s, str) for s in step) and "(" in step[0]:
      calls = [parse_call(s, order) for s in step]
      messages.append({"role": "assistant", "content": "", "tool_calls": calls})
    elif isinstance(step, str) and t == len(turns) - 1:
      messages.append({"role": "assistant", "content": step})
  if gt is not None and gt and all(isinstance(g, str) for g in gt) and not any(
      "(" in g for g in gt) and messages[-1]["role"] != "assistant":
    messages.append({"role": "assistant", "content": gt[0]})  # memory / web search answers
  rec = _base(category, qid)
  rec["tools"] = tools
  rec["messages"] = [m for m in messages if m["role"] != "user" or m["content"].strip()]
  meta = {"category": category, "involved_classes": classes}
  for key in ("initial_config", "path", "missed_function", "excluded_function", "scenario"):
    if key in obj:
      meta[key] = obj[key]
  if gt is not None:
    meta["ground_truth"] = gt
  rec["meta"] = meta
  return rec


def convert(path: str, *, ctx: Context | None = None, **kwargs) -> Iterator[dict]:
  """Forge records (split "eval") from a BFCL wheel, directory or single question file."""
  ctx = ctx or Context(**kwargs)
  tree = Tree(path)
  # Function docs first: multi-turn questions refer to them.
  docs: dict[str, list[dict]] = {}
  for rel in sorted(r for r in tree.files if r.startswith("multi_turn_func_doc/")):
    api = os.path.splitext(os.path.basename(rel))[0]
    name = tree.name(rel)
    docs[api] = []
    for line, obj in ctx.documents(tree.read(rel), name):
      def build(obj=obj, api=api):
        tool = _tool(obj, "")
        docs[api].append(tool)
        rec = {"type": "tool_doc", "id": f"bfcl:func_doc:{api}.{tool['name']}",
               "source": "bfcl:multi_turn_func_doc", "split": "eval", "license": LICENSE,
               "name": tool["name"], "description": tool["description"],
               "parameters": tool["parameters"], "meta": {"api": api}}
        if "returns" in tool:
          rec["returns"] = tool["returns"]
        return rec
      yield from ctx.emit(name, line, build)
  for rel in sorted(tree.files):
    m = _QUESTION_FILE.match(rel)
    if not m or m.group(1) == "format_sensitivity":
      continue
    category = m.group(1)
    answers: dict[str, dict] = {}
    answer_rel = f"possible_answer/{rel}"
    if answer_rel in tree.files:
      for _, ans in ctx.documents(tree.read(answer_rel), tree.name(answer_rel)):
        if isinstance(ans.get("id"), str):
          answers[ans["id"]] = ans
    name = tree.name(rel)
    for line, obj in ctx.documents(tree.read(rel), name):
      def build(obj=obj):
        answer = answers.get(obj.get("id"))
        if "function" in obj:
          return _single_turn(obj, category, answer, "")
        if "involved_classes" in obj:
          return _multi_turn(obj, category, answer, docs, "")
        raise ForgeDataError("neither 'function' (single-turn) nor 'involved_classes' (multi-turn)")
      yield from ctx.emit(name, line, build)
