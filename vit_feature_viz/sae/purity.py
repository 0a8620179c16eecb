"""Label purity of a feature's top dataset examples: is an SAE latent more about one thing than an MLP channel?

For each feature, its top-`top` images of a labelled dataset (by the mean over patch tokens, as dataset examples
rank them) and the fraction of them that share their most common label. A monosemantic feature's top images
share a label; a polysemantic channel's mix several. Features that fire on fewer than `top` images (an SAE latent
that is rare or dead) are counted apart, not scored: their top list would be padded with images they do not fire on.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from ..image_datasets import as_pil, shard_batches
from ..models.base import MLP, Target, VisionModel
from .saved import SavedSae

PURE = 0.9


@dataclass
class Purity:
    scores: torch.Tensor  # [features] purity of each scored feature
    unscored: int  # features firing on fewer than `top` images

    @property
    def mean(self) -> float:
        return float(self.scores.mean()) if len(self.scores) else float("nan")

    @property
    def pure(self) -> int:
        return int((self.scores >= PURE).sum())

    def row(self) -> dict:
        return {"features": len(self.scores), "unscored": self.unscored, "mean": self.mean,
                "median": float(self.scores.median()) if len(self.scores) else float("nan"), "pure": self.pure}


@torch.no_grad()
def feature_means(model: VisionModel, layer: int, dataset, column: str, sae: SavedSae | None = None,
                  batch_size: int = 64) -> dict[str, torch.Tensor]:
    """Per image [N, F] mean over patches of: the layer's MLP channels ("channels"), and with an SAE (trained on
    this layer's fc1) its latents' TopK codes ("latents") and pre-activations ("pre"); "channels max" and
    "latents max": the largest patch's value instead of the mean."""
    target = Target(MLP, layer)
    out: dict[str, list] = {"channels": [], "latents": [], "pre": [], "channels max": [], "latents max": []}
    for _indices, encoded in shard_batches(dataset, column, batch_size=batch_size, max_images=None, num_shards=1,
                                           shard_index=0, progress=False, desc=""):
        pixels = torch.stack([model.preprocess(as_pil(v, column)) for v in encoded])
        patches = model.activations(pixels, [target]).patches(target).float()
        out["channels"].append(patches.mean(1).cpu())
        out["channels max"].append(patches.amax(1).cpu())
        if sae is not None:
            codes = sae.sae.encode(patches)
            out["latents"].append(codes.mean(1).cpu())
            out["latents max"].append(codes.amax(1).cpu())
            out["pre"].append(sae.sae.pre_activations(patches.mean(1)).cpu())
    return {name: torch.cat(parts) for name, parts in out.items() if parts}


def purity(scores: torch.Tensor, labels: torch.Tensor, top: int = 16, needs_firing: bool = False) -> Purity:
    """scores [N, F], labels [N]: each feature's top-`top` images' share of their majority label.
    needs_firing: a feature must be > 0 on at least `top` images to be scored (TopK codes are 0 where off)."""
    order = scores.topk(top, dim=0).indices  # [top, F]
    keep = torch.ones(scores.shape[1], dtype=torch.bool)
    if needs_firing:
        keep = (scores > 0).sum(0) >= top
    top_labels = labels[order[:, keep]]  # [top, kept]
    classes = int(labels.max()) + 1
    counts = torch.zeros(classes, top_labels.shape[1]).scatter_add_(0, top_labels, torch.ones_like(top_labels, dtype=torch.float))
    return Purity(counts.max(0).values / top, int((~keep).sum()))
