"""Simulated agent trajectories: real calls of allow-listed pure functions.

Every observation in a trajectory is the real result (or the real exception) of
running the function on the sampled arguments, inside a guard that forbids file,
network and process access (an audit hook) and stops calls that run too long.
Scenarios: one call; two parallel calls; two tools in sequence (in one user turn
or over two turns); a failing call followed by recovery or an explanation; and
dependent chains where the second call uses the first result.
"""
from __future__ import annotations

import contextlib
import json
import random
import signal
import sys
import threading
from typing import Any

from heph_jax.data.harvest.tools import (TOOLS, TOOLS_BY_NAME, SimTool, fmt, question_fields,
                                         to_json)

CALL_TIMEOUT_S = 1.0
_FORBIDDEN_EVENTS = ("open", "socket.", "subprocess.", "os.", "shutil.", "urllib.Request",
                     "ctypes.", "import", "compile", "exec")
_guard = threading.local()
_hook_installed = False


def _audit(event: str, _args):
  if getattr(_guard, "active", False) and event.startswith(_FORBIDDEN_EVENTS):
    raise PermissionError(f"simulated tool tried a forbidden operation: {event}")


@contextlib.contextmanager
def sandboxed(timeout_s: float | None = None):
  """Forbids I/O during the block; on the main thread also enforces a time limit."""
  global _hook_installed
  timeout_s = CALL_TIMEOUT_S if timeout_s is None else timeout_s
  if not _hook_installed:
    sys.addaudithook(_audit)  # audit hooks cannot be removed; inert when not active
    _hook_installed = True
  use_alarm = threading.current_thread() is threading.main_thread() and hasattr(signal, "setitimer")

  def on_alarm(*_):
    raise TimeoutError(f"tool call exceeded {timeout_s} s")

  if use_alarm:
    old = signal.signal(signal.SIGALRM, on_alarm)
    signal.setitimer(signal.ITIMER_REAL, timeout_s)
  _guard.active = True
  try:
    yield
  finally:
    _guard.active = False
    if use_alarm:
      signal.setitimer(signal.ITIMER_REAL, 0)
      signal.signal(signal.SIGALRM, old)


def run_tool(tool: SimTool, args: dict) -> tuple[bool, Any]:
  """(ok, result or "ExcType: message") from really calling the tool."""
  try:
    with sandboxed():
      result = tool.fn(args)
    return True, result
  except PermissionError:
    raise  # a tool that touches I/O is a bug in the allow-list, never data
  except Exception as e:  # the failure itself is the observation
    return False, f"{type(e).__name__}: {e}"


def observation(ok: bool, value: Any) -> str:
  return json.dumps({"result": to_json(value)} if ok else {"error": value}, ensure_ascii=False)


class _Builder:
  """Accumulates messages with call ids."""

  def __init__(self, rng: random.Random):
    self.rng = rng
    self.messages: list[dict] = []
    self.n_calls = 0

  def user(self, text: str):
    self.messages.append({"role": "user", "content": text})

  def call(self, calls: list[tuple[SimTool, dict]], thought: str = "") -> list[tuple[bool, Any]]:
    ids = [f"call_{self.n_calls + i}" for i in range(len(calls))]
    self.n_calls += len(calls)
    self.messages.append({"role": "assistant", "content": thought,
                          "tool_calls": [{"id": i, "name": t.name, "arguments": a}
                                         for i, (t, a) in zip(ids, calls)]})
    results = []
    for call_id, (tool, args) in zip(ids, calls):
      ok, value = run_tool(tool, args)
      self.messages.append({"role": "tool", "name": tool.name, "tool_call_id": call_id,
                            "content": observation(ok, value)})
      results.append((ok, value))
    return results

  def answer(self, text: str):
    self.messages.append({"role": "assistant", "content": text})


def _ask(rng: random.Random, tool: SimTool, args: dict) -> str:
  return rng.choice(tool.asks).format(**question_fields(args))


def _thought(rng: random.Random, tool: SimTool) -> str:
  return rng.choice(["", f"I'll use {tool.name} {tool.purpose}.", f"Let me call {tool.name} {tool.purpose}."])


def _tell(tool: SimTool, args: dict, ok: bool, value: Any) -> str:
  if ok:
    return tool.tell(args, value)
  return f"I couldn't get an answer: {tool.name} reported {value}."


def _single(b: _Builder, rng):
  tool = rng.choice(TOOLS)
  args = tool.sample(rng)
  b.user(_ask(rng, tool, args))
  [(ok, value)] = b.call([(tool, args)], _thought(rng, tool))
  b.answer(_tell(tool, args, ok, value))
  return [tool]


