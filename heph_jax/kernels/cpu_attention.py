"""Fused attention on CPU: the C++ kernel in cpu_attention.cc, called through jax.ffi.

The model's `attention_impl="cpu"`. Same contract as the other paths (heph_jax/model/attention.py):
q [B, S, H, D], k/v [B, S, KV, D], segment_ids [B, S] (0 = padding, attends within its own
segment). Causal or not, grouped-query heads, float32 inside (other dtypes are cast at the edges).
The backward is a second kernel that recomputes the probabilities from the forward's log-sum-exp.

The shared library is compiled on first use with the host's C++ compiler (`$CXX`, else g++) for
the host's CPU (-march=native), and cached under $HEPH_JAX_CACHE (default ~/.cache/heph_jax) by a
hash of the source, flags and CPU, so a changed kernel or machine rebuilds it. Nothing is built at
install time: TPU VMs that never ask for it need no compiler.
"""
from __future__ import annotations

import ctypes
import functools
import hashlib
import logging
import os
import shutil
import subprocess
import tempfile
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
from heph_jax.errors import HephError

logger = logging.getLogger(__name__)
_SOURCE = Path(__file__).with_name("cpu_attention.cc")
_FLAGS = ("-O3", "-march=native", "-std=gnu++17", "-shared", "-fPIC", "-fno-math-errno")
_TARGETS = {"heph_cpu_attention_forward": "HephCpuAttentionForward",
            "heph_cpu_attention_backward": "HephCpuAttentionBackward"}


class KernelBuildError(HephError, RuntimeError):
  """The C++ kernel could not be compiled (no compiler, or a compiler error)."""


def _cpu_signature() -> str:
  """The CPU model and feature flags (-march=native code is only valid on a matching CPU)."""
  try:
    lines = Path("/proc/cpuinfo").read_text().splitlines()
  except OSError:
    import platform
    return platform.processor() or platform.machine()
  return "\n".join(sorted({l for l in lines if l.startswith(("model name", "flags"))}))


def _cache_dir() -> Path:
  return Path(os.environ.get("HEPH_JAX_CACHE") or Path.home() / ".cache" / "heph_jax")


def library_path() -> Path:
  """Where the compiled kernel lives for this source, compiler flags, jax and CPU."""
  key = hashlib.sha256("\0".join(
      [_SOURCE.read_text(), *_FLAGS, jax.__version__, _cpu_signature()]).encode()).hexdigest()[:16]
  return _cache_dir() / f"cpu_attention-{key}.so"


def build(path: Path | None = None) -> Path:
  """Compiles the kernel (if not cached) and returns the shared library's path."""
  path = path or library_path()
  if path.exists():
    return path
  wanted = os.environ.get("CXX") or "g++"
  compiler = shutil.which(wanted) or (None if "CXX" in os.environ else shutil.which("c++"))
  if not compiler:
    raise KernelBuildError(
        f"attention_impl='cpu' compiles a C++ kernel on first use and found no C++ compiler "
        f"{wanted!r} ($CXX, else g++); install one or use model.attention_impl='xla'")
  try:
    path.parent.mkdir(parents=True, exist_ok=True)
  except OSError as e:
    raise KernelBuildError(f"cannot create the kernel cache {path.parent} ({e}); point "
                           f"$HEPH_JAX_CACHE at a writable directory") from e
  # Compile to a temporary name and rename: concurrent processes (multi-host tests) never load a
  # half-written library.
  with tempfile.TemporaryDirectory(dir=path.parent) as tmp:
    partial = Path(tmp) / path.name
    command = [compiler, *_FLAGS, "-isystem", jax.ffi.include_dir(), str(_SOURCE), "-o", str(partial)]
    logger.warning("compiling the CPU attention kernel once for this machine (%s) -> %s", compiler, path)
    result = subprocess.run(command, capture_output=True, text=True)
    if result.returncode:
      raise KernelBuildError(f"compiling {_SOURCE} failed ({' '.join(command)}):\n{result.stderr[-4000:]}")
    os.replace(partial, path)
  return path


@functools.cache
def _register() -> None:
  library = ctypes.cdll.LoadLibrary(str(build()))
  for target, symbol in _TARGETS.items():
    jax.ffi.register_ffi_target(target, jax.ffi.pycapsule(getattr(library, symbol)), platform="cpu")


def _forward_call(q, k, v, segment_ids, causal, scale):
  batch, seq, heads, _ = q.shape
  return jax.ffi.ffi_call(
      "heph_cpu_attention_forward",
      (jax.ShapeDtypeStruct(q.shape, jnp.float32), jax.ShapeDtypeStruct((batch, heads, seq), jnp.float32)),
      vmap_method="sequential",
  )(q, k, v, segment_ids, scale=np.float32(scale), causal=causal)


@functools.partial(jax.custom_vjp, nondiff_argnums=(4, 5))
def _attention(q, k, v, segment_ids, causal, scale):
  return _forward_call(q, k, v, segment_ids, causal, scale)[0]


def _attention_forward(q, k, v, segment_ids, causal, scale):
  out, lse = _forward_call(q, k, v, segment_ids, causal, scale)
  return out, (q, k, v, segment_ids, out, lse)


def _attention_backward(causal, scale, residuals, d_out):
  q, k, v, segment_ids, out, lse = residuals
  shapes = tuple(jax.ShapeDtypeStruct(x.shape, jnp.float32) for x in (q, k, v))
  dq, dk, dv = jax.ffi.ffi_call("heph_cpu_attention_backward", shapes, vmap_method="sequential")(
      q, k, v, segment_ids, out, lse, d_out, scale=np.float32(scale), causal=causal)
  return dq, dk, dv, None


_attention.defvjp(_attention_forward, _attention_backward)


def cpu_attention(q, k, v, segment_ids=None, *, causal=True, sm_scale=None):
  """q [B, S, H, D], k/v [B, S, KV, D], segment_ids [B, S] int -> [B, S, H, D] in q's dtype."""
  batch, seq, heads, head_dim = q.shape
  if k.shape != v.shape or k.shape[:2] != (batch, seq) or k.shape[3] != head_dim or heads % k.shape[2]:
    raise ValueError(f"cpu_attention: q {q.shape} needs k and v of shape [B, S, KV, D] with KV "
                     f"dividing H; got k {k.shape}, v {v.shape}")
  if segment_ids is not None and segment_ids.shape != (batch, seq):
    raise ValueError(f"cpu_attention: segment_ids shape {segment_ids.shape} must be [B, S] = {(batch, seq)}")
  _register()
  if segment_ids is None:
    segment_ids = jnp.ones((batch, seq), jnp.int32)
  scale = head_dim ** -0.5 if sm_scale is None else float(sm_scale)
  out = _attention(q.astype(jnp.float32), k.astype(jnp.float32), v.astype(jnp.float32),
                   segment_ids.astype(jnp.int32), bool(causal), scale)
  return out.astype(q.dtype)
