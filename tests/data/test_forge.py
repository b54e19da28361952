"""Forge schema, validation, rendering (golden strings) and robust JSONL reading."""
import json
import os
import subprocess
import sys

import pytest

from heph_jax.data import forge

TOOL_DOC = {
    "type": "tool_doc", "id": "doc1", "source": "test",
    "name": "weather.get", "signature": "get(city, unit='c', when=None)",
    "description": "Current weather for a city.",
    "parameters": {
        "type": "object",
        "properties": {
            "city": {"type": "string", "description": "City name."},
            "unit": {"type": "string", "enum": ["c", "f"], "default": "c"},
            "when": {"type": "object", "description": "Time window.",
                     "properties": {"start": {"type": "string", "description": "ISO time."}},
                     "required": ["start"]},
            "tags": {"type": "array", "items": {"type": "string"}},
        },
        "required": ["city"],
    },
    "returns": {"type": "object", "description": "The reading.",
                "properties": {"temp": {"type": "number", "description": "Degrees."}}},
    "examples": [{"arguments": {"city": "Oslo"}, "result": {"temp": -3.5}}],
}

TOOL_DOC_TEXT = """Tool: weather.get
Signature: get(city, unit='c', when=None)
Description: Current weather for a city.
Parameters:
- city (string, required): City name.
- unit (string, optional, default: "c", one of: "c", "f")
- when (object, optional): Time window.
  - start (string, required): ISO time.
- tags (array of string, optional)
Returns: object: The reading.
- temp (number): Degrees.
Examples:
weather.get(city="Oslo") -> {"temp": -3.5}
"""

TRAJECTORY = {
    "type": "trajectory", "id": "t1", "source": "test",
    "tools": [{"name": "add", "description": "Add.",
               "parameters": {"type": "object", "properties": {"a": {"type": "number"}},
                              "required": ["a"]}}],
    "messages": [
        {"role": "user", "content": "1+2?"},
        {"role": "assistant", "content": "Let me add.",
         "tool_calls": [{"id": "c0", "name": "add", "arguments": {"a": 1, "b": 2}}]},
        {"role": "tool", "name": "add", "tool_call_id": "c0", "content": "3"},
        {"role": "assistant", "content": "It is 3."},
    ],
}

TRAJECTORY_PIECES = [
    ('<|tools|>\n{"name": "add", "description": "Add.", "parameters": {"type": "object", '
     '"properties": {"a": {"type": "number"}}, "required": ["a"]}}<|end|>\n', False),
    ("<|user|>\n", False),
    ("1+2?<|end|>\n", False),
    ("<|assistant|>\n", False),
    ('Let me add.\n<tool_call>{"name": "add", "arguments": {"a": 1, "b": 2}}</tool_call><|end|>\n', True),
    ("<|tool:add|>\n", False),
    ("3<|end|>\n", False),
    ("<|assistant|>\n", False),
    ("It is 3.<|end|>\n", True),
]


def test_render_tool_doc_golden():
  rec = forge.validate(TOOL_DOC)
  assert forge.render(rec) == [(TOOL_DOC_TEXT, True)]


def test_render_tool_doc_without_parameters_golden():
  rec = forge.validate({"type": "tool_doc", "id": "x", "source": "s", "name": "now"})
  assert forge.render_text(rec) == "Tool: now\nParameters: none\n"


def test_render_trajectory_golden_pieces():
  rec = forge.validate(TRAJECTORY)
  assert forge.render(rec) == TRAJECTORY_PIECES
  assert forge.render_text(rec) == "".join(t for t, _ in TRAJECTORY_PIECES)


def test_render_ift_marks_only_assistant_bodies_as_completion():
  rec = forge.validate({"type": "ift", "id": "i", "source": "s", "messages": [
      {"role": "system", "content": "Be brief."}, {"role": "user", "content": "Hi"},
      {"role": "assistant", "content": "Hello!"}]})
  assert forge.render(rec) == [
      ("<|system|>\n", False), ("Be brief.<|end|>\n", False),
      ("<|user|>\n", False), ("Hi<|end|>\n", False),
      ("<|assistant|>\n", False), ("Hello!<|end|>\n", True)]
  prompt, completion = forge.prompt_completion(rec)
  assert prompt == "<|system|>\nBe brief.<|end|>\n<|user|>\nHi<|end|>\n<|assistant|>\n"
  assert completion == "Hello!<|end|>\n"


def test_render_code_and_text_golden():
  code = forge.validate({"type": "code", "id": "c", "source": "s", "content": "x = 1\n"})
  text = forge.validate({"type": "text", "id": "t", "source": "s", "title": "Intro",
                         "content": "Body."})
  assert forge.render(code) == [("x = 1\n", True)]
  assert forge.render(text) == [("Intro\n\nBody.", True)]


