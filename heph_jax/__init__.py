"""heph_jax: JAX/Flax continual pre-training of agent LLMs (Hephaestus method) on TPU pods."""

__version__ = "0.1.0"
