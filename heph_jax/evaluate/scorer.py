"""BFCL's AST checker rules (bfcl_eval/eval_checker/ast_eval/ast_checker.py), non-live categories.

One call against one possible answer {fn: {param: [allowed values]}} (simple_function_checker):
  - the function name equals the answer's (dots may be written as underscores, as BFCL allows);
  - every parameter the function's schema marks required is present;
  - no parameter outside the schema's properties or the answer's parameters;
  - each value has the schema's type: an int is accepted for "float" (BFCL converts it), a float is
    never accepted for "integer", a bool is never a number;
  - each value is among the allowed ones; strings compare after BFCL's standardisation (lower case,
    spaces and , . / - _ * ^ removed, ' read as "), lists and dicts element by element;
  - an answer parameter left out must allow "" (BFCL's mark of an optional parameter).
Categories: simple / multiple: exactly one call, matching the one answer; parallel /
parallel_multiple: as many calls as answers, matched in any order; irrelevance: correct iff no call
(empty or unparseable output).
"""
from __future__ import annotations

import re
from typing import Any, Optional

_STRIP = re.compile(r"[ ,./\-_*^]")
_NUMERIC = {"integer": (int,), "float": (float, int), "number": (float, int)}


def standardize(s: str) -> str:
  return _STRIP.sub("", s).lower().replace("'", '"')


def _norm(value: Any) -> Any:
  if isinstance(value, str):
    return standardize(value)
  if isinstance(value, (list, tuple)):
    return [_norm(v) for v in value]
  if isinstance(value, dict):
    return {k: _norm(v) for k, v in value.items()}
  if isinstance(value, bool):
    return value
  if isinstance(value, (int, float)):
    return float(value)  # 5 == 5.0 once the type check has passed
  return value


def _type_ok(value: Any, schema: dict) -> bool:
  kind = schema.get("type")
  if kind in _NUMERIC:
    return isinstance(value, _NUMERIC[kind]) and not isinstance(value, bool)
  if kind == "boolean":
    return isinstance(value, bool)
  if kind == "string":
    return isinstance(value, str)
  if kind in ("array", "tuple"):
    return isinstance(value, (list, tuple))
  if kind in ("dict", "object"):
    return isinstance(value, dict)
  return True  # "any" or unknown: BFCL does not type-check it


def _same_name(got: str, want: str) -> bool:
  return got == want or got == want.replace(".", "_")


def check_call(call: dict, function: dict, answer: dict) -> Optional[str]:
  """None when `call` matches; otherwise the reason (BFCL's error kinds)."""
  (want_name, allowed), = answer.items()
  if not _same_name(call["name"], want_name):
    return f"wrong function name: {call['name']!r}, expected {want_name!r}"
  params = function.get("parameters") or {}
  props = params.get("properties") or {}
  args = call["arguments"]
  for name in params.get("required") or []:
    if name not in args:
      return f"missing required parameter {name!r}"
  for name, value in args.items():
    if name not in props or name not in allowed:
      return f"unexpected parameter {name!r}"
    if not _type_ok(value, props[name]):
      return f"parameter {name!r}: type {type(value).__name__} is not {props[name].get('type')}"
    if _norm(value) not in [_norm(v) for v in allowed[name] if v != ""]:
      return f"parameter {name!r}: value {value!r} is not among {allowed[name]!r}"
  for name, values in allowed.items():
    if name not in args and "" not in values:
      return f"optional parameter {name!r} not provided but its value is fixed"
  return None


def _function_for(name: str, functions: list[dict]) -> Optional[dict]:
  return next((f for f in functions if _same_name(name, f["name"])), None)


def _check_one(call: dict, functions: list[dict], answer: dict) -> Optional[str]:
  function = _function_for(next(iter(answer)), functions)
  if function is None:
    return f"function {next(iter(answer))!r} of the answer is not among the offered functions"
  return check_call(call, function, answer)


def _match_all(calls, functions, answers) -> bool:
  """Each answer matched to a distinct call (any order); backtracking over the few calls."""
  if not answers:
    return True
  for i, call in enumerate(calls):
    if _check_one(call, functions, answers[0]) is None and _match_all(
        calls[:i] + calls[i + 1:], functions, answers[1:]):
      return True
  return False


def score(category: str, calls: Optional[list[dict]], functions: list[dict],
          ground_truth: Optional[list[dict]]) -> tuple[bool, str]:
  """(correct, reason) for one question; calls None = the output could not be parsed."""
  if category.startswith("irrelevance"):
    return (not calls), ("no call" if not calls else f"{len(calls)} call(s) where none was expected")
  if calls is None:
    return False, "unparseable output"
  if not ground_truth:
    return False, "no ground truth"
  if category.startswith(("simple", "multiple")):
    if len(calls) != 1:
      return False, f"{len(calls)} calls, expected 1"
    reason = _check_one(calls[0], functions, ground_truth[0])
    return reason is None, reason or "ok"
  if category.startswith(("parallel", "parallel_multiple")):
    if len(calls) != len(ground_truth):
      return False, f"{len(calls)} calls, expected {len(ground_truth)}"
    ok = _match_all(list(calls), functions, list(ground_truth))
    return ok, "ok" if ok else "no one-to-one match of calls to answers"
  raise ValueError(f"category {category!r} is not scored (non-live AST categories only)")
