"""heph_jax.aot: the real sharded train step compiled by XLA:TPU (libtpu) on this CPU machine.

References: gcloud/MaxText accelerator names (v5p-64 = 32 chips "v5:2x4x4"), libtpu's own device
lists, the byte count of f32 params + two f32 Adam moments (12 B/param), PaLM's FLOPs formula, and
the compiler's own out-of-memory verdict.
"""
import json
import os
import subprocess
import sys

import pytest

pytest.importorskip("libtpu")

from conftest import REPO_ROOT
from heph_jax import aot
from heph_jax.config import load_config_file, override
from heph_jax.errors import ConfigError
from heph_jax.parallel import topology
from heph_jax.parallel.mesh import make_mesh

pytestmark = pytest.mark.tpu_aot


def _config(name, **overrides):
  return override(load_config_file(str(REPO_ROOT / "configs" / f"{name}.py")), overrides)


# gcloud name -> (libtpu topology, chips, chip config, device_kind), as gcloud and MaxText name them.
NAMES = {
    "v5p-8": ("v5:2x2x1", 4, "megacore", "TPU v5"),
    "v5p-64": ("v5:2x4x4", 32, "megacore", "TPU v5"),
    "v5p-128": ("v5:4x4x4", 64, "megacore", "TPU v5"),
    "v5p-1024": ("v5:8x8x8", 512, "megacore", "TPU v5"),
    "v4-32": ("v4:2x2x4", 16, "megacore", "TPU v4"),
    "v5e-8": ("v5e:2x4", 8, "default", "TPU v5 lite"),
    "v5e-256": ("v5e:16x16", 256, "default", "TPU v5 lite"),
    "v5litepod-16": ("v5e:4x4", 16, "default", "TPU v5 lite"),
    "v6e-64": ("v6e:8x8", 64, "default", "TPU v6 lite"),
}


@pytest.mark.parametrize("name", sorted(NAMES))
def test_accelerator_names_map_to_libtpu_topologies(name):
  libtpu_name, chips, chip_config, kind = NAMES[name]
  topo = topology.parse(name)
  assert (topo.topology_name, topo.num_chips, topo.chip.chip_config) == (libtpu_name, chips, chip_config)
  devices = topology.topology_devices(topo)
  assert len(devices) == chips and devices[0].device_kind == kind


@pytest.mark.parametrize("name", ["v5p-63", "v5p-96", "v9-8", "tpu", "v5e:2x2x2"])
def test_bad_topology_names_raise_config_errors(name):
  with pytest.raises(ConfigError, match="--topology"):
    topology.parse(name)


def test_two_slice_mesh_puts_dcn_data_across_slices_and_ici_axes_within():
  devices = topology.topology_devices(topology.parse("v5p-16", num_slices=2))
  assert len(devices) == 16
  mesh = make_mesh({"dcn_data": 2, "fsdp": -1}, devices)
  assert dict(mesh.shape) == {"dcn_data": 2, "data": 1, "fsdp": 8, "tensor": 1}
  for s in range(2):
    in_row = list(mesh.devices[s].flat)
    assert {d.slice_index for d in in_row} == {s}
    assert {d.id for d in in_row} == {d.id for d in devices if d.slice_index == s}


def _state_bytes_per_chip(report, chips_holding_a_copy):
  """f32 params + f32 Adam mu and nu, fully sharded: 12 bytes per parameter over the chips."""
  return 12 * report["params"] / chips_holding_a_copy


@pytest.fixture(scope="module")
def tiny_on_v5e_4():
  return aot.check(_config("tiny"), "v5e-4")


def test_small_model_fits(tiny_on_v5e_4):
  report = tiny_on_v5e_4
  assert report["fits"] and report["libtpu_topology"] == "v5e:2x2" and report["chips"] == 4
  assert 0 < report["peak_hbm_bytes_per_chip"] <= report["hbm_bytes_per_chip"]
  assert report["mesh"] == {"dcn_data": 1, "data": 1, "fsdp": 4, "tensor": 1}


