#!/usr/bin/env bash
# The accelerator checks of issue 17 in one run of under 10 minutes (benchmarks/README.md):
#   1. benchmarks/accelerator_step.py: the real train step of a ~1.1B Llama (configs/bench_1b.py)
#      on the machine's accelerators; prints MFU against the published and a measured bf16 peak.
#   2. benchmarks/attention.py --on_device: fwd+bwd time of packed (512-token documents) against
#      one-document 8k rows: on a TPU the Pallas kernels, whose segment skipping this shows.
# Usage: bash benchmarks/device_check.sh   (PYTHON=... to pick the interpreter; OUT=dir for the
# JSON lines; a wheels/ folder, if present, is installed offline first: the device machines reach
# no package index, so `pip download -d wheels -e .[tpu or cuda extras]` beforehand and carry it).
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
OUT=${OUT:-/tmp/heph_device_check}
mkdir -p "$OUT"
if ! "$PY" -c "import jax, flax, optax, orbax.checkpoint, ml_collections" 2>/dev/null; then
  if [ -d wheels ]; then
    "$PY" -m pip install -q --no-index --find-links wheels -e .
  else
    echo "device_check: $PY lacks jax/flax/optax/orbax/ml_collections and there is no wheels/ folder" >&2
    exit 2
  fi
fi
platform=$("$PY" -c "import jax; print(jax.default_backend())")
impl=xla
if [ "$platform" = tpu ]; then impl=pallas; fi
echo "device_check: platform $platform, attention_impl $impl, load $(cut -d' ' -f1-3 /proc/loadavg)"
timeout 420 "$PY" benchmarks/accelerator_step.py --config configs/bench_1b.py \
    --config.model.attention_impl="$impl" --steps 10 --warmup 2 | tee "$OUT/accelerator_step.jsonl"
timeout 120 "$PY" benchmarks/attention.py --on_device --seqs 8192 --batch 4 --heads 32 \
    --kv_heads 8 --head_dim 128 --repeats 5 --tpu "${TPU_GENERATION:-v5e}" | tee "$OUT/attention.jsonl"
"$PY" - "$OUT/accelerator_step.jsonl" <<'PY'
import json, sys
line = json.loads(open(sys.argv[1]).read().strip().splitlines()[-1])
print(f"device_check: {line['device_kind']}: MFU {line['mfu']} (published peak), "
      f"{line['fraction_of_matmul_peak']} of a measured {line['matmul_tflops']} TFLOP/s matmul, "
      f"{line['tokens_per_second']:.0f} tokens/s")
PY