def test_validate_fills_defaults_and_keeps_input_unchanged():
  raw = {"type": "trajectory", "id": "a", "source": "s",
         "messages": [{"role": "user", "content": "q"}]}
  before = json.dumps(raw, sort_keys=True)
  rec = forge.validate(raw)
  assert rec["split"] == "train" and rec["tools"] == []
  assert json.dumps(raw, sort_keys=True) == before
  doc = forge.validate({"type": "tool_doc", "id": "d", "source": "s", "name": "f",
                        "parameters": {"properties": {"x": {"type": "integer"}}}})
  assert doc["parameters"] == {"type": "object", "properties": {"x": {"type": "integer"}},
                               "required": []}
  assert doc["examples"] == [] and doc["returns"] is None
  assert forge.validate(rec) == rec  # normalizing twice changes nothing


def _traj(**changes):
  rec = json.loads(json.dumps(TRAJECTORY))
  rec.update(changes)
  return rec


@pytest.mark.parametrize("record, where", [
    ({"id": "a", "source": "s"}, "type: missing required field"),
    ({"type": "poem", "id": "a", "source": "s"}, "type: unknown record type 'poem'"),
    ({"type": "text", "source": "s", "content": "x"}, "id: missing required field"),
    ({"type": "text", "id": "a", "source": " ", "content": "x"}, "source: must be a non-empty string"),
    ({"type": "text", "id": 3, "source": "s", "content": "x"}, "id: expected a string, got integer"),
    ({"type": "text", "id": "a", "source": "s", "content": ""}, "content: must be a non-empty string"),
    ({"type": "text", "id": "a", "source": "s", "content": "x", "body": "y"}, "body: unknown field"),
    ({"type": "text", "id": "a", "source": "s", "content": "x", "split": "test"}, "split: unknown split 'test'"),
    (_traj(messages=[{"role": "robot", "content": "x"}]), "messages[0].role: unknown role 'robot'"),
    (_traj(messages=[]), "messages: must hold at least one message"),
    (_traj(messages=[{"role": "user", "content": "x"}, {"role": "tool", "content": "3"}]),
     "messages[1]: a tool message (observation) must follow an assistant message with tool_calls"),
    (_traj(messages=[{"role": "user", "content": "x", "tool_calls": [{"name": "f", "arguments": {}}]}]),
     "messages[0].tool_calls: only assistant messages may call tools"),
    (_traj(messages=[{"role": "user", "content": "x"},
                     {"role": "assistant", "tool_calls": [{"name": "f", "arguments": "{}"}]}]),
     "messages[1].tool_calls[0].arguments: expected an object, got string"),
    (_traj(messages=[{"role": "user", "content": "x"},
                     {"role": "assistant", "tool_calls": [{"name": "f", "arguments": {"x": float("nan")}}]}]),
     "messages[1].tool_calls[0].arguments.x: non-finite number"),
    (_traj(messages=[{"role": "user", "content": "x"}, {"role": "assistant", "content": ""}]),
     "messages[1]: assistant message has neither content nor tool_calls"),
    (_traj(tools=[{"name": "f", "parameters": {"type": "object", "properties": {}, "required": ["q"]}}]),
     "tools[0].parameters.required[0]: required property 'q' is not in properties"),
    (_traj(tools=[{"name": "f", "parameters": {"type": "object", "properties": {"q": {"type": "dict"}}}}]),
     "tools[0].parameters.properties.q.type: unknown JSON Schema type 'dict'"),
    (_traj(tools=[{"name": "f", "parameters": {"type": "array"}}]),
     "tools[0].parameters.type: parameters must be a schema of type 'object'"),
    ({"type": "ift", "id": "a", "source": "s", "messages": [{"role": "user", "content": "q"}]},
     "messages: an ift record needs at least one assistant message"),
    ({"type": "tool_doc", "id": "a", "source": "s", "name": "f", "examples": [{"result": 1}]},
     "examples[0].arguments: missing required field"),
])
def test_validate_errors_name_the_field(record, where):
  with pytest.raises(forge.ForgeDataError) as info:
    forge.validate(record)
  assert str(info.value).startswith(where), str(info.value)
  assert isinstance(info.value, ValueError)


def _write(tmp_path, name, data: bytes):
  path = tmp_path / name
  path.write_bytes(data)
  return str(path)


GOOD = json.dumps({"type": "text", "id": "a", "source": "s", "content": "hello"}).encode()


