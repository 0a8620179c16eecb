"""CLS attention maps (DINO, Caron et al. 2021: the last block's CLS attention of a self-supervised ViT segments
objects, with no labels). For each head of one block (default: the last) and for the mean over heads: where the
CLS query attends among the patch tokens, drawn over the input, and scored against the dataset's boxes or masks:

- **mass in box**: the share of the patch attention that falls inside the object (each patch weighted by the
  fraction of its pixels inside); a uniform map scores the object's area fraction (the `chance_mass` column);
- **pointing game**: a hit when the patch holding the map's maximum overlaps the object; a random patch hits
  at the share of patches that overlap it (`chance_pointing`).

Needs no classifier head and no labels: any ViT with a CLS token, of any backend (models/attention.py).
"""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field

import torch
import torch.nn.functional as F
from PIL import Image

from ..errors import VizError
from ..image_datasets import streams
from ..models.attention import ClsAttention, read_cls_attention
from ..models.base import VisionModel
from ..store.progress import SavedProgress
from .attention_figure import ModelMaps, attention_figure, attention_strip
from .common import AnalysisResult, resumed_state, short_name
from .data import DECODE_THREADS, batches, check_boxes, open_labeled, prepare

EXPERIMENT = "cls_attention"
EXAMPLES = 4  # images drawn per model in the figure


def region_coverage(masks: torch.Tensor, patch_size: int) -> torch.Tensor:
    """[B, S, S] object masks at the model's input (1 inside) -> [B, grid_h, grid_w] share of each patch inside."""
    return F.avg_pool2d(masks[:, None].float(), patch_size)[:, 0]


