"""heph_jax.data.inspect: its shares and packing efficiency equal a recount of the same batches,
its rendered examples are text of the right source with the loss-weighted spans marked, and the CLI
prints text or one JSON object."""
import json
import re

import numpy as np
import pytest

from conftest import REPO_ROOT, config_flags_for, tiny_test_config
from heph_jax.data.pipeline import inspect as inspect_lib
from heph_jax.data.pipeline import DataPipeline
from heph_jax.data.tokenizers import load_tokenizer

RATES = {"code": 0.4, "text": 0.3, "tool_doc": 0.2, "trajectory": 0.1}


def _squash(text):
  return " ".join(text.split())  # the test tokenizer normalizes whitespace


@pytest.fixture(scope="module")
def cache(tmp_path_factory):
  return str(tmp_path_factory.mktemp("cache"))


def _config(corpus, cache, **overrides):
  rates = {f"data.rates.{t}": r for t, r in RATES.items()}
  return tiny_test_config(corpus, **{"data.cache_dir": cache, **rates, **overrides})


def test_shares_and_efficiency_equal_a_recount_of_the_same_batches(tiny_corpus, cache):
  summary = inspect_lib.summarize(_config(tiny_corpus, cache), num_batches=12, examples=1)

  config = _config(tiny_corpus, cache)
  pipe = DataPipeline(config, load_tokenizer(config.data.tokenizer), log=lambda *_: None)
  it = pipe.train_iterator(8)
  counts, real = np.zeros(4), 0
  for _ in range(12):
    batch = it.next_with_tasks()
    counts += np.bincount(batch["task_ids"][batch["segment_ids"] > 0], minlength=4)
    real += int((batch["segment_ids"] > 0).sum())
  assert summary["slots"] == 12 * 8 * 64
  assert summary["tokens"] == real
  assert summary["packing_efficiency"] == pytest.approx(real / (12 * 8 * 64))
  for i, task in enumerate(pipe.tasks):
    info = summary["tasks"][task]
    assert info["tokens"] == counts[i]
    assert info["share"] == pytest.approx(counts[i] / counts.sum())
    assert info["rate"] == pytest.approx(RATES[task])
    assert 0 < info["loss_tokens"] <= info["tokens"]


def test_examples_are_text_of_their_own_source(tiny_corpus, cache):
  summary = inspect_lib.summarize(_config(tiny_corpus, cache), num_batches=6, examples=3,
                                  max_chars=10**6)
  sources = {}
  for task, path in tiny_corpus["sources"].items():
    with open(path) as f:
      sources[task] = [_squash(json.loads(line)["content"]) for line in f]
  for task, info in summary["tasks"].items():
    assert info["examples"], task
    for text in info["examples"]:
      # Pre-training weighs every token but BOS: one marked span per packed chunk.
      marked = re.findall(r"\[\[(.*?)\]\]", text, flags=re.S)
      assert len(marked) == 1, text
      body = _squash(marked[0].replace("<s>", "").replace("</s>", ""))
      assert len(body) > 5 and any(body in doc for doc in sources[task]), (task, body)


def test_render_marks_exactly_the_weighted_tokens(tiny_corpus):
  tok = load_tokenizer(tiny_corpus["tokenizer"])
  ids, weights = tok.encode_pieces([("The user asks a question. ", False),
                                    ("The assistant answers it.", True),
                                    (" Then the user thanks them.", False)], add_eos=False)
  text = inspect_lib.render_weighted(tok, ids, weights)
  marked = re.findall(r"\[\[(.*?)\]\]", text)
  assert [_squash(m) for m in marked] == ["The assistant answers it."]
  assert _squash(text.replace("[[", " ").replace("]]", " ").replace("<s>", "")) == _squash(
      "The user asks a question. The assistant answers it. Then the user thanks them.")
  assert inspect_lib.render_weighted(tok, ids, [0] * len(ids)).count("[[") == 0


def _argv(corpus, cache, *extra):
  return ["--config", str(REPO_ROOT / "configs" / "tiny.py"), *config_flags_for(corpus),
          f"--config.data.cache_dir={cache}", *extra]


def test_cli_prints_json_and_text(tiny_corpus, cache, capsys):
  assert inspect_lib.main(_argv(tiny_corpus, cache, "--num_batches=2", "--json")) == 0
  summary = json.loads(capsys.readouterr().out)
  assert summary["num_batches"] == 2 and summary["seq_len"] == 64
  assert set(summary["tasks"]) == set(tiny_corpus["sources"])
  assert sum(t["share"] for t in summary["tasks"].values()) == pytest.approx(1.0)

  assert inspect_lib.main(_argv(tiny_corpus, cache, "--num_batches=2", "--examples=1")) == 0
  out = capsys.readouterr().out
  assert "packing efficiency" in out and "[[" in out
  for task in tiny_corpus["sources"]:
    assert re.search(rf"^{task}\s+0\.\d+\s+0\.\d+", out, flags=re.M), out


def test_cli_names_the_bad_flag(tiny_corpus, cache, capsys):
  assert inspect_lib.main(_argv(tiny_corpus, cache, "--num_batches=0")) == 2
  assert "--num_batches" in capsys.readouterr().err
  assert inspect_lib.main(["--num_batches=1"]) == 2
  assert "--config is required" in capsys.readouterr().err
