"""BFCL AST rules, one hand-built case per rule (after BFCL's docs and ast_checker.py)."""
import pytest

from heph_jax.evaluate.parse import parse_calls
from heph_jax.evaluate.scorer import score, standardize

AREA = {"name": "geometry.area", "parameters": {"type": "dict", "properties": {
    "base": {"type": "integer"}, "height": {"type": "float"}, "unit": {"type": "string"},
    "tags": {"type": "array", "items": {"type": "string"}}}, "required": ["base", "height"]}}
WEATHER = {"name": "weather", "parameters": {"type": "dict", "properties": {
    "city": {"type": "string"}}, "required": ["city"]}}
GT = [{"geometry.area": {"base": [10], "height": [5.0], "unit": ["cm", ""], "tags": [["New York"], ""]}}]


def _simple(args, name="geometry.area", category="simple", functions=(AREA,), gt=GT):
  return score(category, [{"name": name, "arguments": args}], list(functions), gt)


def test_correct_call_and_optional_params():
  assert _simple({"base": 10, "height": 5.0}) == (True, "ok")
  assert _simple({"base": 10, "height": 5.0, "unit": "cm"})[0]


def test_wrong_name():
  assert not _simple({"base": 10, "height": 5.0}, name="area")[0]
  assert _simple({"base": 10, "height": 5.0}, name="geometry_area")[0]  # BFCL: dots as underscores


def test_missing_required():
  ok, why = _simple({"base": 10})
  assert not ok and "missing required" in why


def test_extra_param():
  ok, why = _simple({"base": 10, "height": 5.0, "colour": "red"})
  assert not ok and "unexpected" in why


def test_value_not_allowed():
  ok, why = _simple({"base": 11, "height": 5.0})
  assert not ok and "not among" in why
  assert not _simple({"base": 10, "height": 5.0, "unit": "inch"})[0]


def test_fixed_optional_value_must_be_given():
  gt = [{"geometry.area": {"base": [10], "height": [5.0], "unit": ["cm"]}}]
  assert not _simple({"base": 10, "height": 5.0}, gt=gt)[0]


def test_int_vs_float():
  assert _simple({"base": 10, "height": 5})[0]  # int accepted where float is expected
  ok, why = _simple({"base": 10.0, "height": 5.0})  # float never accepted for integer
  assert not ok and "type" in why
  assert not _simple({"base": True, "height": 5.0})[0]  # bool is not a number


def test_string_normalisation():
  assert standardize("New-York, N.Y.") == "newyorkny"
  assert _simple({"base": 10, "height": 5.0, "unit": " CM."})[0]
  assert _simple({"base": 10, "height": 5.0, "tags": ["new york"]})[0]  # inside lists too
  assert not _simple({"base": 10, "height": 5.0, "tags": ["boston"]})[0]


def test_multiple_picks_the_answer_function():
  gt = [{"weather": {"city": ["Paris"]}}]
  assert _simple({"city": "paris"}, name="weather", category="multiple", functions=(AREA, WEATHER), gt=gt)[0]
  assert not _simple({"base": 10, "height": 5.0}, category="multiple", functions=(AREA, WEATHER), gt=gt)[0]
  two = [{"name": "weather", "arguments": {"city": "Paris"}}] * 2
  assert not score("multiple", two, [AREA, WEATHER], gt)[0]


def test_parallel_is_order_insensitive():
  gt = [{"weather": {"city": ["Paris"]}}, {"weather": {"city": ["Rome"]}}]
  calls = [{"name": "weather", "arguments": {"city": c}} for c in ("Rome", "Paris")]
  assert score("parallel", calls, [WEATHER], gt)[0]
  assert not score("parallel", calls[:1], [WEATHER], gt)[0]  # count must match
  twice = [{"name": "weather", "arguments": {"city": "Rome"}}] * 2  # one call cannot serve two answers
  assert not score("parallel", twice, [WEATHER], gt)[0]
  mixed = [{"name": "weather", "arguments": {"city": "Rome"}},
           {"name": "geometry.area", "arguments": {"base": 10, "height": 5.0}}]
  assert score("parallel_multiple", mixed[::-1], [AREA, WEATHER], [gt[1]] + GT)[0]


def test_irrelevance():
  assert score("irrelevance", [], [WEATHER], None)[0]
  assert score("irrelevance", None, [WEATHER], None)[0]  # prose, no call
  assert not score("irrelevance", [{"name": "weather", "arguments": {"city": "x"}}], [WEATHER], None)[0]


def test_unparseable_is_a_miss():
  assert score("simple", None, [AREA], GT) == (False, "unparseable output")


