"""Converters: BFCL (real records, original layout), OpenAI, ToolBench, xLAM/APIGen; bad input."""
import glob
import json
import os
import re
import zipfile

import pytest

from heph_jax.data import forge
from heph_jax.data.convert import cli as convert
from heph_jax.data.convert import bfcl, get_converter, openai_chat, toolbench, xlam
from heph_jax.data.convert.common import Context

FIXTURES = os.path.join(os.path.dirname(os.path.dirname(__file__)), "fixtures")
BFCL_DIR = os.path.join(FIXTURES, "bfcl")
BFCL_DATA = os.path.join(BFCL_DIR, "bfcl_eval", "data")


def _jsonl(path):
  with open(path, encoding="utf-8") as f:
    return [json.loads(line) for line in f if line.strip()]


@pytest.fixture(scope="module")
def bfcl_records():
  return {r["id"]: r for r in bfcl.convert(BFCL_DIR)}


def test_bfcl_converts_every_question_and_func_doc(bfcl_records):
  questions = [q for path in glob.glob(os.path.join(BFCL_DATA, "BFCL_v4_*.json")) for q in _jsonl(path)]
  docs = {os.path.basename(p)[:-5]: _jsonl(p)
          for p in glob.glob(os.path.join(BFCL_DATA, "multi_turn_func_doc", "*.json"))}
  expected = {f"bfcl:{q['id']}" for q in questions}
  expected |= {f"bfcl:func_doc:{api}.{d['name']}" for api, ds in docs.items() for d in ds}
  assert set(bfcl_records) == expected
  for rec in bfcl_records.values():
    assert rec["split"] == "eval" and rec["license"] == "Apache-2.0"
    assert forge.validate(rec) == rec


def test_bfcl_single_turn_reference_calls(bfcl_records):
  answers = {a["id"]: a for a in _jsonl(os.path.join(BFCL_DATA, "possible_answer", "BFCL_v4_simple_python.json"))}
  for q in _jsonl(os.path.join(BFCL_DATA, "BFCL_v4_simple_python.json")):
    rec = bfcl_records[f"bfcl:{q['id']}"]
    assert rec["messages"][0] == q["question"][0][0]
    assert [t["name"] for t in rec["tools"]] == [f["name"] for f in q["function"]]
    assert [t["parameters"]["required"] for t in rec["tools"]] == [f["parameters"]["required"] for f in q["function"]]
    (fn, params), = answers[q["id"]]["ground_truth"][0].items()
    want = {k: next(v for v in vals if v != "") for k, vals in params.items() if any(v != "" for v in vals)}
    call, = rec["messages"][-1]["tool_calls"]
    assert call == {"name": fn, "arguments": want}
  # BFCL "dict"/"float" types become JSON Schema types.
  rec = bfcl_records["bfcl:simple_python_0"]
  assert rec["tools"][0]["parameters"]["type"] == "object"
  assert rec["messages"][-1]["tool_calls"][0]["arguments"] == {"base": 10, "height": 5, "unit": "units"}


def test_bfcl_parallel_and_irrelevance(bfcl_records):
  rec = bfcl_records["bfcl:parallel_0"]
  assert [c["arguments"] for c in rec["messages"][-1]["tool_calls"]] == [
      {"artist": "Taylor Swift", "duration": 20}, {"artist": "Maroon 5", "duration": 15}]
  irrelevant = [r for r in bfcl_records.values() if r["source"] == "bfcl:irrelevance"]
  assert irrelevant and all(r["meta"]["expect_no_call"] for r in irrelevant)
  assert all(m["role"] != "assistant" for r in irrelevant for m in r["messages"])


