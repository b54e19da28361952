"""python -m heph_jax.data.convert: see heph_jax/data/convert/cli.py."""
import sys

from heph_jax.data.convert.cli import main

sys.exit(main())
