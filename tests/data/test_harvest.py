"""Harvester: docstring parsing, signature -> JSON Schema, real simulated calls, sources, determinism."""
import calendar
import filecmp
import importlib
import inspect
import json
import math
import random
import statistics
import typing

import pytest

from heph_jax.data import forge, harvest
from heph_jax.data.harvest import sim as harvest_sim, sources as harvest_sources, tooldocs as harvest_tooldocs
from heph_jax.data.harvest.docstrings import parse_docstring
from heph_jax.data.harvest.tools import TOOLS, SimTool


def test_parse_google_docstring():
  doc = parse_docstring("""Scale a vector.

  Longer prose.

  Args:
    x (list[float]): The vector,
      over two lines.
    factor: How much.

  Returns:
    list[float]: The scaled vector.

  Raises:
    ValueError: never.
  """)
  assert doc.description == "Scale a vector.\n\nLonger prose."
  assert doc.params == {"x": "The vector, over two lines.", "factor": "How much."}
  assert doc.param_types == {"x": "list[float]"}
  assert (doc.return_type, doc.returns) == ("list[float]", "The scaled vector.")


def test_parse_numpy_docstring():
  doc = parse_docstring("""Clip values.

  Parameters
  ----------
  a : array_like
      Input.
  a_min, a_max : float
      Bounds.

  Returns
  -------
  out : ndarray
      Clipped copy.
  """)
  assert doc.description == "Clip values."
  assert doc.params == {"a": "Input.", "a_min": "Bounds.", "a_max": "Bounds."}
  assert doc.param_types == {"a": "array_like", "a_min": "float", "a_max": "float"}
  assert (doc.return_type, doc.returns) == ("ndarray", "Clipped copy.")


def test_parse_sphinx_docstring():
  doc = parse_docstring("""Fetch a page.

  :param str url: The address.
  :param timeout: Seconds
      to wait.
  :type timeout: float
  :returns: The body.
  :rtype: str
  """)
  assert doc.description == "Fetch a page."
  assert doc.params == {"url": "The address.", "timeout": "Seconds to wait."}
  assert doc.param_types == {"url": "str", "timeout": "float"}
  assert (doc.return_type, doc.returns) == ("str", "The body.")


@pytest.mark.parametrize("annotation, schema", [
    (int, {"type": "integer"}), (float, {"type": "number"}), (bool, {"type": "boolean"}),
    (list[str], {"type": "array", "items": {"type": "string"}}),
    (typing.Optional[int], {"type": ["integer", "null"]}),
    (dict[str, int], {"type": "object"}),
    (typing.Literal["a", "b"], {"enum": ["a", "b"]}),
    ("str", {"type": "string"}),
    (inspect.Parameter.empty, {}),
])
def test_annotation_schema(annotation, schema):
  assert harvest_tooldocs.annotation_schema(annotation) == schema


def _sample_function(city: str, days: int = 3, *, units: typing.Literal["metric", "imperial"] = "metric",
                     callback=print) -> dict:
  """Forecast for a city.

  Args:
    city: City name.
    days: How many days.
    units: Unit system.
    callback: Called with the result.

  Returns:
    The forecast.

  >>> _sample_function("Oslo", 2)
  {'city': 'Oslo'}
  """


def test_tool_doc_from_callable_golden():
  rec = harvest_tooldocs.tool_doc_from_callable(_sample_function, "_sample_function", "test_harvest")
  assert rec["name"] == "test_harvest._sample_function"
  assert rec["description"] == "Forecast for a city."
  assert rec["parameters"] == {"type": "object", "required": ["city"], "properties": {
      "city": {"type": "string", "description": "City name."},
      "days": {"type": "integer", "description": "How many days.", "default": 3},
      "units": {"enum": ["metric", "imperial"], "description": "Unit system.", "default": "metric"},
      "callback": {"description": "Called with the result."},  # repr default left out
  }}
  assert rec["returns"] == {"type": "object", "description": "The forecast."}
  assert rec["examples"] == [{"arguments": {"city": "Oslo", "days": 2}, "result": {"city": "Oslo"}}]
  assert forge.validate(rec)["signature"].startswith("_sample_function(city: str, days: int = 3")