def test_bfcl_multi_turn_calls_match_ground_truth(bfcl_records):
  answers = {a["id"]: a for a in _jsonl(os.path.join(BFCL_DATA, "possible_answer", "BFCL_v4_multi_turn_base.json"))}
  fs_doc = [d["name"] for d in _jsonl(os.path.join(BFCL_DATA, "multi_turn_func_doc", "gorilla_file_system.json"))]
  for q in _jsonl(os.path.join(BFCL_DATA, "BFCL_v4_multi_turn_base.json")):
    rec = bfcl_records[f"bfcl:{q['id']}"]
    calls = [[c["name"] for c in m["tool_calls"]] for m in rec["messages"] if m.get("tool_calls")]
    want = [[re.match(r"(\w+)\(", s).group(1) for s in turn] for turn in answers[q["id"]]["ground_truth"] if turn]
    assert calls == want
    users = [m["content"] for m in rec["messages"] if m["role"] == "user"]
    assert users == [m["content"] for turn in q["question"] for m in turn]
    names = [t["name"] for t in rec["tools"]]
    assert set(fs_doc) - set(q.get("excluded_function", [])) <= set(names)
  # positional ground truth "sort('final_report.pdf')"-style calls get the documented name
  rec = bfcl_records["bfcl:multi_turn_miss_func_29"]
  for call in (c for m in rec["messages"] for c in m.get("tool_calls", [])):
    assert not any(k.startswith("arg") for k in call["arguments"]), call


def test_bfcl_memory_and_web_search_answers(bfcl_records):
  for cat in ("memory", "web_search"):
    answers = {a["id"]: a for a in _jsonl(os.path.join(BFCL_DATA, "possible_answer", f"BFCL_v4_{cat}.json"))}
    for qid, ans in answers.items():
      rec = bfcl_records[f"bfcl:{qid}"]
      assert rec["messages"][-1] == {"role": "assistant", "content": ans["ground_truth"][0]}
      assert rec["tools"]  # the memory / web-search API docs


def test_bfcl_reads_the_wheel_layout_from_a_zip(tmp_path, bfcl_records):
  wheel = tmp_path / "bfcl_eval-0-py3-none-any.whl"
  with zipfile.ZipFile(wheel, "w") as z:
    for path in glob.glob(os.path.join(BFCL_DIR, "**", "*.json"), recursive=True):
      z.write(path, os.path.relpath(path, BFCL_DIR))
    z.writestr("bfcl_eval/__init__.py", "")
  from_zip = {r["id"]: r for r in bfcl.convert(str(wheel))}
  assert from_zip == bfcl_records


@pytest.mark.parametrize("category", ["simple_python", "parallel", "multi_turn_base", "irrelevance"])
def test_bfcl_single_question_file(category, bfcl_records):
  """One BFCL_v*_<category>.json as published: the same records as that category of the whole
  directory (answers and multi-turn function docs found beside it)."""
  path = os.path.join(BFCL_DATA, f"BFCL_v4_{category}.json")
  single = {r["id"]: r for r in bfcl.convert(path) if r["type"] == "trajectory"}
  expected = {i: r for i, r in bfcl_records.items()
              if r["type"] == "trajectory" and r["source"].endswith(f":{category}")}
  assert single and single == expected


def test_bfcl_single_file_errors_name_file_and_line(tmp_path, capsys):
  bad = tmp_path / "BFCL_v3_simple.json"
  bad.write_text('{"id": "ok", "question": [[{"role": "user", "content": "hi"}]], "function": []}\n'
                 '{"id": "bad", "question": "not a list", "function": []}\n')
  with pytest.raises(forge.ForgeDataError, match=r"BFCL_v3_simple.json:2: question: expected an array"):
    list(bfcl.convert(str(bad)))
  assert convert.main(["--format", "bfcl", "--input", str(bad), "--output", str(tmp_path / "o.jsonl"),
                       "--on_error", "skip"]) == 0
  assert json.loads(capsys.readouterr().out)["skipped"] == 1
  other = tmp_path / "notes.json"
  other.write_text("{}")
  with pytest.raises(forge.ForgeDataError, match=r"notes.json:0: not a wheel .*BFCL_v\*_<category>.json"):
    list(bfcl.convert(str(other)))


