"""Harvests Forge records from the machine itself (the paper's "Python modules" source).

    python -m heph_jax.data.harvest --output data/forge [--seed 0] \\
        [--tool_docs 300 --trajectories 300 --code 250 --text 250 --ift 300] \\
        [--max_chars 3000] [--decontaminate_against bfcl=data/eval/bfcl.jsonl]

Writes tool_doc.jsonl, trajectory.jsonl, code.jsonl, text.jsonl, ift.jsonl and
manifest.json (counts, bytes, seed, versions) into --output:

  tool_doc    signatures and docstrings of installed modules (harvest_tooldocs),
              doctest lines with literal results become examples
  trajectory  simulated agent runs that really call allow-listed pure functions
              (harvest_sim / harvest_tools); observations are real results/errors
  code        standard-library sources cut at top-level statements
  text        pydoc topics, package long descriptions, stdlib module docstrings
  ift         chat samples for Stage III: more simulated runs (other seeds) and
              tool-documentation Q&A built from the harvested tool docs

Same seed + same installed packages => byte-identical files. A count of 0 skips
a type; a negative count keeps everything found (sizes then grow to many MB).
"""
from __future__ import annotations

import json
import os
import random
import sys
from typing import Iterable

from absl import flags

from heph_jax.data import decontaminate
from heph_jax.data.harvest import sim as harvest_sim, sources as harvest_sources, tooldocs as harvest_tooldocs
from heph_jax.data.forge.render import render_text
from heph_jax.data.forge.schema import validate
from heph_jax import cli
from heph_jax.data.forge.io import write_records

OUTPUT_FILES = ("tool_doc", "trajectory", "code", "text", "ift")


def _sample(rng: random.Random, items: list, limit: int) -> list:
  if limit < 0 or limit >= len(items):
    return list(items)
  picked = sorted(rng.sample(range(len(items)), limit))
  return [items[i] for i in picked]


def tool_doc_records(rng: random.Random, limit: int, max_chars: int) -> list[dict]:
  docs = [validate(r) for r in harvest_tooldocs.harvest_tool_docs()]
  docs = [d for d in docs if len(render_text(d)) <= max_chars]
  return _sample(rng, docs, limit)


def doc_qa(rng: random.Random, doc: dict, index: int) -> dict:
  """An IFT sample asking what a documented function does and how to call it."""
  name = doc["name"]
  question = rng.choice([
      f"What does `{name}` do, and which arguments does it take?",
      f"Explain the Python function {name} and its parameters.",
      f"I want to use {name}. How do I call it?",
  ])
  answer = render_text(doc).rstrip("\n")
  return {"type": "ift", "id": f"docqa:{index:06d}", "source": doc["source"],
          **({"license": doc["license"]} if "license" in doc else {}),
          "messages": [{"role": "user", "content": question},
                       {"role": "assistant", "content": answer}],
          "meta": {"tool_doc_id": doc["id"]}}


def ift_records(rng: random.Random, limit: int, docs: list[dict]) -> list[dict]:
  if limit == 0:
    return []
  n_sim = limit - limit * 2 // 5 if limit > 0 else 400
  out = [harvest_sim.simulate(rng, i, record_type="ift", id_prefix="simift") for i in range(n_sim)]
  n_qa = (limit - n_sim) if limit > 0 else len(docs)
  for i, doc in enumerate(_sample(rng, docs, n_qa)):
    out.append(doc_qa(rng, doc, i))
  return out


