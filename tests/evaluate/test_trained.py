"""End to end: a tiny model trained on a handful of BFCL-style trajectories (forge-v1 template)
answers exactly those questions (AST-correct calls) and fails on unseen ones."""
import os

import jax
import jax.numpy as jnp
import numpy as np
import optax

from heph_jax.data import forge
from heph_jax.data.tokenizers import load_tokenizer
from heph_jax.evaluate import data, prompts, run
from heph_jax.model import llama
from heph_jax.model.config import ModelConfig

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(__file__)))
BFCL = os.path.join(ROOT, "tests", "fixtures", "bfcl")
SEEN = ("simple_python_0", "simple_python_1", "parallel_0")


def _reference_texts(q):
  """(prompt, completion) as the trainer renders the converter's trajectory: the first allowed
  value of each argument, "" (may be omitted) left out."""
  calls = [{"name": name, "arguments": {k: v[0] for k, v in args.items() if v and v[0] != ""}}
           for call in q.ground_truth for name, args in call.items()]
  record = {"type": "trajectory", "tools": prompts.tools(q),
            "messages": q.messages + [{"role": "assistant", "content": "", "tool_calls": calls}]}
  return forge.prompt_completion(record)


def _train(cfg, tokenizer, questions, steps=150):
  rows = []
  for q in questions:
    prompt_text, completion_text = _reference_texts(q)
    assert prompts.render_prompt(q, tokenizer) == prompt_text  # the eval prompt is the trained one
    prompt = [tokenizer.bos_id] + tokenizer.encode(prompt_text)
    completion = tokenizer.encode(completion_text) + [tokenizer.eos_id]
    rows.append((prompt + completion, [0] * len(prompt) + [1] * len(completion)))
  width = max(len(t) for t, _ in rows) + 1
  tokens = np.zeros((len(rows), width), np.int32)
  weights = np.zeros((len(rows), width), np.float32)
  for i, (t, w) in enumerate(rows):
    tokens[i, :len(t)], weights[i, :len(w)] = t, w
  inputs, targets, weights = tokens[:, :-1], tokens[:, 1:], weights[:, 1:]
  params = llama.init(cfg, jax.random.PRNGKey(0))
  tx = optax.adam(3e-3)

  def loss_fn(p):
    logp = jax.nn.log_softmax(llama.apply(cfg, p, inputs))
    nll = -jnp.take_along_axis(logp, targets[..., None], axis=-1)[..., 0]
    return (nll * weights).sum() / weights.sum()

  @jax.jit
  def step(p, opt):
    loss, grads = jax.value_and_grad(loss_fn)(p)
    updates, opt = tx.update(grads, opt, p)
    return optax.apply_updates(p, updates), opt, loss

  opt = tx.init(params)
  for _ in range(steps):
    params, opt, loss = step(params, opt)
  return params, float(loss)


def test_trained_model_scores_its_questions_and_not_unseen_ones(tmp_path):
  tokenizer = load_tokenizer("sp:" + os.path.join(ROOT, "data", "tokenizer", "tokenizer.model"))
  questions = data.load(BFCL, ["simple", "parallel"])
  seen = [q for q in questions if q.id in SEEN]
  unseen = [q for q in questions if q.id not in SEEN]
  assert len(seen) == 3 and len(unseen) == 2
  cfg = ModelConfig(vocab_size=tokenizer.vocab_size, hidden_size=64, intermediate_size=128,
                    num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=2,
                    max_position_embeddings=1024, dtype="float32")
  params, loss = _train(cfg, tokenizer, seen)
  assert loss < 0.05
  records, acc = run.evaluate(cfg, params, tokenizer, seen + unseen, max_new_tokens=100, batch_size=5)
  by_id = {r["id"]: r for r in records}
  assert all(by_id[i]["correct"] for i in SEEN), [by_id[i]["output"] for i in SEEN]
  assert not any(by_id[q.id]["correct"] for q in unseen)
  assert acc == {"parallel": 0.5, "simple": 2 / 3}
  run.write_jsonl(str(tmp_path / "eval.jsonl"), records)
  assert len((tmp_path / "eval.jsonl").read_text().splitlines()) == 5