def _parallel(b: _Builder, rng):
  tool = rng.choice(TOOLS)
  a1, a2 = tool.sample(rng), tool.sample(rng)
  b.user(f"Two questions. First: {_ask(rng, tool, a1)} Second: {_ask(rng, tool, a2)}")
  results = b.call([(tool, a1), (tool, a2)], rng.choice(["", "Both can be answered at once."]))
  b.answer("First: " + _tell(tool, a1, *results[0]) + "\nSecond: " + _tell(tool, a2, *results[1]))
  return [tool]


def _sequence(b: _Builder, rng):
  t1, t2 = rng.sample(TOOLS, 2)
  a1, a2 = t1.sample(rng), t2.sample(rng)
  two_turns = rng.random() < 0.5
  if two_turns:
    b.user(_ask(rng, t1, a1))
    [r1] = b.call([(t1, a1)], _thought(rng, t1))
    b.answer(_tell(t1, a1, *r1))
    b.user(_ask(rng, t2, a2))
    [r2] = b.call([(t2, a2)], _thought(rng, t2))
    b.answer(_tell(t2, a2, *r2))
  else:
    b.user(f"{_ask(rng, t1, a1)} After that: {_ask(rng, t2, a2)}")
    [r1] = b.call([(t1, a1)], _thought(rng, t1))
    [r2] = b.call([(t2, a2)], f"Now the second part, {t2.purpose[3:]}." if rng.random() < 0.5 else "")
    b.answer(_tell(t1, a1, *r1) + " " + _tell(t2, a2, *r2))
  return [t1, t2]


def _error(b: _Builder, rng):
  tool = rng.choice([t for t in TOOLS if t.bad_sample is not None])
  args = tool.bad_sample(rng)
  b.user(_ask(rng, tool, args))
  [(ok, value)] = b.call([(tool, args)], _thought(rng, tool))
  used = [tool]
  if ok:  # the sampler did not fail after all: answer normally
    b.answer(_tell(tool, args, ok, value))
  elif tool.name == "math.sqrt":  # recover with the complex square root
    fallback = TOOLS_BY_NAME["cmath.sqrt"]
    [(ok2, value2)] = b.call([(fallback, args)],
                             "math.sqrt rejects negative numbers; cmath.sqrt handles them.")
    b.answer(_tell(fallback, args, ok2, value2))
    used.append(fallback)
  else:
    b.answer(f"That request cannot be completed as asked: {tool.name} failed with \"{value}\". "
             "Please check the input and try again.")
  return used


def _chain(b: _Builder, rng):
  """Second call depends on the first result."""
  if rng.random() < 0.5:
    mr, wd = TOOLS_BY_NAME["calendar.monthrange"], TOOLS_BY_NAME["calendar.weekday"]
    args = mr.sample(rng)
    b.user(f"On which weekday does the last day of month {args['month']} of {args['year']} fall?")
    [(ok, value)] = b.call([(mr, args)], "First I need the number of days in that month.")
    args2 = {"year": args["year"], "month": args["month"], "day": value[1]}
    [(ok2, value2)] = b.call([(wd, args2)], f"The month has {value[1]} days; now the weekday of day {value[1]}.")
    b.answer(f"The last day, {args['year']}-{args['month']:02d}-{value[1]:02d}, is a "
             f"{wd.tell(args2, value2)[len('It is a '):-1]}.")
    return [mr, wd]
  st, rd = TOOLS_BY_NAME["statistics.mean"], TOOLS_BY_NAME["round"]
  args = st.sample(rng)
  nd = rng.randint(0, 2)
  b.user(f"What is the mean of {question_fields(args)['data_text']}, rounded to {nd} decimal places?")
  [(ok, value)] = b.call([(st, args)], "First the mean.")
  args2 = {"number": float(value), "ndigits": nd}
  [(ok2, value2)] = b.call([(rd, args2)], f"The mean is {fmt(value)}; now round it.")
  b.answer(f"The mean rounded to {nd} decimal places is {value2}.")
  return [st, rd]


SCENARIOS = ((_single, 0.45), (_parallel, 0.15), (_sequence, 0.2), (_error, 0.12), (_chain, 0.08))


def simulate(rng: random.Random, index: int, record_type: str = "trajectory",
             id_prefix: str = "sim") -> dict:
  """One simulated record: tools offered = those used plus 1-3 distractors."""
  scenario = rng.choices([s for s, _ in SCENARIOS], weights=[w for _, w in SCENARIOS])[0]
  b = _Builder(rng)
  used = scenario(b, rng)
  names = {t.name for t in used}
  others = [t for t in TOOLS if t.name not in names]
  offered = used + rng.sample(others, rng.randint(1, 3))
  rng.shuffle(offered)
  return {
      "type": record_type,
      "id": f"{id_prefix}:{index:06d}",
      "source": "simulated:python-stdlib",
      "license": "PSF-2.0",
      "tools": [t.spec() for t in offered],
      "messages": b.messages,
      "meta": {"scenario": scenario.__name__.lstrip("_"), "python": sys.version.split()[0]},
  }
