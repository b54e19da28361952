"""Every default of heph_jax. Other configs start from this one and override what differs.

Values the Hephaestus paper does not publish (learning rate, schedule, batch, context length) are
assumptions, marked "assumed": common choices for Llama-3-8B continual pre-training.
"""
import ml_collections

from heph_jax.parallel import rules


def get_config():
  config = ml_collections.ConfigDict()
  config.seed = 0
  config.num_train_steps = 1000
  config.log_every_steps = 10
  config.eval_every_steps = 200       # 0 = no periodic eval (a final eval still runs)
  config.eval_batches = 4             # batches per task in each eval
  config.checkpoint_every_steps = 200  # 0 = only on preemption (SIGTERM) and at the end
  config.keep_checkpoints = 3
  # A step whose loss or grad norm is NaN/inf is never applied; up to this many are skipped
  # (logged), the next one stops the run (exit 4) without saving. 0 = stop at the first.
  config.skip_nonfinite_steps = 0
  config.async_checkpointing = True
  config.hf_export_every_steps = 0    # > 0: write WORKDIR/hf/step_N in Hugging Face format
  config.global_batch_size = 8        # sequences per optimizer step (assumed)
  config.per_device_batch_size = 0    # > 0 instead: x device count (then global_batch_size = 0)
  config.seq_len = 2048               # assumed; the paper does not say
  config.grad_accum_steps = 1
  # > 0: compute the loss this many sequence positions at a time, so the [batch, seq, vocab] float32
  # logits never exist whole (recomputed per chunk in the backward: one more forward of the output
  # projection). 0 = all at once. The 8B presets use 1024 (README: the fit table).
  config.loss_chunk_size = 0
  # "" = random init; "hf:DIR" = Hugging Face checkpoint; "ckpt:WORKDIR[@STEP]" = params of a
  # heph_jax run (Stage II starts from Stage I this way). Optimizer state is never carried over.
  config.init_from = ""

  config.model = ml_collections.ConfigDict(dict(
      architecture="llama",
      vocab_size=32000, hidden_size=512, intermediate_size=1536, num_hidden_layers=8,
      num_attention_heads=8, num_key_value_heads=8, head_dim=0, rms_norm_eps=1e-5,
      rope_theta=10000.0, rope_scaling=ml_collections.FieldReference(None, field_type=dict),
      sliding_window=ml_collections.FieldReference(None, field_type=int),  # Mistral; None = full
      max_position_embeddings=4096, tie_word_embeddings=False, initializer_range=0.02,
      bos_token_id=1, eos_token_id=2,
      dtype="bfloat16", param_dtype="float32", attention_impl="xla", scan_layers=True,
      remat_policy="none",
      attention_block_sizes=(),  # pallas tiles: () = per TPU generation; (q, k) or 6 ints
  ))

  config.optimizer = ml_collections.ConfigDict(dict(
      learning_rate=3e-4, warmup_steps=100, schedule="cosine", min_lr_ratio=0.1,
      decay_fraction=0.2,   # WSD: share of steps spent decaying at the end
      b1=0.9, b2=0.95, eps=1e-8, weight_decay=0.1, grad_clip_norm=1.0,
  ))

  # Mesh: product of sizes = device count; -1 fills. dcn_data spans slices (multi-slice pods).
  config.mesh = ml_collections.ConfigDict(dict(dcn_data=1, data=1, fsdp=-1, tensor=1))
  # Logical axis -> mesh axes; the table and what is derived from it: heph_jax/parallel/rules.py.
  config.logical_axis_rules = rules.DEFAULT_RULES

  config.data = ml_collections.ConfigDict(dict(
      tokenizer="sp:data/tokenizer/tokenizer.model",
      # Task name -> Forge JSONL file(s) (glob). One SeqIO task each; see heph_jax/data/.
      sources=ml_collections.ConfigDict(dict(
          tool_doc="data/forge/tool_doc.jsonl",
          trajectory="data/forge/trajectory.jsonl",
          code="data/forge/code.jsonl",
          text="data/forge/text.jsonl",
      )),
      # Domains group tasks for mixing laws and rates files: agent = tool docs + trajectories.
      domains=ml_collections.ConfigDict(dict(
          agent=["tool_doc", "trajectory"], code=["code"], text=["text"])),
      # The paper's mix: ~36 % agent, agent : code : text ~ 1 : 1 : 1.
      rates=ml_collections.ConfigDict(dict(tool_doc=0.18, trajectory=0.18, code=0.32, text=0.32)),
      rates_file="",          # a mixing-law rates.json; overrides `rates`
      loss_on="all",          # "all" (pre-training) | "completions" (IFT: assistant spans only)
      validation_fraction=0.05,
      shuffle_buffer=2048,
      pack_rows=8,            # open rows the packer fills at once (more = denser packing)
      cache_dir="",           # prepared token shards; "" = WORKDIR/../.heph_cache if unset
      on_error="raise",       # bad records: "raise" (file:line: reason) or "skip" (counted)
      # Multi-host reading: "rows" = each process reads the whole stream and keeps its rows of each
      # global batch (batches independent of the process count); "records" = each reads its own
      # shard files (less I/O, but batches depend on the process count); "auto" = "records" when
      # jax.process_count() > 1, else "rows". See heph_jax/data/pipeline/__init__.py.
      process_sharding="auto",
      # Shards per split at preparation: 256 = 4 files per host on 64 hosts (v5p-512, v5e-256);
      # a split of fewer than num_shards * shard_min_records documents gets fewer shards.
      num_shards=256,
      shard_min_records=64,
      prepare_workers=1,      # tokenizer processes at preparation (same output for any count)
      max_record_bytes=8_000_000,
  ))

  # Function-calling eval in the loop (BFCL AST scoring): heph_jax/evaluate/in_loop.py.
  from heph_jax.evaluate.in_loop import default_config as _eval_defaults
  config.eval = _eval_defaults()
  from heph_jax.parallel.distributed import default_config as _distributed_defaults
  config.distributed = _distributed_defaults()
  return config
