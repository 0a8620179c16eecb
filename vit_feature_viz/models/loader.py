"""`load_model`: one factory for every backend, which it detects from the checkpoint's files, never its name."""

from __future__ import annotations

from ..device import limit_cpu_threads, resolve_device, resolve_precision
from ..errors import VizError
from ..specs import given_name
from . import builtin
from .backends import BACKENDS
from .base import VisionModel
from .hub_files import CheckpointFiles
from .size import check_files_size


def detect_backend(files: CheckpointFiles) -> tuple[str, dict]:
    """open_clip repos carry open_clip_config.json; timm's config.json names an `architecture`;
    transformers' names a `model_type`."""
    config = files.json("open_clip_config.json")
    if config is not None:
        return "open_clip", config
    config = files.json("config.json")
    if config is None:
        raise files.missing_error()
    if "architecture" in config:
        return "timm", config
    if "model_type" in config:
        return "transformers", config
    raise VizError(f"'{files.name}' has a config.json that neither timm nor transformers can read: pick a ViT or CLIP checkpoint.")


def load_model(
    name_or_path: str,
    *,
    revision: str | None = None,
    device: str = "auto",
    precision: str = "auto",
    trust_remote_code: bool = False,
    allow_pickle: bool = False,
    max_parameters: int | None = None,
    token: str | bool | None = None,
) -> VisionModel:
    """Load a ViT/CLIP checkpoint by Hub name or local folder, ready to render.

    Built-in names (`vit-feature-viz/shapes-vit`, see models/builtin.py) load from the package, with no network.
    Pickle weights are refused unless `allow_pickle`; remote code runs only with `trust_remote_code`; with
    `max_parameters` a larger checkpoint is refused before its weights are downloaded (see size.py). `token`: None
    reads with the local user's own login; False (anonymous) or a token loads for someone else, who must be
    granted the repo by the Hub even when its files are cached (hub_files.CheckpointFiles.require_access).
    """
    name = given_name(name_or_path, "model", "google/vit-base-patch16-224")
    resolved_device = resolve_device(device)
    if resolved_device.type == "cpu":
        limit_cpu_threads()
    resolved_precision = resolve_precision(precision, resolved_device)
    files = CheckpointFiles(_builtin_folder(name, revision) or name, revision, token)
    backend, config = detect_backend(files)
    if max_parameters is not None:
        check_files_size(files, backend, config, max_parameters)
    model = BACKENDS.get(backend).load(
        files,
        config,
        device=resolved_device,
        precision=resolved_precision,
        trust_remote_code=trust_remote_code,
        allow_pickle=allow_pickle,
    )
    model.model_id = name  # a built-in keeps its short name (in galleries too), not the package path
    return model


def _builtin_folder(name: str, revision: str | None) -> str | None:
    folder = builtin.builtin_path(name)
    if folder is None:
        return None
    if revision:
        raise VizError(f"'{name}' is built into vit-feature-viz and has no revisions: leave the revision empty.")
    if not (folder / "model.safetensors").is_file():
        raise VizError(f"The built-in model '{name}' is missing from this installation ({folder}): reinstall "
                       "vit-feature-viz, or train it with scripts/"
                       f"{'train_shapes_clip.py' if name == builtin.SHAPES_CLIP else 'train_shape_fixtures.py'}.")
    return str(folder)

