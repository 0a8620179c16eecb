"""The text tower of a CLIP checkpoint (transformers CLIPModel or open_clip): words -> unit text embeddings in the
space the image embeddings live in. Used to name features with the checkpoint's own language."""

from __future__ import annotations

import os
from collections.abc import Sequence

import torch
import torch.nn.functional as F

from ..errors import VizError
from .base import VisionModel


class ClipText:
    """Encodes texts with `model`'s own tokenizer and text tower."""

    def __init__(self, model: VisionModel, token: str | bool | None = None):
        """`token` reads the tokenizer files as the model was read (None: the local user's own login)."""
        self.model = model
        module = model.module
        if not model.has_text_tower:
            raise VizError(
                f"'{model.model_id}' has no text tower: naming features needs a full CLIP checkpoint (e.g. "
                "openai/clip-vit-base-patch32), not a vision-only model."
            )
        if model.backend == "transformers":
            self._tokenizer = _transformers_tokenizer(model.model_id, token)
            self._encode = self._encode_transformers
        else:
            import open_clip

            # the loaded tower's context, not only the config's: longer texts are cut to it (start and end kept)
            self._tokenizer = open_clip.get_tokenizer(_open_clip_source(model.model_id, token),
                                                      context_length=getattr(module, "context_length", None))
            self._encode = lambda texts: module.encode_text(self._tokenizer(list(texts)).to(model.device))

    def encode(self, texts: Sequence[str], batch_size: int = 256) -> torch.Tensor:
        """[len(texts), D] unit-length text embeddings, in batches."""
        out = []
        with torch.no_grad(), self.model.autocast():
            for start in range(0, len(texts), batch_size):
                out.append(F.normalize(self._encode(texts[start : start + batch_size]).float(), dim=-1).cpu())
        return torch.cat(out) if out else torch.empty(0, 0)

    def _encode_transformers(self, texts):
        tokens = self._tokenizer(list(texts), padding=True, truncation=True, max_length=self._context_length(),
                                 return_tensors="pt").to(self.model.device)
        output = self.model.module.get_text_features(input_ids=tokens["input_ids"], attention_mask=tokens["attention_mask"])
        return getattr(output, "pooler_output", output)

    def _context_length(self) -> int | None:
        """Tokens the text tower reads: its position embeddings, or the tokenizer's limit if that is shorter. A
        tokenizer may state no limit, or a longer one than the tower; texts are cut to this, as CLIP's are."""
        text_config = getattr(self.model.module.config, "text_config", None)
        limits = (getattr(text_config, "max_position_embeddings", None), getattr(self._tokenizer, "model_max_length", None))
        limits = [limit for limit in limits if isinstance(limit, int) and limit > 0]
        return min(limits) if limits else None


def _open_clip_source(model_id: str, token: str | bool | None = None) -> str:
    """open_clip picks its tokenizer from the repo's open_clip_config.json (no weights are read); open_clip takes
    no token, so for an explicit one the config is fetched here and open_clip reads the folder it lands in."""
    if os.path.isdir(model_id):
        return f"local-dir:{model_id}"
    if token is None:
        return f"hf-hub:{model_id}"
    from .hub_files import CheckpointFiles

    config = CheckpointFiles(model_id, token=token).path("open_clip_config.json")
    if config is None:
        raise VizError(f"'{model_id}' has no open_clip_config.json: naming features needs the repo open_clip loaded.")
    return f"local-dir:{os.path.dirname(config)}"


def _transformers_tokenizer(model_id: str, token: str | bool | None = None):
    from transformers import AutoTokenizer

    from .builtin import builtin_path

    folder = builtin_path(model_id)  # a built-in CLIP keeps its tokenizer files in the package
    try:
        if folder is not None:
            return AutoTokenizer.from_pretrained(str(folder))
        return AutoTokenizer.from_pretrained(model_id, token=token)
    except (OSError, ValueError, TypeError) as err:
        raise VizError(
            f"'{model_id}' has no tokenizer files this machine can load ({type(err).__name__}): use a CLIP repo that "
            "ships its tokenizer, or download it first."
        ) from None


def clip_image_embeddings(model: VisionModel, images: torch.Tensor) -> torch.Tensor:
    """[B, D] unit-length CLIP image embeddings of images in [0, 1], by the checkpoint's own forward pass."""
    module = model.module
    pixels = model.normalize(images.to(model.device))
    with torch.no_grad(), model.autocast():
        if model.backend == "transformers" and hasattr(module, "get_image_features"):
            output = module.get_image_features(pixel_values=pixels)
            output = getattr(output, "pooler_output", output)
        elif model.backend == "open_clip" and hasattr(module, "encode_image"):
            output = module.encode_image(pixels)
        else:
            raise VizError(
                f"'{model.model_id}' has no CLIP image embedding: naming features needs a full CLIP checkpoint (e.g. "
                "openai/clip-vit-base-patch32)."
            )
    return F.normalize(output.float(), dim=-1).cpu()