@pytest.mark.parametrize("data, line, reason", [
    (GOOD + b"\n{\"type\": \"text\", \n", 2, "malformed JSON: "),
    (GOOD + b"\n[1, 2]\n", 2, "expected a JSON object per line, got an array"),
    (GOOD + b"\n" + json.dumps({"type": "text", "id": "b", "source": "s"}).encode() + b"\n", 2,
     "content: missing required field"),
    (GOOD + b"\n" + json.dumps({"type": "text", "id": "b", "source": "s", "content": 5}).encode(), 2,
     "content: expected a string, got integer"),
    (b"", 0, "file is empty"),
    (b"\n  \n", 0, "file is empty"),
    (GOOD + b"\n" + GOOD.replace(b"hello", b"h\xffllo").replace(b'"a"', b'"b"') + b"\n", 2,
     "not valid UTF-8 (byte 0xff"),
    (GOOD + b"\n" + GOOD.replace(b"hello", b"x" * 5000).replace(b'"a"', b'"b"') + b"\n", 2,
     "record is 5"),
    (GOOD + b"\n" + GOOD + b"\n", 2, "id: duplicate id 'a' (first seen on line 1)"),
])
def test_read_records_bad_input_raises_with_file_line_reason(tmp_path, data, line, reason):
  path = _write(tmp_path, "bad.jsonl", data)
  with pytest.raises(forge.ForgeDataError) as info:
    forge.read_records(path, max_record_bytes=4096)
  assert str(info.value).startswith(f"{path}:{line}: {reason}"), str(info.value)


def test_read_records_skip_counts_and_reports(tmp_path):
  lines = [GOOD, b"{oops", b"[]", GOOD.replace(b'"a"', b'"b"').replace(b"hello", b"\xc3\x28"),
           json.dumps({"type": "text", "id": "c", "source": "s", "content": "ok"}).encode()]
  path = _write(tmp_path, "mixed.jsonl", b"\n".join(lines) + b"\n")
  result = forge.read_records(path, on_error="skip")
  assert [r["id"] for r in result.records] == ["a", "c"]
  assert result.stats.records == 2 and result.stats.skipped == 3
  assert [e.split(": ", 1)[0] for e in result.stats.errors] == [f"{path}:2", f"{path}:3", f"{path}:4"]


def test_read_records_missing_file_and_bad_policy(tmp_path):
  missing = str(tmp_path / "nope.jsonl")
  with pytest.raises(forge.ForgeDataError, match=r"nope.jsonl:0: file not found"):
    forge.read_records(missing)
  with pytest.raises(forge.ForgeDataError, match=r"on_error: expected one of raise, skip, got 'ignore'"):
    forge.read_records(_write(tmp_path, "ok.jsonl", GOOD), on_error="ignore")


def test_write_then_read_round_trip(tmp_path):
  path = str(tmp_path / "out" / "t.jsonl")
  assert forge.write_records(path, [TRAJECTORY, TOOL_DOC]) == 2
  records = forge.read_records(path).records
  assert records == [forge.validate(TRAJECTORY), forge.validate(TOOL_DOC)]
  with pytest.raises(forge.ForgeDataError, match=r"record 0 \(id 'x'\): type: unknown record type"):
    forge.write_records(str(tmp_path / "bad.jsonl"), [{"type": "blob", "id": "x", "source": "s"}])
  assert sorted(os.listdir(tmp_path)) == ["out"]  # the failed write left no half file


BUNDLED = ("tool_doc", "trajectory", "code", "text", "ift")


@pytest.mark.parametrize("name", BUNDLED)
def test_bundled_sample_is_valid_training_data(repo_root, name):
  path = repo_root / "data" / "forge" / f"{name}.jsonl"
  result = forge.read_records(str(path))
  assert len(result.records) >= 200
  for rec in result.records:
    assert rec["type"] == name
    assert forge.is_train(rec)  # no eval records in the training sample
    pieces = forge.render(rec)
    assert pieces and all(isinstance(t, str) and t for t, _ in pieces)
    if name in ("trajectory", "ift"):
      assert any(done for _, done in pieces)
      assert any(m["role"] == "assistant" for m in rec["messages"])


def test_bundled_data_stays_small(repo_root):
  total = sum(p.stat().st_size for p in (repo_root / "data").rglob("*") if p.is_file())
  assert total < 4.5 * 1024 * 1024


def test_forge_imports_without_tensorflow():
  code = ("import sys, heph_jax.data.forge, heph_jax.data.convert, heph_jax.data.decontaminate; "
          "bad = [m for m in ('tensorflow', 'jax', 'seqio') if m in sys.modules]; "
          "assert not bad, bad")
  subprocess.run([sys.executable, "-c", code], check=True,
                 cwd=os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))))
