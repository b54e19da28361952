"""Does a config fit a TPU slice? Compiles the real sharded train step for it, on any CPU machine.

    python -m heph_jax.aot --config configs/llama3_8b_stage1.py --topology v5p-64 \
        [--num_slices 2] [--step_time_s 12.5] [--config.per_device_batch_size=...]

libtpu (the `test` extra, or `jax[tpu]`) provides compile-only devices of the topology; the XLA:TPU
compiler then does the memory planning a real slice would. Prints one JSON object: peak HBM per
chip against the chip's HBM, whether it fits, compile time, analytic FLOPs per step, the compiled
step's own FLOP count against them (`compiled_to_analytic_flops`: a change that doubles the work
shows here, on a CPU box) and, with --step_time_s, the MFU that step time would mean. Exit status
0 = fits, 1 = does not fit (the compiler's out-of-memory message is in "compiler_message"),
2 = bad flags or config.

With --num_slices N > 1 the mesh gets a DCN data axis across slices: config.mesh.dcn_data is set
to N when the config leaves it at 1. No data files or tokenizer are read.
"""
from __future__ import annotations

import importlib.util
import json
import os
import re
import sys
import time

# libtpu probes the GCE metadata server and worker hostnames unless told it runs alone; several
# processes on one box may load it for compiling only.
for _key, _value in (("TPU_SKIP_MDS_QUERY", "1"), ("TPU_WORKER_HOSTNAMES", "localhost"),
                     ("ALLOW_MULTIPLE_LIBTPU_LOAD", "1")):
  os.environ.setdefault(_key, _value)

from heph_jax.errors import HephError  # noqa: E402  (after the environment)
from heph_jax.parallel import topology as topology_lib  # noqa: E402

_OOM_MARKERS = ("RESOURCE_EXHAUSTED", "Ran out of memory", "CompileTimeHbmOom")
_SIZE = r"([0-9.]+)([KMGT]?)"


class LibtpuMissing(HephError):
  """libtpu (the TPU compiler) is not installed."""


def _bytes(number: str, unit: str) -> int:
  return int(float(number) * 1024 ** " KMGT".index(unit or " "))


def _oom_figures(message: str) -> dict:
  """The compiler's required / available HBM from its OOM message, when it states them."""
  out = {}
  required = re.search(r"required for [^(]*\(" + _SIZE + r"\)", message)
  available = re.search(r"available HBM \(" + _SIZE + r"\)", message)
  if required:
    out["compiler_required_bytes"] = _bytes(*required.groups())
  if available:
    out["compiler_available_bytes"] = _bytes(*available.groups())
  return out


def _is_oom(error: Exception) -> bool:
  return any(marker in str(error) for marker in _OOM_MARKERS)


def _compiled_flops(compiled, num_chips: int, analytic_flops_per_step: float) -> dict:
  """The compiler's own FLOP count of the step (XLA cost analysis of the partitioned program, one
  chip's share) against the analytic model FLOPs (ModelConfig.flops_per_token x tokens).

  Near 1 for unrolled layers without remat (the analytic count leaves out softmax, norms and the
  optimizer: a few %); remat adds the recomputed forward (full: about +1/3 of the step). With
  scan_layers the cost analysis counts the scanned layer body once, not once per layer, so the
  ratio falls well below 1 there: compare unrolled configs (model.scan_layers=False)."""
  costs = compiled.cost_analysis()
  if isinstance(costs, (list, tuple)):  # older jax: one dict per program
    costs = costs[0] if costs else {}
  per_chip = float((costs or {}).get("flops", 0.0))
  if per_chip <= 0:
    return {}
  per_step = per_chip * num_chips
  return {"compiled_flops_per_chip": per_chip, "compiled_flops_per_step": per_step,
          "compiled_to_analytic_flops": per_step / analytic_flops_per_step}


def _prepare_config(config, topo: topology_lib.Topology, devices):
  """Applies --num_slices to the mesh and checks the config against the topology's devices."""
  from heph_jax import config as config_lib
  if topo.num_slices > 1 and config.mesh.dcn_data == 1:
    with config.unlocked():
      config.mesh.dcn_data = topo.num_slices
  hosts = len({d.process_index for d in devices})  # one process per TPU VM host
  config_lib.validate(config, len(devices), hosts, check_data=False, platform=devices[0].platform)
  return config


