"""Token pooling (paper, Table 1): drop the CLS token after block l and classify the mean or the max of the
final-normed patch tokens with the model's own head. l = L pools the patch tokens of the unchanged model.
Paper, ViT-B/16: 75.75% (mean), 80.16% (max) against 84.20% natural."""

from __future__ import annotations

import torch

from ..models.stages import TokenStages
from .blockwise import run_blockwise
from .common import AnalysisResult, short_name
from .plots import Line, Panel, line_figure

EXPERIMENT = "token_pooling"
POOLS = ("mean", "max")
NATURAL = "cls"


def pooled_logits(stages: TokenStages, tokens: torch.Tensor) -> dict:
    """{(l, pool): logits} for l in 0..L and both pools, plus {"cls": the unchanged model's logits}."""
    out = {}
    for l in range(stages.num_layers + 1):
        patches = stages.run(tokens[:, stages.num_prefix :], l)
        for pool in POOLS:
            out[(l, pool)] = stages.pooled_logits(patches, pool)
        if l < stages.num_layers:
            tokens = stages.blocks[l](tokens)
    out[NATURAL] = stages.logits(tokens)
    return out


def token_pooling(models, dataset, **options) -> AnalysisResult:
    """Top-1/top-5 of mean- and max-pooled patch tokens for every block l after which CLS is dropped."""
    classifiers, stages, counts, settings = run_blockwise(EXPERIMENT, models, dataset, pooled_logits, **options)
    rows, lines, references = [], [], []
    for clf in classifiers:
        name, depths = short_name(clf.model_id), list(range(stages[clf.model_id].num_layers + 1))
        natural = counts[(clf.model_id, NATURAL)]
        rows.append({"model_id": clf.model_id, "cls_dropped_after": None, "pool": NATURAL,
                     "top1": natural.top1, "top5": natural.top5})
        references.append((f"{name} with CLS: {natural.top1:.1f}%", natural.top1))
        for style, pool in enumerate(POOLS):
            accs = [counts[(clf.model_id, (l, pool))] for l in depths]
            rows += [{"model_id": clf.model_id, "cls_dropped_after": l, "pool": pool, "top1": a.top1, "top5": a.top5}
                     for l, a in zip(depths, accs)]
            lines.append(Line(f"{name} ({pool} of patches)", depths, [a.top1 for a in accs], style))
    panel = Panel(f"{settings['dataset']} ({settings['split']}, {settings['images']} images)",
                  "block after which CLS is dropped, l (L = pool the final tokens)", "top-1 accuracy (%)", lines,
                  references=references)
    figure = line_figure("Token pooling: classify the mean / max of patch tokens", [panel])
    notes = []
    for clf in classifiers:
        last = stages[clf.model_id].num_layers
        found = {(r["cls_dropped_after"], r["pool"]): r for r in rows if r["model_id"] == clf.model_id}
        notes.append(
            f"{short_name(clf.model_id)}: with CLS {found[(None, NATURAL)]['top1']:.1f}%, mean of final patch tokens "
            f"{found[(last, 'mean')]['top1']:.1f}%, max {found[(last, 'max')]['top1']:.1f}%, CLS dropped after block 0: "
            f"mean {found[(0, 'mean')]['top1']:.1f}%, max {found[(0, 'max')]['top1']:.1f}% (top-1)"
        )
    return AnalysisResult(EXPERIMENT, rows, settings, figure, notes)