def test_two_slices_replicate_the_state_across_slices_and_shard_the_batch(tiny_on_v5e_4):
  one = tiny_on_v5e_4
  two = aot.check(_config("tiny", global_batch_size=16), "v5e-4", num_slices=2)
  assert two["fits"] and two["mesh"]["dcn_data"] == 2 and two["chips"] == 8
  # Data parallel over DCN: each slice holds a whole FSDP copy of the state, and each chip the same
  # rows as with one slice (the global batch doubled with the chips).
  assert two["memory"]["arguments"] == one["memory"]["arguments"]


def test_llama3_8b_stage1_fits_v5p_64():
  """The paper's main run on its target slice (~80 s: one 8B compile)."""
  report = aot.check(_config("llama3_8b_stage1"), "v5p-64", step_time_s=20.0)
  assert report["fits"], report
  assert report["libtpu_topology"] == "v5:2x4x4" and report["chips"] == 32
  assert report["peak_hbm_bytes_per_chip"] <= report["hbm_bytes_per_chip"]
  assert report["memory"]["arguments"] == pytest.approx(_state_bytes_per_chip(report, 32), rel=0.01)
  # PaLM (Chowdhery et al. 2022, App. B): 6N + 12 L H Q T FLOPs per token, N without the embedding
  # lookup (and here without the RMSNorm scales, 2 per layer + 1, which are no matmuls); causal
  # attention computes half of the 12 L H Q T term.
  n = report["params"] - 128256 * 4096 - (2 * 32 + 1) * 4096
  flops_per_token = 6 * n + 12 * 32 * 4096 * 8192 / 2
  assert report["flops_per_token"] == pytest.approx(flops_per_token, rel=1e-9)
  tokens = 256 * 8192
  assert report["tokens_per_step"] == tokens
  assert report["mfu"] == pytest.approx(flops_per_token * tokens / (20.0 * 32 * 459e12), rel=1e-9)


def test_too_large_batch_does_not_fit_and_the_cli_says_so():
  """4096 x 8192 tokens on 32 chips: the compiler's OOM becomes a "does not fit" report, exit 1."""
  cmd = [sys.executable, "-m", "heph_jax.aot", "--config", "configs/llama3_8b_stage1.py",
         "--topology", "v5p-64", "--config.global_batch_size=4096"]
  env = dict(os.environ, TPU_SKIP_MDS_QUERY="1", TPU_WORKER_HOSTNAMES="localhost")
  result = subprocess.run(cmd, cwd=REPO_ROOT, env=env, capture_output=True, text=True, timeout=600)
  assert result.returncode == 1, result.stderr[-3000:]
  report = json.loads(result.stdout)
  assert report["fits"] is False and report["per_chip_batch_size"] == 128
  assert "RESOURCE_EXHAUSTED" in report["compiler_message"]
  assert report["compiler_required_bytes"] > report["compiler_available_bytes"]
  # The compiler's usable HBM is a little under the chip's 95 GiB.
  assert 0.9 < report["compiler_available_bytes"] / report["hbm_bytes_per_chip"] <= 1.05


def test_config_errors_name_the_key():
  with pytest.raises(ConfigError, match="global_batch_size"):
    aot.check(_config("llama3_8b_stage1", global_batch_size=100), "v5p-64")


@pytest.mark.parametrize("remat", ["none", "full"])
def test_compiled_flops_match_the_analytic_count(remat):
  """XLA:TPU's own FLOP count of the partitioned step (one chip, x chips) against the analytic
  6N + attention count: close to 1 for unrolled layers without remat (softmax, norms and the
  optimizer are left out of the analytic count); full remat recomputes the forward pass (about a
  third of the step) on top. A change that doubled the step's work would leave both ranges."""
  report = aot.check(_config("tiny", **{"model.scan_layers": False, "model.remat_policy": remat}),
                     "v5e-4")
  ratio = report["compiled_to_analytic_flops"]
  assert report["compiled_flops_per_step"] == pytest.approx(4 * report["compiled_flops_per_chip"])
  low, high = (0.95, 1.15) if remat == "none" else (1.15, 1.45)
  assert low < ratio < high, report


def test_cli_missing_flag_is_a_usage_error():
  result = subprocess.run([sys.executable, "-m", "heph_jax.aot", "--config", "configs/tiny.py"],
                          cwd=REPO_ROOT, capture_output=True, text=True, timeout=300)
  assert result.returncode == 2 and "heph_jax.aot: --topology is required" in result.stderr, result.stderr