def check(config, accelerator: str, num_slices: int = 1, step_time_s: float = 0.0) -> dict:
  """Compiles config's train step for the topology; returns the report (see the module doc)."""
  import flax.linen as nn
  import jax
  import jax.numpy as jnp

  from heph_jax.data.pipeline import TRAIN_FIELDS
  from heph_jax.parallel.mesh import make_mesh, rules_tuple
  from heph_jax.training import build, state as state_lib

  topo = topology_lib.parse(accelerator, num_slices)
  if importlib.util.find_spec("libtpu") is None:
    raise LibtpuMissing("heph_jax.aot compiles with libtpu, which is not installed: "
                        "pip install -e '.[test]' (or 'jax[tpu]')")
  devices = topology_lib.topology_devices(topo)
  config = _prepare_config(config, topo, devices)
  mesh = make_mesh(config.mesh, devices)
  program = build.build_train_step(config, mesh)
  model_cfg, batch_size, seq_len = program.model_cfg, program.batch_size, config.seq_len

  state = state_lib.abstract_state(model_cfg, program.tx, program.shardings)
  batch = {k: jax.ShapeDtypeStruct((batch_size, seq_len), jnp.int32, sharding=program.batch_sharding)
           for k in TRAIN_FIELDS}
  tokens_per_step = batch_size * seq_len
  flops_per_token = model_cfg.flops_per_token(seq_len)
  flops_per_step = flops_per_token * tokens_per_step
  chip = topo.chip
  report = {
      "topology": accelerator, "libtpu_topology": topo.topology_name, "num_slices": topo.num_slices,
      "chips": topo.num_chips, "device_kind": devices[0].device_kind,
      "mesh": {k: int(v) for k, v in mesh.shape.items()},
      "params": model_cfg.num_params(), "global_batch_size": batch_size,
      "per_chip_batch_size": batch_size / topo.num_chips, "seq_len": seq_len,
      "grad_accum_steps": config.grad_accum_steps, "remat_policy": model_cfg.remat_policy,
      "attention_impl": model_cfg.attention_impl,
      "attention_block_sizes": list(model_cfg.attention_block_sizes), "tokens_per_step": tokens_per_step,
      "hbm_bytes_per_chip": chip.hbm_bytes,
      "flops_per_token": flops_per_token, "flops_per_step": flops_per_step,
      "peak_flops_per_chip": chip.peak_bf16_flops,
      # The step time at 100% MFU: a lower bound for any real step.
      "ideal_step_time_s": flops_per_step / (topo.num_chips * chip.peak_bf16_flops),
  }
  if step_time_s > 0:
    report["step_time_s"] = step_time_s
    report["tokens_per_second"] = tokens_per_step / step_time_s
    report["mfu"] = flops_per_step / (step_time_s * topo.num_chips * chip.peak_bf16_flops)

  start = time.perf_counter()
  with jax.set_mesh(mesh), nn.logical_axis_rules(rules_tuple(config.logical_axis_rules)):
    lowered = program.train_step.lower(state, batch)
  report["lower_time_s"] = time.perf_counter() - start
  start = time.perf_counter()
  try:
    compiled = lowered.compile()
  except Exception as e:  # JaxRuntimeError (XlaRuntimeError before jax 0.4.36) carries the OOM
    if not _is_oom(e):
      raise
    report.update(fits=False, compile_time_s=time.perf_counter() - start,
                  compiler_message=str(e).strip().splitlines()[0][:2000], **_oom_figures(str(e)))
    return report
  report["compile_time_s"] = time.perf_counter() - start
  report.update(_compiled_flops(compiled, topo.num_chips, flops_per_step))
  memory = compiled.memory_analysis()
  peak = int(memory.peak_memory_in_bytes)
  report.update(
      fits=True, peak_hbm_bytes_per_chip=peak, hbm_fraction=peak / chip.hbm_bytes,
      memory={"arguments": int(memory.argument_size_in_bytes), "outputs": int(memory.output_size_in_bytes),
              "aliased": int(memory.alias_size_in_bytes), "temporaries": int(memory.temp_size_in_bytes),
              "generated_code": int(memory.generated_code_size_in_bytes)})
  return report


def define_flags(values, argv):
  from absl import flags
  from ml_collections import config_flags
  config_flags.DEFINE_config_file("config", None, "Config file (configs/*.py).", lock_config=True,
                                  flag_values=values, sys_argv=argv)
  flags.DEFINE_string("topology", None, "gcloud accelerator type (v5p-64, v5e-256, v6e-16, v4-32) or a "
                      "libtpu topology (v5:4x4x12).", flag_values=values)
  flags.DEFINE_integer("num_slices", 1, "Slices joined over DCN (multi-slice); sets mesh.dcn_data.",
                       flag_values=values)
  flags.DEFINE_float("step_time_s", 0.0, "A measured or hoped-for step time: reports the MFU it means.",
                     flag_values=values)
  flags.mark_flags_as_required(["config", "topology"], flag_values=values)


def _run(args, positional) -> int:
  del positional
  report = check(args.config, args.topology, args.num_slices, args.step_time_s)
  print(json.dumps({"config": args.config_filename, **report}, indent=1))
  return 0 if report["fits"] else 1


def main(argv=None) -> int:
  """Exit 0: fits; 1: does not fit; 2: bad flags or config, or no libtpu (heph_jax/cli.py)."""
  from heph_jax import cli
  return cli.run("heph_jax.aot", define_flags, _run, argv)


if __name__ == "__main__":
  sys.exit(main())
