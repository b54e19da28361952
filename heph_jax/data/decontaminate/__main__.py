"""python -m heph_jax.data.decontaminate: see heph_jax/data/decontaminate/__init__.py."""
import sys

from heph_jax.data.decontaminate import main

sys.exit(main())
