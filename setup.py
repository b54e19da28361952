"""heph_jax: JAX/Flax continual pre-training of agent LLMs (the Hephaestus method) on TPU pods.

Ranges here; requirements.txt pins the exact set CI tests on Python 3.11. TPU VMs with newer
Python may take newer JAX (jax >= 0.11 needs Python >= 3.12).
"""
from setuptools import find_packages, setup

setup(
    name="heph_jax",
    version="0.1.0",
    description="Continual pre-training of agent LLMs (Hephaestus) with JAX/Flax on TPU pods",
    long_description=open("README.md", encoding="utf-8").read(),
    long_description_content_type="text/markdown",
    python_requires=">=3.11",
    packages=find_packages(include=["heph_jax", "heph_jax.*"]),
    # The CPU attention kernel's source: compiled on first use (heph_jax/kernels/cpu_attention.py).
    package_data={"heph_jax.kernels": ["*.cc"]},
    install_requires=[
        "jax>=0.10.2",
        "flax>=0.12.8",
        "optax>=0.2.8",
        "orbax-checkpoint>=0.12.8",
        "ml-collections>=1.1.0",
        "absl-py>=2.1",
        "clu>=0.0.12",
        "seqio>=0.0.20",
        "tensorflow>=2.21,<3",
        "tensorflow-text>=2.21",
        "tensorflow-datasets>=4.9.10",
        "importlib_resources>=6",  # missing dependency of tensorflow-datasets 4.9.10
        "tensorboard>=2.21",
        "sentencepiece>=0.2",
        "tokenizers>=0.23",
        "safetensors>=0.8",
        "jinja2>=3.1",
        "numpy>=2.0",
        "scipy>=1.13",
        "matplotlib>=3.8",
    ],
    extras_require={
        # torch/transformers are references in tests only; libtpu lets CI compile for TPU (AOT);
        # ruff is the linter .ci/run runs (pyproject.toml).
        "test": ["pytest>=8", "torch==2.13.0", "transformers>=5.24,<6", "huggingface-hub>=2.4",
                 "libtpu==0.0.42.1", "ruff==0.17.6"],
        "tpu": ["jax[tpu]>=0.10.2"],
    },
    entry_points={"console_scripts": ["heph-train=heph_jax.train:cli"]},
)
