"""Block removal (Bhojanapalli et al. 2021, *Understanding Robustness of Transformers for Image Classification*):
accuracy with one block left out, for every block, three ways: the whole block skipped (its input goes straight
to the next block), only its attention skipped, only its MLP skipped (the residual is kept in both; see
models/branches.py). Their finding on ViT-B/16: apart from the first block, removing any single block barely
hurts; removing attention hurts more than removing the MLP.

The blocks before the removed one are run once per batch and shared by every removal.
"""

from __future__ import annotations

import torch

from ..models.branches import ATTENTION, MLP_BRANCH, block_branches, switched_off
from ..models.stages import TokenStages
from .blockwise import run_blockwise
from .common import AnalysisResult, short_name
from .plots import Line, Panel, line_figure

EXPERIMENT = "block_removal"
WHOLE = "block"
PARTS = (WHOLE, ATTENTION, MLP_BRANCH)  # what is skipped
PART_LABELS = {WHOLE: "whole block", ATTENTION: "attention only", MLP_BRANCH: "MLP only"}
NATURAL = "none"


def removal_logits(stages: TokenStages, tokens: torch.Tensor) -> dict:
    """{"none": the unchanged model's logits, (l, part): logits with `part` of block l skipped}."""
    branches = block_branches(stages.model)
    states = [tokens]  # states[l]: the tokens entering block l
    for block in stages.blocks:
        states.append(block(states[-1]))
    out = {NATURAL: stages.logits(states[-1])}
    for l, block in enumerate(stages.blocks):
        for part in PARTS:
            if part == WHOLE:
                leaving = states[l]
            else:
                with switched_off([branches[l].branch(part)]):
                    leaving = block(states[l])
            out[(l, part)] = stages.logits(stages.run(leaving, l + 1))
    return out


def block_removal(models, dataset, **options) -> AnalysisResult:
    """Top-1/top-5 of each ViT with each block (or its attention, or its MLP) skipped. Options: split, max_images,
    batch_size, streaming, image_column, label_column, progress, probe, and load options (device, ...)."""
    classifiers, stages, counts, settings = run_blockwise(EXPERIMENT, models, dataset, removal_logits, **options)
    rows, lines, references, notes = [], [], [], []
    for clf in classifiers:
        name, blocks = short_name(clf.model_id), list(range(stages[clf.model_id].num_layers))
        natural = counts[(clf.model_id, NATURAL)]
        rows.append({"model_id": clf.model_id, "block": None, "removed": NATURAL, "top1": natural.top1,
                     "top5": natural.top5, "top1_drop": 0.0})
        references.append((f"{name} unchanged: {natural.top1:.1f}%", natural.top1))
        for style, part in enumerate(PARTS):
            accs = [counts[(clf.model_id, (l, part))] for l in blocks]
            rows += [{"model_id": clf.model_id, "block": l, "removed": part, "top1": a.top1, "top5": a.top5,
                      "top1_drop": natural.top1 - a.top1} for l, a in zip(blocks, accs)]
            lines.append(Line(f"{name} ({PART_LABELS[part]} skipped)", blocks, [a.top1 for a in accs], style))
        notes.append(_note(name, natural.top1, [r for r in rows if r["model_id"] == clf.model_id]))
    panel = Panel(f"{settings['dataset']} ({settings['split']}, {settings['images']} images)",
                  "block removed, l", "top-1 accuracy (%)", lines, references=references)
    figure = line_figure("Block removal: one block, its attention or its MLP skipped (residual kept)", [panel])
    return AnalysisResult(EXPERIMENT, rows, settings, figure, notes)


def _note(name: str, natural: float, rows: list[dict]) -> str:
    """Unchanged accuracy, the first block's removal, the worst later block, and the mean drop per part."""
    by = {(r["block"], r["removed"]): r["top1"] for r in rows}
    later = [r for r in rows if r["removed"] == WHOLE and r["block"]]
    worst = min(later, key=lambda r: r["top1"]) if later else None
    drops = {p: [r["top1_drop"] for r in rows if r["removed"] == p] for p in PARTS}
    means = ", ".join(f"{PART_LABELS[p]} {sum(d) / len(d):.1f}" for p, d in drops.items())
    worst_text = f", worst later block {worst['block']}: {worst['top1']:.1f}%" if worst else ""
    return (f"{name}: unchanged {natural:.1f}% top-1; block 0 removed {by[(0, WHOLE)]:.1f}%{worst_text}; "
            f"mean top-1 drop by part skipped: {means} points")