def test_stdlib_tool_docs_match_inspect_and_real_results():
  docs = {r["name"]: r for r in harvest_tooldocs.harvest_module("statistics")}
  assert len(docs) >= 15
  for name, rec in docs.items():
    forge.validate(rec)
    fn = getattr(statistics, name.split(".", 1)[1].split(".")[0])
    if callable(fn) and "." not in name.split(".", 1)[1]:
      params = [p for p in inspect.signature(fn).parameters if p not in ("self", "cls")]
      kinds = inspect.signature(fn).parameters
      assert list(rec["parameters"]["properties"]) == [
          p for p in params if kinds[p].kind != inspect.Parameter.VAR_KEYWORD]
  # doctest examples hold the real function's results
  examples = [(n, ex) for n, r in docs.items() for ex in r["examples"]]
  assert len(examples) >= 5
  for name, ex in examples:
    fn = getattr(statistics, name.split(".")[-1])
    assert fn(**ex["arguments"]) == pytest.approx(ex["result"])


def test_bundled_tool_docs_describe_real_signatures(repo_root):
  recs = forge.read_records(str(repo_root / "data" / "forge" / "tool_doc.jsonl")).records
  checked = 0
  for rec in recs:
    module = importlib.import_module(rec["meta"]["module"])
    obj = module
    try:
      for part in rec["name"][len(rec["meta"]["module"]) + 1:].split("."):
        obj = getattr(obj, part)
      sig = inspect.signature(obj)
    except (AttributeError, TypeError, ValueError):
      continue
    names = [p.name for p in sig.parameters.values()
             if p.name not in ("self", "cls") and p.kind is not inspect.Parameter.VAR_KEYWORD]
    assert list(rec["parameters"]["properties"]) == names, rec["name"]
    checked += 1
  assert checked >= 0.9 * len(recs)


# Independent reference: the test calls the standard library directly.
REFERENCE = {
    "math.gcd": lambda a: math.gcd(*a["integers"]),
    "math.comb": lambda a: math.comb(a["n"], a["k"]),
    "math.factorial": lambda a: math.factorial(a["n"]),
    "math.sqrt": lambda a: math.sqrt(a["x"]),
    "statistics.mean": lambda a: statistics.mean(a["data"]),
    "statistics.median": lambda a: statistics.median(a["data"]),
    "str.count": lambda a: a["text"].count(a["sub"]),
    "calendar.weekday": lambda a: calendar.weekday(a["year"], a["month"], a["day"]),
    "calendar.monthrange": lambda a: list(calendar.monthrange(a["year"], a["month"])),
    "round": lambda a: round(a["number"], a.get("ndigits", 0)),
}


def test_simulated_observations_are_real_results():
  rng = random.Random(123)
  checked = errors = 0
  for i in range(300):
    rec = forge.validate(harvest_sim.simulate(rng, i))
    offered = {t["name"] for t in rec["tools"]}
    calls = {}
    for msg in rec["messages"]:
      for call in msg.get("tool_calls", []):
        assert call["name"] in offered
        calls[call["id"]] = call
      if msg["role"] == "tool":
        call = calls[msg["tool_call_id"]]
        assert msg["name"] == call["name"]
        observed = json.loads(msg["content"])
        ref = REFERENCE.get(call["name"])
        if ref is None:
          continue
        try:
          want = {"result": ref(call["arguments"])}
        except Exception as e:  # the recorded error must be the real one
          want = {"error": f"{type(e).__name__}: {e}"}
          errors += 1
        assert observed == want
        checked += 1
    assert rec["messages"][-1]["role"] == "assistant" and "tool_calls" not in rec["messages"][-1]
  assert checked > 50 and errors > 0


