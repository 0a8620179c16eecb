"""What the Space's hardware runs, as the Space build needs it: Python version, pins, suggested hardware.

ZeroGPU runs one Python (3.10.13) and a fixed list of torch builds (https://huggingface.co/docs/hub/spaces-zerogpu,
"Supported Versions"), older than the project's own pins in requirements.txt; a ZeroGPU Space therefore gets the
overrides below. They were resolved for Python 3.10 with pip itself (`pip install --dry-run --no-deps
--python-version 3.10 ...`, newest release of each within the project's ranges) and cross-checked with their
declared dependencies: transformers 5.21+, numpy 2.3+, pyarrow 26 and matplotlib 3.11 need Python 3.11.
Other hardware runs the project's pins on this interpreter's Python.
"""

from __future__ import annotations

import sys

ZERO_GPU_PYTHON = "3.10.13"
ZERO_GPU_TORCH = ("2.1.0", "2.1.1", "2.1.2", "2.2.0", "2.2.2", "2.4.0", "2.5.1", "2.6.0", "2.7.1", "2.8.0")
ZERO_GPU_PINS = {
    "torch": "2.8.0",
    "torchvision": "0.23.0",
    "transformers": "5.20.2",
    "numpy": "2.2.6",
    "pyarrow": "25.0.1",
    "matplotlib": "3.10.9",
}

# suggested_hardware must be a hardware flavor a duplicate of the Space can be given
# (https://huggingface.co/docs/hub/spaces-config-reference): never ZeroGPU, which only its owner's PRO or
# Enterprise plan enables in the Space settings, and not cpu-basic, the default there is nothing to suggest for.
NOT_SUGGESTABLE = {"zero-a10g", "cpu-basic"}
ZERO_GPU_DUPLICATE = "a10g-small"  # a dedicated GPU whose preset has ZeroGPU's caps


def python_version(zero_gpu: bool) -> str:
    return ZERO_GPU_PYTHON if zero_gpu else f"{sys.version_info.major}.{sys.version_info.minor}"


def suggested_hardware(hub_hardware: str) -> str | None:
    """The flavor to suggest to people who duplicate the Space; None means 'suggest nothing' (free CPU)."""
    if hub_hardware == "zero-a10g":
        return ZERO_GPU_DUPLICATE
    return None if hub_hardware in NOT_SUGGESTABLE else hub_hardware


def suggestable_hardware() -> set[str]:
    """Every flavor huggingface_hub knows, minus the ones a duplicate cannot be given."""
    from huggingface_hub import SpaceHardware

    return {h.value for h in SpaceHardware} - NOT_SUGGESTABLE