@pytest.mark.parametrize("text,want", [
    ('<tool_call>{"name": "f", "arguments": {"a": 1}}</tool_call>\n'
     '<tool_call>{"name": "g", "arguments": {}}</tool_call>',
     [("f", {"a": 1}), ("g", {})]),
    ('{"name": "f", "parameters": {"a": [1, 2]}}', [("f", {"a": [1, 2]})]),
    ('[TOOL_CALLS] [{"name": "f", "arguments": {"a": "x"}}]', [("f", {"a": "x"})]),
    ('{"f": {"a": 1}}', [("f", {"a": 1})]),
    ('[math.hypot(x=3, y=4.5), g(s="t")]', [("math.hypot", {"x": 3, "y": 4.5}), ("g", {"s": "t"})]),
    ("f(a=True, b=None, c={'k': (1, 2)})", [("f", {"a": True, "b": None, "c": {"k": (1, 2)}})]),
    ("", []),
])
def test_parser(text, want):
  assert [(c["name"], c["arguments"]) for c in parse_calls(text)] == want


@pytest.mark.parametrize("text", ["I cannot help with that.", "f(1, 2)", "f(a=open('x'))",
                                  '<tool_call>{"name": </tool_call>', "f(**kw)", "[" * 500, '{"a": 1}'])
def test_parser_unparseable_is_none(text):
  assert parse_calls(text) is None


def test_real_bfcl_answers_score_their_reference_calls():
  """Fixture records (real BFCL lines): the converter's reference calls score correct, reversed
  order too for parallel, and a changed value does not."""
  import os
  from heph_jax.evaluate import data
  questions = data.load(os.path.join(os.path.dirname(os.path.dirname(__file__)), "fixtures", "bfcl"),
                        ["simple", "parallel", "irrelevance"])
  assert len(questions) == 7
  for q in questions:
    if q.category == "irrelevance":
      assert q.ground_truth is None and score(q.category, [], q.functions, None)[0]
      continue
    calls = [{"name": n, "arguments": {k: v[0] for k, v in a.items() if v[0] != ""}}
             for gt in q.ground_truth for n, a in gt.items()]
    assert score(q.category, calls, q.functions, q.ground_truth) == (True, "ok"), q.id
    assert score(q.category, calls[::-1], q.functions, q.ground_truth)[0]  # order-insensitive
    first = next(iter(calls[0]["arguments"]))
    calls[0]["arguments"][first] = 12345
    assert not score(q.category, calls, q.functions, q.ground_truth)[0], q.id


def test_bundled_forge_eval_file_reads_as_the_raw_bfcl_records():
  """data/eval/bfcl.jsonl (the converter's output) gives the same questions as the raw fixture."""
  import os
  from heph_jax.evaluate import data
  root = os.path.dirname(os.path.dirname(os.path.dirname(__file__)))
  forge = data.load(os.path.join(root, "data", "eval", "bfcl.jsonl"), list(data.CATEGORIES), limit=15)
  assert {c: sum(q.category == c for q in forge) for c in data.CATEGORIES} == dict.fromkeys(data.CATEGORIES, 15)
  raw = {q.id: q for q in data.load(os.path.join(root, "tests", "fixtures", "bfcl"), ["simple", "parallel"])}
  for q in forge:
    if q.id in raw:
      assert q.messages == raw[q.id].messages and q.ground_truth == raw[q.id].ground_truth
      assert [f["name"] for f in q.functions] == [f["name"] for f in raw[q.id].functions]
  assert sum(q.id in raw for q in forge) == 5
  assert all(q.ground_truth for q in forge if q.category != "irrelevance")


def test_bundled_reference_calls_score_correct_in_every_category():
  """75 real BFCL questions (data/eval/bfcl.jsonl): the calls their answers describe (first allowed
  value, optional ones left out) score correct; the same calls with one value changed do not.
  (The converter's own assistant turns are not used: for parallel_multiple_12 BFCL's answer lists
  an optional parameter the function does not have, and the converter writes it into the call.)"""
  import os
  from heph_jax.evaluate import data
  path = os.path.join(os.path.dirname(os.path.dirname(os.path.dirname(__file__))), "data", "eval", "bfcl.jsonl")
  for q in data.load(path, list(data.CATEGORIES)):
    if q.category == "irrelevance":
      assert score(q.category, [], q.functions, q.ground_truth)[0]
      continue
    calls = [{"name": n, "arguments": {k: v[0] for k, v in a.items() if "" not in v}}
             for gt in q.ground_truth for n, a in gt.items()]
    assert score(q.category, calls, q.functions, q.ground_truth)[0], (q.id, calls)
    changed = next(c for c in calls if c["arguments"])
    changed["arguments"][next(iter(changed["arguments"]))] = {"not": "allowed"}
    assert not score(q.category, calls, q.functions, q.ground_truth)[0], q.id
