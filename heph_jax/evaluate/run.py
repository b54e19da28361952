"""Generate for BFCL questions, parse, score: per-question records and per-category accuracy."""
from __future__ import annotations

import collections
import json
import os
from typing import Optional, Sequence

import jax

from heph_jax.evaluate import parse, prompts, scorer
from heph_jax.model import decode


def evaluate(model_cfg, params, tokenizer, questions: Sequence, max_new_tokens: int = 128,
             batch_size: int = 8, sampling: Optional[decode.Sampling] = None):
  """(records [{id, category, prompt, output, calls, correct, reason}], {category: accuracy})."""
  sampling = sampling or decode.Sampling(max_new_tokens=max_new_tokens, eos_ids=prompts.stop_ids(tokenizer),
                                         pad_id=tokenizer.pad_id, stop_sequences=prompts.stop_sequences(tokenizer))
  stops = prompts.stop_strings(tokenizer)
  records = []
  for start in range(0, len(questions), batch_size):
    batch = list(questions[start:start + batch_size])
    texts = [prompts.render_prompt(q, tokenizer) for q in batch]
    ids = [tokenizer.encode(t, add_special_tokens=False) for t in texts]
    if tokenizer.bos_id is not None:
      ids = [i if i[:1] == [tokenizer.bos_id] else [tokenizer.bos_id] + i for i in ids]
    rows = len(batch)
    ids += [ids[-1]] * (batch_size - rows)  # fixed batch shape: one compilation, shardable
    outs = decode.generate(model_cfg, params, ids, sampling, rng=jax.random.PRNGKey(start))
    for q, text, out in zip(batch, texts, outs[:rows]):
      output, _ = decode.truncate_at_stop(tokenizer.decode([t for t in out if t not in sampling.eos_ids]), stops)
      calls = parse.parse_calls(output)
      correct, reason = scorer.score(q.category, calls, q.functions, q.ground_truth)
      records.append({"id": q.id, "category": q.category, "prompt": text, "output": output,
                      "calls": calls, "correct": bool(correct), "reason": reason})
  return records, accuracies(records)


def accuracies(records) -> dict[str, float]:
  hits, totals = collections.Counter(), collections.Counter()
  for r in records:
    totals[r["category"]] += 1
    hits[r["category"]] += r["correct"]
  return {c: hits[c] / totals[c] for c in sorted(totals)}


def write_jsonl(path: str, records) -> None:
  os.makedirs(os.path.dirname(path) or ".", exist_ok=True)
  with open(path, "w", encoding="utf-8") as f:
    for r in records:
      f.write(json.dumps(r, ensure_ascii=False, default=str) + "\n")