def test_bfcl_bad_input(tmp_path):
  data = tmp_path / "data"
  data.mkdir()
  (data / "BFCL_v4_simple_python.json").write_text(
      '{"id": "ok", "question": [[{"role": "user", "content": "hi"}]], "function": []}\n'
      '{"id": "bad", "question": "not a list", "function": []}\n'
      '{"id": "broken", \n')
  with pytest.raises(forge.ForgeDataError, match=r"BFCL_v4_simple_python.json:2: question: expected an array, got string"):
    list(bfcl.convert(str(tmp_path)))
  ctx = Context(on_error="skip")
  assert [r["id"] for r in bfcl.convert(str(tmp_path), ctx=ctx)] == ["bfcl:ok"]
  assert ctx.stats.skipped == 2 and "malformed JSON" in ctx.stats.errors[1]
  with pytest.raises(forge.ForgeDataError, match=r"no BFCL_v\*_<category>.json question files"):
    list(bfcl.convert(os.path.join(FIXTURES, "openai")))
  not_zip = tmp_path / "x.whl"
  not_zip.write_bytes(b"hello")
  with pytest.raises(forge.ForgeDataError, match=r"x.whl:0: not a wheel"):
    list(bfcl.convert(str(not_zip)))


def test_openai_chat_and_tools():
  recs = list(openai_chat.convert(os.path.join(FIXTURES, "openai")))
  by_source = {}
  for r in recs:
    by_source.setdefault(r["source"], []).append(r)
  chat = by_source["openai:chat"]
  assert [r["type"] for r in chat] == ["trajectory", "trajectory"]
  first = chat[0]
  assert first["messages"][2]["tool_calls"] == [
      {"name": "get_weather", "arguments": {"city": "Paris", "unit": "celsius"}, "id": "call_1"}]
  assert first["messages"][3] == {"role": "tool", "content": '{"temp": 18, "sky": "cloudy"}',
                                  "tool_call_id": "call_1", "name": "get_weather"}
  legacy = chat[1]  # "functions" / "function_call" / role "function" / content parts
  assert legacy["messages"][0]["content"] == "Add 2 and 3."
  assert legacy["messages"][1]["tool_calls"] == [{"name": "add", "arguments": {"a": 2, "b": 3}}]
  assert legacy["messages"][2]["role"] == "tool" and legacy["tools"][0]["name"] == "add"
  docs = by_source["openai:tools"]
  assert [(d["type"], d["name"], d["parameters"]["required"]) for d in docs] == [
      ("tool_doc", "search_flights", ["origin", "destination"]),
      ("tool_doc", "convert_currency", ["amount", "from", "to"])]


def test_openai_ift_record_type():
  recs = list(openai_chat.convert(os.path.join(FIXTURES, "openai", "chat.jsonl"), record_type="ift"))
  assert {r["type"] for r in recs} == {"ift"}


def test_toolbench_layouts():
  recs = list(toolbench.convert(os.path.join(FIXTURES, "toolbench")))
  traj = [r for r in recs if r["type"] == "trajectory"]
  docs = [r for r in recs if r["type"] == "tool_doc"]
  (t,) = traj
  assert [x["name"] for x in t["tools"]] == ["getrandomword_for_random_word", "Finish"]
  assert "optional" not in t["tools"][0]["parameters"]
  roles = [m["role"] for m in t["messages"]]
  assert roles == ["system", "user", "assistant", "tool", "assistant"]
  assert t["messages"][2]["content"] == "I should call the random word API with count 3."
  assert t["messages"][2]["tool_calls"] == [{"name": "getrandomword_for_random_word", "arguments": {"count": 3}}]
  assert t["messages"][3]["name"] == "getrandomword_for_random_word"
  assert t["messages"][4]["content"].endswith("Here are 3 random words: sable, quorum, lantern.")
  # queries repeat APIs: one tool_doc per distinct API; tool env files give one per API
  assert sorted(d["name"] for d in docs) == [
      "Currency Exchange.exchange", "Currency Exchange.listquotes",
      "Dictionary.define", "Random Word.getRandomWord"]
  exchange = next(d for d in docs if d["name"] == "Currency Exchange.exchange")
  assert exchange["parameters"]["required"] == ["from", "to"]
  assert exchange["parameters"]["properties"]["q"] == {"type": "number", "description": "Source amount",
                                                       "default": "1.0"}


