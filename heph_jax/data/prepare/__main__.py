"""python -m heph_jax.data.prepare: see heph_jax/data/prepare/__init__.py."""
import sys

from heph_jax.data.prepare import main

sys.exit(main())
