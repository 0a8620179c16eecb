"""Hardware presets for the Space: what one request may ask for on each kind of hardware.

The app picks a preset once at start-up (`current_preset()`) and enforces its caps on every endpoint, in the
UI and through the API alike: a request over a cap is rejected with a one-line message naming the cap, never
silently clipped. The caps are sized so a single request finishes in a few minutes at most (CPU: ~0.7 s per
step of a ViT-B/16 feature with the paper recipe, see shared model facts; GPUs: 50-200x faster).

Choice of preset, first match wins:
  1. VFV_HARDWARE=<name> (one of PRESETS);
  2. SPACES_ZERO_GPU=true (set by Hugging Face on ZeroGPU Spaces) -> zero-a10g;
  3. cpu-basic.
Any cap can then be overridden by env: VFV_MAX_STEPS, VFV_MAX_FEATURES, VFV_MAX_IMAGE_SIZE,
VFV_MAX_SCAN_IMAGES, VFV_MAX_TOP_K, VFV_MAX_PARAMETERS, VFV_MAX_GALLERY_ROWS, VFV_CONCURRENCY (e.g. a Space owner
on bigger hardware, or tests).
"""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Mapping
from dataclasses import dataclass

ENV_PRESET = "VFV_HARDWARE"
DEFAULT_PRESET = "cpu-basic"
# env var -> Preset field, for per-cap overrides
OVERRIDES = {
    "VFV_MAX_STEPS": "max_steps",
    "VFV_MAX_FEATURES": "max_features",
    "VFV_MAX_IMAGE_SIZE": "max_image_size",
    "VFV_MAX_SCAN_IMAGES": "max_scan_images",
    "VFV_MAX_TOP_K": "max_top_k",
    "VFV_MAX_PARAMETERS": "max_parameters",
    "VFV_MAX_GALLERY_ROWS": "max_gallery_rows",
    "VFV_CONCURRENCY": "concurrency",
    "VFV_MAX_SAE_IMAGES": "max_sae_images",
    "VFV_MAX_SAE_PARAMETERS": "max_sae_parameters",
}


@dataclass(frozen=True)
class Preset:
    """Caps for one request on one kind of hardware, plus how the queue and the GPU are used there."""

    name: str
    hub_hardware: str  # the Hub's hardware flavor (huggingface_hub.SpaceHardware value) this preset is for
    description: str
    max_steps: int  # optimization steps per render
    max_features: int  # features per render request
    max_image_size: int  # render side in pixels
    max_scan_images: int  # dataset images scanned per "top examples" request
    max_top_k: int  # examples shown per feature
    max_parameters: int  # largest checkpoint (all its towers), checked from small files before any weights load
    concurrency: int  # jobs running at once (gr.Blocks.queue(default_concurrency_limit=...))
    queue_size: int  # requests waiting at most; later ones are turned away by the queue
    default_recipe: str | None = None  # what the Render tab starts with (None: the library's DEFAULT_RECIPE)
    default_steps: int | None = None  # None: the recipe's own steps, within max_steps
    zero_gpu: bool = False  # run the GPU work inside @spaces.GPU with a duration computed per request
    seconds_per_feature_step: float = 0.7  # estimate used for the ZeroGPU duration (ViT-B/16, paper recipe)
    max_gpu_seconds: int = 120  # upper bound asked of ZeroGPU for one request
    # rows a gallery may declare to be opened in the Explore galleries tab (about 45 bytes each in the index all
    # visitors share): a ViT-H gallery of every feature (164k) with two objectives, not an unbounded one
    max_gallery_rows: int = 1_000_000
    # image passes (images x epochs) one SAE training request may stream through the model: the forward passes
    # are its cost (cpu-basic: a ViT-B/16 takes ~0.1 s an image there, so 2,400 passes are a few minutes)
    max_sae_images: int = 100_000
    # weights of an SAE a visitor names (Render, Explore, Analyses), checked from its safetensors header and file
    # sizes before any download or load: 4x a ViT-B's fc1 (2 x 3072 x 12288 = 75M, 300 MB) fits, a hostile one not
    max_sae_parameters: int = 80_000_000

    def gpu_duration(self, features: int, steps: int, *, overhead: int = 15) -> int:
        """Seconds to ask of ZeroGPU for a render of `features` x `steps`: estimate x2 margin, within bounds."""
        estimate = overhead + 2 * self.seconds_per_feature_step * max(features, 1) * max(steps, 1)
        return int(min(self.max_gpu_seconds, max(20, round(estimate))))

    def caps_text(self) -> str:
        """One line for the UI, e.g. 'cpu-basic: up to 96 steps, 2 features, 224 px per request'."""
        return (f"{self.name}: up to {self.max_steps} steps, {self.max_features} feature(s), "
                f"{self.max_image_size} px and {self.max_scan_images} dataset images per request, "
                f"models up to {self.max_parameters / 1e6:,.0f}M parameters")


