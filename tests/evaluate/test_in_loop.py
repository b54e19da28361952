"""config.eval.function_calling: validation naming the key, and the in-loop hook's outputs."""
import json
import os

import pytest

from configs import base
from heph_jax.errors import ConfigError
from heph_jax.evaluate import in_loop

BFCL = os.path.join(os.path.dirname(os.path.dirname(__file__)), "fixtures", "bfcl")


@pytest.mark.parametrize("key,value,message", [
    ("every_steps", -1, "config.eval.function_calling.every_steps"),
    ("num_questions", 0, "config.eval.function_calling.num_questions"),
    ("max_new_tokens", -3, "config.eval.function_calling.max_new_tokens"),
    ("batch_size", 0, "config.eval.function_calling.batch_size"),
    ("categories", ["live_simple"], "config.eval.function_calling.categories"),
    ("bfcl", "/no/such/file", "config.eval.function_calling.bfcl"),
])
def test_bad_values_name_the_key(key, value, message):
  config = base.get_config()
  config.eval.function_calling[key] = value
  with pytest.raises(ConfigError, match=message.replace(".", r"\.")):
    in_loop.validate_config(config)


def test_every_steps_needs_data():
  config = base.get_config()
  config.eval.function_calling.every_steps = 10
  with pytest.raises(ConfigError, match=r"function_calling\.bfcl"):
    in_loop.validate_config(config)


def test_defaults_are_valid_and_off():
  config = base.get_config()
  in_loop.validate_config(config)
  assert not in_loop.FunctionCallingEval(config, None, None, "/unused", None).due(100, last=True)


def test_training_loop_logs_fc_accuracy_and_generations(tiny_corpus, tmp_path):
  from conftest import tiny_test_config
  from heph_jax.train import train_and_evaluate
  from heph_jax.training.metrics import read_metrics
  config = tiny_test_config(tiny_corpus, num_train_steps=2, checkpoint_every_steps=0)
  config.eval.function_calling.update(dict(bfcl=BFCL, categories=["simple", "irrelevance"], num_questions=2,
                                           every_steps=1, max_new_tokens=4, batch_size=2))
  train_and_evaluate(config, str(tmp_path))
  logged = [m for m in read_metrics(str(tmp_path)) if "fc_accuracy/simple" in m]
  assert [m["step"] for m in logged] == [1, 2]
  for m in logged:
    assert 0.0 <= m["fc_accuracy/simple"] <= 1.0 and "fc_accuracy/irrelevance" in m
  for step in (1, 2):
    records = [json.loads(l) for l in open(tmp_path / "eval" / f"step_{step}.jsonl")]
    assert [r["id"] for r in records] == ["simple_python_0", "simple_python_1", "irrelevance_0", "irrelevance_1"]
    acc = sum(r["correct"] for r in records if r["category"] == "simple") / 2
    assert acc == logged[step - 1]["fc_accuracy/simple"]
    assert all(r["prompt"].startswith("<|tools|>") for r in records)
