"""`python -m heph_jax.data.inspect` entry point; the code is heph_jax/data/pipeline/inspect.py."""
import sys

if __name__ == "__main__":
  from heph_jax.data.pipeline.inspect import main
  sys.exit(main())
