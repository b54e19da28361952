"""Preparation throughput and memory: tokens/s of one prepare, peak RSS for N vs 10N records.

    python benchmarks/prepare.py [--records 2000] [--factor 10]

Each measurement runs `heph_jax.data.prepare.prepare_source` in a fresh subprocess on a synthetic
corpus (the bundled data/forge/text.jsonl repeated under new ids), so peak RSS (ru_maxrss) is that
preparation's alone. Prints one JSON line:
  peak_rss_mb_n, peak_rss_mb_10n   peak RSS of preparing N and factor*N records
  rss_ratio                    peak_rss_mb_10n / peak_rss_mb_n (target <= 1.5)
  tokens_per_s_single          tokens / s of the in-process (single-core) path on factor*N records,
                               median of --repeats runs (and _range: min, max)
  tokens_per_s_2workers        the same with config.data.prepare_workers=2 (spawned tokenizer
                               processes; the reader and TFDS writer stay in the parent)
  speedup_2workers             ratio of the two medians
Apache Beam is not measured: apache-beam needs protobuf < 7 and requirements.txt pins 7.36.2, so
the parallel path is multiprocessing (heph_jax/data/prepare/parallel.py).
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

CHILD = r"""
import json, resource, sys, time
sys.path.insert(0, sys.argv[1])
from configs.base import get_config
from heph_jax.data.prepare import prepare_source
from heph_jax.data.tokenizers import load_tokenizer
config = get_config()
config.data.prepare_workers = int(sys.argv[4])
tok = load_tokenizer("sp:" + sys.argv[1] + "/data/tokenizer/tokenizer.model")
start = time.perf_counter()
p = prepare_source("text", [sys.argv[2]], tok, config.data, sys.argv[3], log=lambda *_: None)
seconds = time.perf_counter() - start
tokens = p.manifest["tokens"]["train"] + p.manifest["tokens"]["validation"]
print(json.dumps({"tokens": tokens, "seconds": seconds,
                  "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}))
"""


def _corpus(path: str, records: int) -> None:
  with open(os.path.join(REPO, "data", "forge", "text.jsonl")) as f:
    base = [json.loads(line) for line in f if line.strip()]
  with open(path, "w") as out:
    for i in range(records):
      rec = dict(base[i % len(base)], id=f"bench:{i}")
      out.write(json.dumps(rec) + "\n")


def _measure(records: int, scratch: str, workers: int = 1) -> dict:
  corpus = os.path.join(scratch, f"corpus-{records}.jsonl")
  if not os.path.exists(corpus):
    _corpus(corpus, records)
  # a fresh cache folder each run: a prepared cache would be reused, not prepared again
  cache = tempfile.mkdtemp(prefix=f"c{records}-{workers}-", dir=scratch)
  env = dict(os.environ, JAX_PLATFORMS="cpu", TF_CPP_MIN_LOG_LEVEL="3")
  out = subprocess.run([sys.executable, "-c", CHILD, REPO, corpus, cache, str(workers)],
                       capture_output=True, text=True, env=env, check=True)
  return json.loads(out.stdout.strip().splitlines()[-1])


def _rate(run: dict) -> float:
  return run["tokens"] / run["seconds"]


def main() -> None:
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("--records", type=int, default=2000)
  parser.add_argument("--factor", type=int, default=10)
  parser.add_argument("--repeats", type=int, default=3, help="throughput runs per setting")
  args = parser.parse_args()
  large_n = args.records * args.factor
  with tempfile.TemporaryDirectory() as scratch:
    small = _measure(args.records, scratch)
    # Throughput on the larger corpus: at N the fixed start-up (TensorFlow import, TFDS builder,
    # spawning workers) is most of the time. Alternate the settings so drift hits both alike.
    single, two = [], []
    for _ in range(args.repeats):
      single.append(_measure(large_n, scratch))
      two.append(_measure(large_n, scratch, workers=2))
  rates1 = sorted(_rate(r) for r in single)
  rates2 = sorted(_rate(r) for r in two)
  median1, median2 = statistics.median(rates1), statistics.median(rates2)
  print(json.dumps({
      "records_n": args.records, "factor": args.factor, "repeats": args.repeats,
      "tokens_10n": single[0]["tokens"], "load_avg_1m": round(os.getloadavg()[0], 2),
      "peak_rss_mb_n": round(small["peak_rss_mb"], 1),
      "peak_rss_mb_10n": round(max(r["peak_rss_mb"] for r in single), 1),
      "rss_ratio": round(max(r["peak_rss_mb"] for r in single) / small["peak_rss_mb"], 3),
      "tokens_per_s_single": round(median1), "tokens_per_s_single_range": [round(rates1[0]), round(rates1[-1])],
      "tokens_per_s_2workers": round(median2), "tokens_per_s_2workers_range": [round(rates2[0]), round(rates2[-1])],
      "speedup_2workers": round(median2 / median1, 3),
  }))


if __name__ == "__main__":
  main()
