"""Hephaestus Stage I: continual pre-training of Llama-3-8B on the whole Hephaestus-Forge.

    python -m heph_jax.aot --config configs/llama3_8b_stage1.py --topology v5p-64   # fits? (CPU)
    python -m heph_jax.train --config configs/llama3_8b_stage1.py --workdir runs/llama3_8b_stage1

The paper (arXiv 2502.06589, §6) publishes none of the values below; each is an assumption:
  - context 8192 tokens (Llama-3's own), global batch 256 sequences = 2.1M tokens per step;
  - 48,000 steps ~ 100B tokens ~ one pass over the ~103B-token Forge;
  - AdamW (b2 0.95, weight decay 0.1, clip 1.0), peak LR 3e-5 (a tenth of Llama-3's pre-training
    peak, the usual re-warm for continual pre-training), 1,000 warmup steps, cosine to 10%;
  - data mix: the paper's ~36% agent data, agent : code : text ~ 1 : 1 : 1 (configs/base.py);
    data.sources name the bundled sample (data/forge): point them at the full Forge export.
Fit (heph_jax.aot; pure FSDP over all chips, full remat, Pallas attention, chunked loss, libtpu
0.0.42): v5p-64 = 8 sequences per chip, peak 33.7 GiB of 95; v5e-256 = 1 per chip, peak 7.0 GiB of
16; 2 x v5p-64 (dcn_data=2) = 4 per chip, 19.7 GiB. The same global batch trains identically on each.
"""
from heph_jax.config import sibling

# A local copy of meta-llama/Meta-Llama-3-8B (huggingface-cli download ... --local-dir HF_DIR).
HF_DIR = "hf_models/Meta-Llama-3-8B"


def get_config():
  config = sibling(__file__, "llama3_8b")
  config.init_from = "hf:" + HF_DIR
  config.data.tokenizer = "hf:" + HF_DIR
  config.global_batch_size = 256
  config.num_train_steps = 48_000
  config.log_every_steps = 10
  config.eval_every_steps = 1000
  config.checkpoint_every_steps = 500
  config.optimizer.update(dict(learning_rate=3e-5, warmup_steps=1000, schedule="cosine",
                               min_lr_ratio=0.1))
  return config
