"""Diversity: N images of one feature that differ from each other (Lucid's diversity term, as on Microscope's
diversity pages).

The N images ("facets") of a feature are optimized together; the loss adds, per feature, the weighted mean
pairwise cosine between the facets' Gram matrices of the objective's own layer activations (patch tokens,
channels x channels): images whose channel co-activations ("style") match are pushed apart, while each still
maximizes the feature. Facet k saves under the objective's name with `-facet<k+1>of<N>`, so a gallery keeps a
feature's set side by side and Explore shows it on the feature page.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from ..errors import VizError
from ..models.base import LOGITS

MAX_DIVERSITY = 16
# Per image, in the objective's units; tuned on the built-in shapes models (benchmarks/bench_quality.py
# --diversity): the largest weight that keeps the facets' activation >= 90% of plain renders (README: Diversity).
DIVERSITY_WEIGHT = 0.05


def facet_name(objective: str, facet: int, facets: int) -> str:
    """The objective name a facet is saved under (the plain name for a set of one)."""
    return objective if facets == 1 else f"{objective}-facet{facet + 1}of{facets}"


def diversity_plan(objective, recipe, facets: int, weight) -> float:
    """The repulsion weight of a checked request (0 for one image per feature)."""
    if facets == 1:
        return 0.0
    if recipe.plateau is not None:
        raise VizError(f"Recipe '{recipe.name}' stops features early, which a diverse set cannot do",
                       option="diversity", fix="use {option} 1, or a recipe without a plateau stop.")
    if _gram_target(objective) is None:
        raise VizError(f"Objective '{objective.name}' reads no token activations to tell the images apart",
                       option="diversity", fix="use {option} 1 with logits, or feature, neuron, cls or residual.")
    weight = DIVERSITY_WEIGHT if weight is None else float(weight)
    if not weight >= 0 or weight == float("inf"):
        raise VizError(f"Diversity weight {weight} is not a number from 0", option="diversity_weight",
                       value=weight, fix="use e.g. {option} 1.")
    return weight


def _gram_target(objective):
    """The activations the facets are compared in: the objective's own token target (not logits)."""
    targets = sorted((t for t in objective.needs if t.kind != LOGITS), key=lambda t: (t.layer, t.kind))
    return targets[-1] if targets else None


def gram_similarity(tokens: torch.Tensor, features: int, facets: int, copies: int) -> torch.Tensor:
    """[features] mean pairwise cosine between the facets' Gram matrices; `tokens` is [features * facets * copies,
    P, C] in that order (a feature's facets together, each facet's augmented copies together)."""
    tokens = tokens.float()
    grams = torch.einsum("vpc,vpd->vcd", tokens, tokens).flatten(1)
    grams = F.normalize(grams, dim=1).view(features, facets, copies, -1).transpose(1, 2)  # [F, copies, N, D]
    cosines = grams @ grams.transpose(2, 3)  # [F, copies, N, N]
    pairs = facets * (facets - 1)
    return ((cosines.sum((2, 3)) - cosines.diagonal(dim1=2, dim2=3).sum(2)) / pairs).mean(1)


class Repulsion:
    """The diversity term of one render batch: weight x facets x mean pairwise Gram cosine, summed over features
    (per image, as the objective is summed per image)."""

    def __init__(self, objective, facets: int, weight: float):
        self.target, self.facets, self.weight = _gram_target(objective), facets, weight

    def __call__(self, acts, features: int, copies: int) -> torch.Tensor:
        similarity = gram_similarity(acts.patches(self.target), features, self.facets, copies)
        return self.weight * self.facets * similarity.sum()
