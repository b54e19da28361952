"""python -m heph_jax.data.harvest: see heph_jax/data/harvest/__init__.py."""
import sys

from heph_jax.data.harvest import _reexec_with_fixed_hash_seed, main

_reexec_with_fixed_hash_seed()
sys.exit(main())