def test_sandbox_blocks_io_and_stops_slow_calls(tmp_path, monkeypatch):
  opener = SimTool("open_file", lambda a: open(tmp_path / "x.txt", "w"), {}, (), lambda r: {}, ("q",),
                   lambda a, r: "", "to open")
  with pytest.raises(PermissionError, match="forbidden operation: open"):
    harvest_sim.run_tool(opener, {})
  assert not (tmp_path / "x.txt").exists()

  def spin(_):
    while True:
      pass

  monkeypatch.setattr(harvest_sim, "CALL_TIMEOUT_S", 0.2)
  slow = SimTool("spin", spin, {}, (), lambda r: {}, ("q",), lambda a, r: "", "to spin")
  ok, value = harvest_sim.run_tool(slow, {})
  assert not ok and value.startswith("TimeoutError")
  assert harvest_sim.run_tool(TOOLS[0], {"integers": [12, 18]}) == (True, 6)  # guard is off again
  open(tmp_path / "after.txt", "w").close()


def test_all_allow_listed_tools_have_valid_specs():
  rng = random.Random(0)
  for tool in TOOLS:
    spec = tool.spec()
    assert spec["description"], tool.name
    forge.validate({"type": "trajectory", "id": "x", "source": "s", "tools": [spec],
                    "messages": [{"role": "user", "content": "q"}]})
    args = tool.sample(rng)
    assert set(tool.required) <= set(args) <= set(tool.params)


def test_chunk_source_is_lossless_and_bounded():
  source = "".join(f"def f{i}(x):\n  '''Doc {i}.'''\n  return x * {i}\n\n\n" for i in range(40))
  chunks = harvest_sources.chunk_source(source, 300)
  assert "".join(text for _, _, text in chunks) == source
  assert all(len(text) <= 300 for _, _, text in chunks)
  assert all(text.startswith("def ") for _, _, text in chunks)  # cut between statements
  lines = source.splitlines(keepends=True)
  for first, last, text in chunks:
    assert "".join(lines[first - 1:last]) == text


def test_split_paragraphs_keeps_all_text():
  paras = [f"Paragraph {i} " + "word " * (i * 7) for i in range(30)]
  text = "\n\n".join(p.strip() for p in paras)
  chunks = harvest_sources.split_paragraphs(text, 400)
  assert all(len(c) <= 400 for c in chunks)
  assert "".join(chunks).replace("\n", "").replace(" ", "") == text.replace("\n", "").replace(" ", "")


def test_harvest_is_deterministic_and_valid(tmp_path):
  counts = {"tool_doc": 0, "trajectory": 20, "code": 8, "text": 8, "ift": 0}
  a = harvest.harvest(str(tmp_path / "a"), seed=7, counts=counts)
  b = harvest.harvest(str(tmp_path / "b"), seed=7, counts=counts)
  assert a == b
  for name in ("trajectory", "code", "text"):
    assert filecmp.cmp(tmp_path / "a" / f"{name}.jsonl", tmp_path / "b" / f"{name}.jsonl", shallow=False)
    result = forge.read_records(str(tmp_path / "a" / f"{name}.jsonl"))
    assert len(result.records) == counts[name]
  assert not (tmp_path / "a" / "tool_doc.jsonl").exists()
  code = forge.read_records(str(tmp_path / "a" / "code.jsonl")).records
  for rec in code:  # chunks are verbatim slices of the installed standard library
    with open(harvest_sources.stdlib_dir() + "/" + rec["path"][len("Lib/"):], encoding="utf-8") as f:
      lines = f.read().splitlines(keepends=True)
    first, last = rec["meta"]["lines"]
    assert "".join(lines[first - 1:last]) == rec["content"]
  other = harvest.harvest(str(tmp_path / "c"), seed=8, counts=counts)
  assert not filecmp.cmp(tmp_path / "a" / "trajectory.jsonl", tmp_path / "c" / "trajectory.jsonl", shallow=False)
  assert other["files"]["trajectory.jsonl"]["records"] == 20


def test_pydoc_topics_become_text_records():
  import pydoc_data.topics
  recs = list(harvest_sources.harvest_text(random.Random(0), 10 ** 6, 3000))
  pydoc = [r for r in recs if r["source"] == "python-docs:pydoc_topics"]
  topic = "assert"
  joined = "".join(r["content"] for r in pydoc if r["id"].startswith(f"pydoc:{topic}#"))
  assert joined.replace("\n", "").replace(" ", "") == \
      pydoc_data.topics.topics[topic].strip().replace("\n", "").replace(" ", "")
  assert any(r["source"] == "package-metadata:long_description" for r in recs)
