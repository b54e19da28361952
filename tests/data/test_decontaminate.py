"""Decontamination: n-gram overlap with eval sets drops training records; counts are reported."""
import json
import os

import pytest

from heph_jax.data import decontaminate, forge

FIXTURES = os.path.join(os.path.dirname(os.path.dirname(__file__)), "fixtures")
BFCL_DIR = os.path.join(FIXTURES, "bfcl")

EVAL_Q = ("Find the area of a triangle with a base of 10 units and height of 5 units "
          "then report it in square meters please")  # 22 tokens


def _text(i, content):
  return {"type": "text", "id": f"t{i}", "source": "s", "content": content}


def _index(texts, n=13, min_tokens=8):
  index = decontaminate.NgramIndex(name="ev", n=n, min_tokens=min_tokens)
  for t in texts:
    index.add_text(t)
  return index


def _kept(records, index):
  report = decontaminate.FileReport(path="x")
  kept = [r["id"] for r in decontaminate.filter_records(records, [index], report)]
  return kept, report


def test_tokens_ignore_case_and_punctuation():
  assert decontaminate.tokens("Hello, World! x_1 (2)") == ["hello", "world", "x_1", "2"]


def test_shared_13_gram_drops_but_12_does_not():
  words = EVAL_Q.split()
  with_13 = "Intro words here. " + " ".join(words[3:16]).upper() + " and more."
  with_12 = "Intro words here. " + " ".join(words[3:15]) + " and more."
  kept, report = _kept([_text(0, with_13), _text(1, with_12), _text(2, "unrelated text")], _index([EVAL_Q]))
  assert kept == ["t1", "t2"]
  assert report.dropped_by_eval_set == {"ev": 1}
  assert report.examples[0]["ngram"] == " ".join(w.lower() for w in words[3:16])


def test_ngram_length_is_configurable():
  words = EVAL_Q.split()
  five = "x " + " ".join(words[5:10]) + " y"
  assert _kept([_text(0, five)], _index([EVAL_Q], n=13))[0] == ["t0"]
  assert _kept([_text(0, five)], _index([EVAL_Q], n=5, min_tokens=3))[0] == []


def test_short_eval_texts_match_whole_or_are_ignored():
  index = _index(["What is the weather like in Paris today", "Hi there"])  # 8 and 2 tokens
  kept, _ = _kept([_text(0, "so: what is the weather like in Paris today?"), _text(1, "hi there friend")], index)
  assert kept == ["t1"]


def test_fields_are_compared_separately_and_template_json_never_matches():
  tool = {"name": "f", "description": "d",
          "parameters": {"type": "object", "properties": {"a": {"type": "string", "description": "x"},
                                                          "b": {"type": "string", "description": "y"}},
                         "required": ["a", "b"]}}
  ev = forge.validate({"type": "trajectory", "id": "e", "source": "bfcl", "split": "eval", "tools": [tool] * 3,
                       "messages": [{"role": "user", "content": "alpha beta gamma"}]})
  index = decontaminate.NgramIndex(name="ev", n=5, min_tokens=5)
  index.add_record(ev)
  train = forge.validate({"type": "trajectory", "id": "t", "source": "s", "tools": [tool] * 3,
                          "messages": [{"role": "user", "content": "delta epsilon zeta"},
                                       {"role": "assistant", "content": "alpha beta gamma"}]})
  assert index.match_record(train) is None
  # a tool-call argument string is content and does count
  leak = json.loads(json.dumps(train))
  leak["messages"][1] = {"role": "assistant", "content": "",
                         "tool_calls": [{"name": "f", "arguments": {"q": "one two three four five"}}]}
  index.add_text("one two three four five six")
  assert index.match_record(forge.validate(leak)) == "one two three four five"


def test_eval_split_records_are_always_dropped():
  rec = dict(_text(0, "fine"), split="eval")
  kept, report = _kept([rec], _index([]))
  assert kept == [] and report.dropped_eval_split == 1


def test_cli_with_bfcl_directory_as_eval_set(tmp_path, capsys):
  with open(os.path.join(BFCL_DIR, "bfcl_eval", "data", "BFCL_v4_simple_python.json")) as f:
    question = json.loads(f.readline())["question"][0][0]["content"]
  train = tmp_path / "train.jsonl"
  forge.write_records(str(train), [
      _text(0, "A harmless paragraph about compilers and parsers."),
      forge.validate({"type": "ift", "id": "leak", "source": "s", "messages": [
          {"role": "user", "content": question}, {"role": "assistant", "content": "25"}]}),
      _text(2, "Another clean record."),
  ])
  out_dir = tmp_path / "clean"
  report_path = tmp_path / "report.json"
  rc = decontaminate.main(["--train", str(train), "--eval", f"bfcl={BFCL_DIR}",
                           "--output_dir", str(out_dir), "--report", str(report_path)])
  assert rc == 0
  summary = json.loads(capsys.readouterr().out)
  assert summary == json.loads(report_path.read_text())
  (file_report,) = summary["files"]
  assert file_report["kept"] == 2 and file_report["dropped"] == 1
  assert file_report["dropped_by_eval_set"] == {"bfcl": 1}
  assert [r["id"] for r in forge.read_records(str(out_dir / "train.jsonl")).records] == ["t0", "t2"]


@pytest.mark.parametrize("args, message", [
    (["--eval", "nopath"], "heph_jax.data.decontaminate: --eval: expected NAME=PATH"),
    (["--eval", "x=/does/not/exist.jsonl"], "heph_jax.data.decontaminate: /does/not/exist.jsonl:0: file not found"),
    (["--eval", "x=EVAL", "--ngram", "0"], "heph_jax.data.decontaminate: --ngram and --min_tokens must be positive"),
])
def test_cli_bad_arguments(tmp_path, capsys, args, message):
  train = tmp_path / "t.jsonl"
  forge.write_records(str(train), [_text(0, "x")])
  ev = tmp_path / "e.jsonl"
  forge.write_records(str(ev), [_text(0, "y")])
  args = [a.replace("EVAL", str(ev)) for a in args]
  assert decontaminate.main(["--train", str(train), "--output_dir", str(tmp_path / "o")] + args) == 2
  assert capsys.readouterr().err.startswith(message)


def test_cli_refuses_to_overwrite_input(tmp_path, capsys):
  train = tmp_path / "t.jsonl"
  forge.write_records(str(train), [_text(0, "x")])
  rc = decontaminate.main(["--train", str(train), "--eval", f"e={train}", "--output_dir", str(tmp_path)])
  assert rc == 2 and "would overwrite the input" in capsys.readouterr().err


def test_bundled_training_sample_is_clean_of_bundled_bfcl(repo_root):
  index = decontaminate.build_index("bfcl", str(repo_root / "data" / "eval" / "bfcl.jsonl"))
  assert index.texts > 500
  for name in ("tool_doc", "trajectory", "code", "text", "ift"):
    recs = forge.read_records(str(repo_root / "data" / "forge" / f"{name}.jsonl")).records
    kept, report = _kept(recs, index)
    assert report.dropped == 0, report.examples