PRESETS: dict[str, Preset] = {
    p.name: p
    for p in [
        Preset(
            name="cpu-basic", hub_hardware="cpu-basic", description="Free CPU Space (2 vCPU, 16 GB): previews only.",
            max_steps=128, max_features=2, max_image_size=224, max_scan_images=200, max_top_k=8,
            max_parameters=200_000_000,  # every ViT-B and CLIP-B (151M with its text tower); a ViT-L is too slow here
            concurrency=1, queue_size=16, max_gallery_rows=300_000, max_sae_images=2_400,
            # benchmarks/bench_real.py's step curve on the real DINOv2-S/14 (README: On a real trained ViT)
            default_recipe="fast-std", default_steps=96,
        ),
        Preset(
            name="zero-a10g", hub_hardware="zero-a10g", description="ZeroGPU: a GPU slice per request, billed by duration.",
            max_steps=512, max_features=16, max_image_size=448, max_scan_images=5000, max_top_k=16,
            max_parameters=3_000_000_000,
            concurrency=4, queue_size=64, zero_gpu=True, seconds_per_feature_step=0.01, max_gpu_seconds=120,
        ),
        Preset(
            name="t4-small", hub_hardware="t4-small", description="NVIDIA T4 16 GB.",
            max_steps=400, max_features=16, max_image_size=384, max_scan_images=2000, max_top_k=16,
            max_parameters=1_100_000_000,  # up to CLIP ViT-H/14 (986M) in 16 GB
            concurrency=1, queue_size=32, seconds_per_feature_step=0.03,
        ),
        Preset(
            name="a10g-small", hub_hardware="a10g-small", description="NVIDIA A10G 24 GB.",
            max_steps=512, max_features=32, max_image_size=448, max_scan_images=5000, max_top_k=16,
            max_parameters=2_600_000_000,  # up to CLIP ViT-bigG/14 (2.5B)
            concurrency=2, queue_size=64, seconds_per_feature_step=0.012,
        ),
        Preset(
            # The Hub has no h100 Space flavor in huggingface_hub's SpaceHardware list; the nearest is a100-large.
            name="h100", hub_hardware="a100-large", description="NVIDIA H100/A100 80 GB class.",
            max_steps=1024, max_features=128, max_image_size=448, max_scan_images=20000, max_top_k=32,
            max_parameters=8_000_000_000,
            concurrency=4, queue_size=128, seconds_per_feature_step=0.004,
        ),
    ]
}


class PresetError(ValueError):
    """A bad VFV_* setting: one line naming the fix."""


def get_preset(name: str) -> Preset:
    try:
        return PRESETS[name.strip()]
    except KeyError:
        raise PresetError(f"Unknown hardware preset '{name}': set {ENV_PRESET} to one of {', '.join(PRESETS)}.") from None


def current_preset(environ: Mapping[str, str] | None = None) -> Preset:
    """The preset this process runs with, from the environment (see the module docstring)."""
    env = os.environ if environ is None else environ
    if env.get(ENV_PRESET, "").strip():
        preset = get_preset(env[ENV_PRESET])
    elif env.get("SPACES_ZERO_GPU", "").lower() == "true":
        preset = PRESETS["zero-a10g"]
    else:
        preset = PRESETS[DEFAULT_PRESET]
    changes = {}
    for var, field in OVERRIDES.items():
        raw = env.get(var, "").strip()
        if not raw:
            continue
        try:
            value = int(raw)
        except ValueError:
            value = 0
        if value < 1:
            raise PresetError(f"{var}={raw!r} is not a positive whole number: set it to e.g. {getattr(preset, field)}.")
        changes[field] = value
    return dataclasses.replace(preset, **changes) if changes else preset
