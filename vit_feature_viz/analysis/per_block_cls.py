"""Per-block CLS: the model's final norm and classifier head applied to the CLS token after each block. How
early is the class decided? The last block gives the unchanged model's accuracy."""

from __future__ import annotations

import torch

from ..models.stages import TokenStages
from .blockwise import run_blockwise
from .common import AnalysisResult, short_name
from .plots import Panel, accuracy_lines, line_figure

EXPERIMENT = "per_block_cls"


def per_block_logits(stages: TokenStages, tokens: torch.Tensor) -> dict[int, torch.Tensor]:
    """{block index b: the head's logits on the tokens leaving block b} for b in 0..L-1."""
    out = {}
    for index, block in enumerate(stages.blocks):
        tokens = block(tokens)
        out[index] = stages.logits(tokens)
    return out


def per_block_cls(models, dataset, **options) -> AnalysisResult:
    """Top-1/top-5 of the head applied after every block."""
    classifiers, stages, counts, settings = run_blockwise(EXPERIMENT, models, dataset, per_block_logits, **options)
    rows, lines = [], []
    for clf in classifiers:
        blocks = list(range(stages[clf.model_id].num_layers))
        accs = [counts[(clf.model_id, b)] for b in blocks]
        rows += [{"model_id": clf.model_id, "block": b, "top1": a.top1, "top5": a.top5} for b, a in zip(blocks, accs)]
        lines += accuracy_lines(short_name(clf.model_id), blocks, accs)
    panel = Panel(f"{settings['dataset']} ({settings['split']}, {settings['images']} images)",
                  "block (from 0) whose CLS output is classified", "accuracy (%)", lines)
    figure = line_figure("Per-block CLS: final norm + head on the CLS token after each block", [panel])
    notes = [
        f"{short_name(clf.model_id)}: top-1 after each block "
        + ", ".join(f"{r['top1']:.1f}%" for r in rows if r["model_id"] == clf.model_id)
        for clf in classifiers
    ]
    return AnalysisResult(EXPERIMENT, rows, settings, figure, notes)
