"""`python -m heph_jax.data.train_tokenizer` entry point; the code is heph_jax/data/tokenizers/train.py."""
import sys

if __name__ == "__main__":
  from heph_jax.data.tokenizers.train import main
  sys.exit(main())
