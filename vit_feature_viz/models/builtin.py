"""Built-in checkpoints: small ViTs and a small CLIP trained on the procedural shapes, shipped inside the package.

They load by short name with no network (`vit-feature-viz/shapes-vit`), so a fresh offline machine still has
a model whose features mean something. `default_model_id()` is the one place that decides what the CLI and the
app start with: a popular Hub ViT when the Hub answers (or that model is already cached), else the built-in.
"""

from __future__ import annotations

from pathlib import Path

MODELS_DIR = Path(__file__).resolve().parents[1] / "data" / "models"
ORG = "vit-feature-viz"
FIXTURE_NAMES = ("shapes-color-vit-a", "shapes-color-vit-b", "shapes-shape-vit-a", "shapes-shape-vit-b")
DEFAULT_BUILTIN = f"{ORG}/shapes-vit"
# The default: trained where only the outline tells the class, so its features must encode shape (a
# colour-coded model can be satisfied by painting a colour), and the wider, more accurate of the two.
DEFAULT_FIXTURE = "shapes-shape-vit-a"
# A small CLIP (image and text towers) trained on the shapes with captions (scripts/train_shapes_clip.py), so text
# prompts and naming features with words work offline.
SHAPES_CLIP = f"{ORG}/shapes-clip"
BUILTIN_MODELS: dict[str, Path] = {
    DEFAULT_BUILTIN: MODELS_DIR / DEFAULT_FIXTURE,
    **{f"{ORG}/{short}": MODELS_DIR / short for short in FIXTURE_NAMES},
    SHAPES_CLIP: MODELS_DIR / "shapes-clip",
}
DEFAULT_HUB_MODEL = "google/vit-base-patch16-224"
REACHABILITY_TIMEOUT = 3.0  # seconds: long enough for a slow link, short enough not to stall a start


def builtin_path(name: str) -> Path | None:
    """The package folder of a built-in model name, or None when `name` is not one."""
    return BUILTIN_MODELS.get(str(name).strip())


def hub_reachable(endpoint: str | None = None, timeout: float = REACHABILITY_TIMEOUT) -> bool:
    """False when HF_HUB_OFFLINE is set or the Hub endpoint does not answer within `timeout` (any HTTP answer,
    even an error status, counts as reachable: the network works)."""
    from huggingface_hub import constants, get_session

    if constants.HF_HUB_OFFLINE:
        return False
    try:
        get_session().head(endpoint or constants.ENDPOINT, timeout=timeout)
    except Exception:  # connection refused, DNS failure, timeout, proxy errors: all mean "cannot reach"
        return False
    return True


def is_cached(model_id: str) -> bool:
    """True when the model's config and safetensors weights are in the local Hub cache (usable offline)."""
    from huggingface_hub import try_to_load_from_cache

    return all(isinstance(try_to_load_from_cache(model_id, filename), str)
               for filename in ("config.json", "model.safetensors"))


def default_model_id(preferred: str = DEFAULT_HUB_MODEL, *, endpoint: str | None = None) -> tuple[str, str | None]:
    """The model to start with and a one-line notice when it is the built-in fallback (None otherwise).

    `preferred` (a popular Hub ViT) when the Hub answers or the model is already cached; otherwise
    DEFAULT_BUILTIN, which needs no network.
    """
    if is_cached(preferred) or hub_reachable(endpoint):
        return preferred, None
    return DEFAULT_BUILTIN, (f"The Hugging Face Hub cannot be reached: using the built-in model {DEFAULT_BUILTIN} "
                             "(a small ViT trained on procedural shapes).")