def harvest(output: str, seed: int = 0, counts: dict | None = None, max_chars: int = 3000,
            decontaminate_against: Iterable[tuple[str, str]] = ()) -> dict:
  """Writes the five files; returns the manifest."""
  counts = dict({"tool_doc": 300, "trajectory": 300, "code": 250, "text": 250, "ift": 300},
                **(counts or {}))
  # One generator per output, derived from the seed, so changing one count leaves
  # the other files unchanged.
  rngs = {name: random.Random(f"{seed}:{name}") for name in OUTPUT_FILES}
  records: dict[str, list[dict]] = {}
  all_docs = None
  if counts["tool_doc"] or counts["ift"]:
    all_docs = tool_doc_records(rngs["tool_doc"], -1, max_chars)
  records["tool_doc"] = _sample(random.Random(f"{seed}:tool_doc:pick"), all_docs or [], counts["tool_doc"]) \
      if counts["tool_doc"] else []
  n_traj = counts["trajectory"] if counts["trajectory"] >= 0 else 2000
  records["trajectory"] = [harvest_sim.simulate(rngs["trajectory"], i) for i in range(n_traj)]
  code_limit = counts["code"] if counts["code"] >= 0 else 10 ** 9
  records["code"] = list(harvest_sources.harvest_code(rngs["code"], code_limit, max_chars))
  text_limit = counts["text"] if counts["text"] >= 0 else 10 ** 9
  records["text"] = list(harvest_sources.harvest_text(rngs["text"], text_limit, max_chars,
                                                      harvest_tooldocs.STDLIB_MODULES))
  # IFT Q&A draws on tool docs that are not in tool_doc.jsonl, so the two do not repeat.
  used = {d["id"] for d in records["tool_doc"]}
  records["ift"] = ift_records(rngs["ift"], counts["ift"],
                               [d for d in all_docs or [] if d["id"] not in used])

  indexes = [decontaminate.build_index(name, path) for name, path in decontaminate_against]
  manifest = {"seed": seed, "max_chars": max_chars, "python": sys.version.split()[0],
              "template": "forge-v1", "files": {}}
  os.makedirs(output, exist_ok=True)
  for name in OUTPUT_FILES:
    recs = records[name]
    report = decontaminate.FileReport(path=name)
    if indexes:
      recs = list(decontaminate.filter_records(recs, indexes, report))
    path = os.path.join(output, f"{name}.jsonl")
    if not recs:
      if os.path.exists(path):
        os.remove(path)
      continue
    n = write_records(path, recs)
    manifest["files"][f"{name}.jsonl"] = {
        "records": n, "bytes": os.path.getsize(path),
        "dropped_by_decontamination": report.dropped}
  if indexes:
    manifest["decontaminated_against"] = {i.name: i.texts for i in indexes}
  with open(os.path.join(output, "manifest.json"), "w", encoding="utf-8") as f:
    json.dump(manifest, f, indent=2, sort_keys=True)
    f.write("\n")
  return manifest


def _reexec_with_fixed_hash_seed():
  """Some libraries build docstrings from sets at import time; set order follows the
  string hash seed. Re-running under PYTHONHASHSEED=0 makes the output reproducible."""
  if os.environ.get("PYTHONHASHSEED") != "0":
    env = dict(os.environ, PYTHONHASHSEED="0")
    os.execve(sys.executable, [sys.executable, "-m", "heph_jax.data.harvest", *sys.argv[1:]], env)


def define_flags(values, argv):
  del argv
  flags.DEFINE_string("output", None, "output directory", flag_values=values)
  flags.DEFINE_integer("seed", 0, "random seed", flag_values=values)
  for name, default in (("tool_docs", 300), ("trajectories", 300), ("code", 250), ("text", 250),
                        ("ift", 300)):
    flags.DEFINE_integer(name, default, f"records to keep (default {default}; 0 = none, -1 = all)",
                         flag_values=values)
  flags.DEFINE_integer("max_chars", 3000, "longest rendered tool doc / code or text chunk, in characters",
                       lower_bound=200, flag_values=values)
  flags.DEFINE_multi_string("decontaminate_against", [],
                            "NAME=PATH: drop records sharing 13-grams with this eval set (repeatable)",
                            flag_values=values)
  flags.mark_flag_as_required("output", flag_values=values)


def _harvest(args, positional) -> int:
  del positional
  against = [decontaminate._parse_eval(s) for s in args.decontaminate_against]
  manifest = harvest(args.output, args.seed,
                     {"tool_doc": args.tool_docs, "trajectory": args.trajectories,
                      "code": args.code, "text": args.text, "ift": args.ift},
                     args.max_chars, against)
  print(json.dumps(manifest, indent=2, sort_keys=True))
  return 0


def main(argv: list[str] | None = None) -> int:
  return cli.run("heph_jax.data.harvest", define_flags, _harvest, argv)