def test_xlam_and_apigen_mt():
  recs = {r["id"]: r for r in xlam.convert(os.path.join(FIXTURES, "xlam"))}
  r0 = recs["xlam:0"]
  assert r0["tools"][0]["parameters"] == {
      "type": "object", "required": [],
      "properties": {"type": {"type": "string", "default": "game",
                              "description": "The type of giveaways to retrieve (e.g., game, loot, beta)."}}}
  assert [c["arguments"] for c in r0["messages"][1]["tool_calls"]] == [{"type": "beta"}, {"type": "game"}]
  r1 = recs["xlam:1"]
  assert r1["tools"][1]["parameters"]["required"] == ["a", "b"]  # "int, optional" is optional
  assert r1["tools"][1]["parameters"]["properties"]["c"]["type"] == "integer"
  mt = next(r for r in recs.values() if r["source"] == "xlam:apigen_mt_sample")
  assert [m["role"] for m in mt["messages"]] == ["system", "user", "assistant", "user", "assistant", "tool", "assistant"]
  assert mt["messages"][4]["tool_calls"][0]["arguments"] == {"order_id": "#W123", "reason": "no longer needed"}
  assert mt["messages"][5]["name"] == "cancel_pending_order"


BAD_CASES = [
    # (format, file name, bytes, expected "line: reason" fragment)
    ("openai", "a.jsonl", b'{"messages": [{"role": "user", "content": "hi"}]}\n{"messages": [\n', "a.jsonl:2: malformed JSON"),
    ("openai", "a.jsonl", b'{"messages": [{"role": "user", "content": "hi"}, {"role": "assistant", "tool_calls": '
     b'[{"type": "function", "function": {"name": "f", "arguments": "{bad"}}]}]}\n',
     "a.jsonl:1: messages[1].tool_calls[0].function.arguments: not valid JSON"),
    ("openai", "a.jsonl", b'{"messages": [{"role": "wizard", "content": "hi"}]}\n', "a.jsonl:1: messages[0].role: unknown role 'wizard'"),
    ("openai", "a.jsonl", b'{"messages": [{"content": "hi"}]}\n', "a.jsonl:1: messages[0].role: missing required field"),
    ("openai", "a.jsonl", b'{"messages": [{"role": "user", "content": 7}]}\n', "a.jsonl:1: messages[0].content: expected a string"),
    ("openai", "a.jsonl", b"", "a.jsonl:0: file is empty"),
    ("openai", "a.jsonl", b'{"messages": [{"role": "user", "content": "h\xe9"}]}\n', "a.jsonl:1: not valid UTF-8"),
    ("xlam", "x.json", b'[{"id": 1, "answers": "[]", "tools": "[]"}]', "x.json:1: query: missing required field"),
    ("xlam", "x.json", b'[{"id": 1, "query": "q", "answers": "[", "tools": "[]"}]', "x.json:1: answers: the JSON string is not valid JSON"),
    ("xlam", "x.json", b'[{"id": 1, "query": "q", "answers": "{}", "tools": "[]"}]', "x.json:1: answers: expected a list"),
    ("xlam", "x.json", b'[\n{"id": 1, "query": "q", "answers": "[]", "tools": "[]"},\n{"id": 2, "query": "q\xff"}\n]', "x.json:3: not valid UTF-8"),
    ("xlam", "x.json", b'[\n{"id": 1, "query": "q", "answers": "[]", "tools": "[]"},\n{"id": 2 "query": "q"}\n]', "x.json:3: malformed JSON"),
    ("xlam", "x.json", b'{"id": 1}\n', "x.json:1: not an xLAM/APIGen layout"),
    ("toolbench", "t.json", b'[{"conversations": [{"from": "alien", "value": "x"}]}]', "t.json:1: conversations[0].from: unknown speaker 'alien'"),
    ("toolbench", "t.json", b'[{"conversations": [{"from": "function", "value": "x"}]}]', "t.json:1: conversations[0]: function output without a preceding action"),
    ("toolbench", "t.json", b'[{"tool_name": "T", "api_list": [{"name": "a", "required_parameters": "x"}]}]', "t.json:1: api_list[0].required_parameters: expected a list of parameters"),
    ("forge", "f.jsonl", b'{"type": "text", "id": "a", "source": "s"}\n', "f.jsonl:1: content: missing required field"),
]