def attention_scores(maps: torch.Tensor, coverage: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(mass in the object [B, H], pointing-game hits [B, H] as 0/1) of patch maps [B, H, gh, gw] that sum to 1
    over the patches, against per-patch object coverage [B, gh, gw]."""
    flat, cover = maps.flatten(2), coverage.flatten(1)[:, None]
    mass = (flat * cover).sum(-1)
    hits = (cover.expand_as(flat).gather(-1, flat.argmax(-1, keepdim=True))[..., 0] > 0).float()
    return mass, hits


def with_mean(attention: ClsAttention) -> torch.Tensor:
    """Patch maps [B, H + 1, gh, gw]: each head, then their mean (DINO's averaged map)."""
    maps = attention.patches
    return torch.cat([maps, maps.mean(dim=1, keepdim=True)], dim=1)


@dataclass
class _Totals:
    """Running sums of one model over the images seen, plus the first images' maps for the figure."""

    mass: torch.Tensor | None = None  # [H + 1]
    hits: torch.Tensor | None = None
    chance_mass: float = 0.0
    chance_pointing: float = 0.0
    images: int = 0
    examples: dict = field(default_factory=lambda: {"pixels": [], "maps": [], "masks": []})

    def add(self, maps: torch.Tensor, coverage: torch.Tensor, pixels: torch.Tensor, masks: torch.Tensor) -> None:
        mass, hits = attention_scores(maps, coverage)
        self.mass = mass.sum(0) if self.mass is None else self.mass + mass.sum(0)
        self.hits = hits.sum(0) if self.hits is None else self.hits + hits.sum(0)
        self.chance_mass += float(coverage.flatten(1).mean(1).sum())
        self.chance_pointing += float((coverage.flatten(1) > 0).float().mean(1).sum())
        self.images += len(maps)
        room = EXAMPLES - len(self.examples["pixels"])
        for key, value in (("pixels", (pixels * 255).round().to(torch.uint8)), ("maps", maps), ("masks", masks > 0.5)):
            self.examples[key] += list(value[:room])

    def state(self) -> dict:
        return {**vars(self), "examples": {k: torch.stack(v) if v else [] for k, v in self.examples.items()}}

    @classmethod
    def restored(cls, state: dict) -> "_Totals":
        examples = {k: list(v) for k, v in state["examples"].items()}
        return cls(**{**state, "examples": examples})


def cls_attention(
    models, dataset, *, layer: int | None = None, box_column=None, mask_column=None, box_format="xyxy", split=None,
    max_images=None, batch_size=32, streaming=False, image_column=None, label_column=None, progress=True,
    checkpoint=None, token=None, probe=None, **load_options,
) -> AnalysisResult:
    """Mass in the box and pointing game of each head's (and the mean's) CLS attention in block `layer` (default:
    the last) of each model. `label_column` and `probe` are accepted and unused: no head or label is needed."""
    from ..models import load_model

    models = [models] if isinstance(models, (str, VisionModel)) else list(models)
    if not models:
        raise VizError("No model given: pass at least one ViT checkpoint, e.g. facebook/dino-vitb16.")
    loaded = [m if isinstance(m, VisionModel) else load_model(m, token=token, **load_options) for m in models]
    layers = {m.model_id: m.num_layers - 1 if layer is None else m.check_layer(int(layer)).index for m in loaded}
    data = open_labeled(dataset, split=split, image_column=image_column, need_label=False, need_region=True,
                        box_column=box_column, mask_column=mask_column, box_format=box_format,
                        streaming=streams(streaming, max_images), token=token)
    check_boxes(data, max_images)
    saved = None
    if checkpoint is not None:
        saved = SavedProgress(checkpoint, {"models": [m.model_id for m in loaded], "layers": layers,
                                           "dataset": data.name, "max_images": max_images, "batch_size": batch_size})
    totals, seen = _restored(saved, loaded)
    with ThreadPoolExecutor(DECODE_THREADS) as pool:
        for batch in batches(data, max_images=max_images, batch_size=batch_size, progress=progress,
                             desc="CLS attention", done=seen):
            seen += len(batch.images)
            for model in loaded:
                pixels = prepare(batch.images, model.preprocess, pool)
                masks = prepare([m.convert("RGB") for m in batch.masks], model.preprocess, pool)[:, 0].round()
                maps = with_mean(read_cls_attention(model, pixels, layers[model.model_id])).cpu()
                totals[model.model_id].add(maps, region_coverage(masks, model.patch_size), pixels, masks)
            if saved:
                saved.save({"seen": seen, "totals": {key: t.state() for key, t in totals.items()}})
    if not seen:
        raise VizError(f"Dataset '{data.name}' gave no images", option="max_images", fix="check the split and {option}.")
    settings = {"experiment": EXPERIMENT, "models": [m.model_id for m in loaded], "dataset": data.name,
                "split": data.split or split, "max_images": max_images, "images": seen, "layers": layers,
                "region_column": data.box_column or data.mask_column}
    rows, notes, drawn = [], [], []
    for model in loaded:
        total = totals[model.model_id]
        heads = len(total.mass) - 1
        for index in range(heads + 1):
            rows.append({
                "model_id": model.model_id, "layer": layers[model.model_id],
                "head": "mean" if index == heads else index,
                "mass_in_box": float(total.mass[index]) / total.images,
                "pointing_game": float(total.hits[index]) / total.images,
                "chance_mass": total.chance_mass / total.images, "chance_pointing": total.chance_pointing / total.images,
            })
        mine = rows[-(heads + 1):]
        best = max(mine[:-1], key=lambda r: r["mass_in_box"])
        notes.append(
            f"{short_name(model.model_id)} block {layers[model.model_id]}: mean map {mine[-1]['mass_in_box']:.2f} of "
            f"its mass in the box (uniform: {mine[-1]['chance_mass']:.2f}), pointing game "
            f"{mine[-1]['pointing_game']:.2f} (random patch: {mine[-1]['chance_pointing']:.2f}); best head "
            f"{best['head']}: mass {best['mass_in_box']:.2f}, pointing {best['pointing_game']:.2f}")
        drawn.append(ModelMaps(short_name(model.model_id), layers[model.model_id], mine, **{
            k: torch.stack(v) for k, v in total.examples.items()}))
    figure = attention_figure(f"CLS attention: {data.name} ({settings['split']}, {seen} images)", drawn)
    return AnalysisResult(EXPERIMENT, rows, settings, figure, notes)


def _restored(saved: SavedProgress | None, loaded: list[VisionModel]) -> tuple[dict[str, _Totals], int]:
    state = resumed_state(saved, "scored")
    if not state:
        return {m.model_id: _Totals() for m in loaded}, 0
    return {key: _Totals.restored(value) for key, value in state["totals"].items()}, state["seen"]


def attention_overlay(model: VisionModel, image: Image.Image, layer: int | None = None) -> Image.Image:
    """One image's CLS attention in block `layer` (default: the last): the mean over heads over the image, then
    each head, side by side (what the app's Explore tab shows for an uploaded image)."""
    pixels = model.preprocess(image)[None]
    attention = read_cls_attention(model, pixels, layer)
    return attention_strip(pixels[0], with_mean(attention)[0].cpu(), f"block {attention.layer}")