@pytest.mark.parametrize("fmt, name, data, fragment", BAD_CASES)
def test_bad_input_gives_file_line_reason(tmp_path, fmt, name, data, fragment):
  path = tmp_path / name
  path.write_bytes(data)
  converter, _ = get_converter(fmt)
  with pytest.raises(forge.ForgeDataError) as info:
    list(converter(str(path)))
  assert str(info.value).startswith(f"{tmp_path}/{fragment}"), str(info.value)


def test_oversize_record(tmp_path):
  path = tmp_path / "big.jsonl"
  big = json.dumps({"messages": [{"role": "user", "content": "x" * 2000}]})
  path.write_text('{"messages": [{"role": "user", "content": "hi"}]}\n' + big + "\n")
  with pytest.raises(forge.ForgeDataError, match=r"big.jsonl:2: record is \d+ bytes, over the limit of 1000"):
    list(openai_chat.convert(str(path), max_record_bytes=1000))


def test_cli_skip_counts_and_raise_stops(tmp_path, capsys):
  src = tmp_path / "in.jsonl"
  src.write_bytes(b'{"messages": [{"role": "user", "content": "hi"}, {"role": "assistant", "content": "yo"}]}\n'
                  b'not json\n'
                  b'{"messages": [{"role": "user", "content": "again"}, {"role": "assistant", "content": "ok"}]}\n')
  out = tmp_path / "out.jsonl"
  assert convert.main(["--format", "openai", "--input", str(src), "--output", str(out),
                       "--on_error=skip", "--record_type", "ift"]) == 0
  summary = json.loads(capsys.readouterr().out)
  assert summary["records"] == 2 and summary["skipped"] == 1
  assert summary["errors"][0].startswith(f"{src}:2: malformed JSON")
  assert [r["type"] for r in forge.read_records(str(out)).records] == ["ift", "ift"]
  assert convert.main(["--format", "openai", "--input", str(src), "--output", str(out)]) == 2
  assert capsys.readouterr().err.startswith(f"heph_jax.data.convert: {src}:2: malformed JSON")


@pytest.mark.parametrize("args, message", [
    (["--format", "csv"], "heph_jax.data.convert: --format: unknown format 'csv' (known: bfcl, forge, openai, toolbench, xlam)"),
    (["--format", "openai", "--on_error", "ignore"], "heph_jax.data.convert: --on_error: expected raise or skip"),
    (["--format", "openai", "--split", "dev"], "heph_jax.data.convert: --split: expected one of train, eval"),
    (["--format", "openai", "--record_type", "code"], "heph_jax.data.convert: --record_type: expected trajectory or ift"),
])
def test_cli_rejects_bad_options(tmp_path, capsys, args, message):
  src = tmp_path / "in.jsonl"
  src.write_text('{"name": "f"}\n')
  rc = convert.main(args + ["--input", str(src), "--output", str(tmp_path / "o.jsonl")])
  assert rc == 2
  assert capsys.readouterr().err.startswith(message)


def test_cli_missing_input(tmp_path, capsys):
  rc = convert.main(["--format", "xlam", "--input", str(tmp_path / "nope.json"), "--output", str(tmp_path / "o.jsonl")])
  assert rc == 2 and "nope.json:0: file not found" in capsys.readouterr().err


def test_cli_bfcl_limits_per_category(tmp_path, capsys):
  out = tmp_path / "bfcl.jsonl"
  assert convert.main(["--format", "bfcl", "--input", BFCL_DIR, "--output", str(out),
                       "--limit_per_source", "1", "--exclude_source_regex", "func_doc"]) == 0
  recs = forge.read_records(str(out)).records
  sources = [r["source"] for r in recs]
  assert len(sources) == len(set(sources)) and "bfcl:multi_turn_func_doc" not in sources
  assert all(r["split"] == "eval" for r in recs)
