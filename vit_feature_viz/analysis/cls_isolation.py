"""CLS isolation (paper, Table 1): the CLS token runs alone through blocks [0, l), the patch tokens run alone
through the same blocks, then they are joined for blocks [l, L). l = 0 is the unchanged model; l = L means the
CLS token never saw an image patch. Paper, ViT-B/16 on ImageNet: 84.20% natural, 78.61% isolated until the
last block (l = L - 1).

With two prefix tokens (DeiT's CLS + distillation) both run together, apart from the patches.
"""

from __future__ import annotations

import torch

from ..models.stages import TokenStages
from .blockwise import run_blockwise
from .common import AnalysisResult, short_name
from .plots import Panel, accuracy_lines, line_figure

EXPERIMENT = "cls_isolation"


def isolated_logits(stages: TokenStages, tokens: torch.Tensor) -> dict[int, torch.Tensor]:
    """{l: logits with the CLS token isolated for blocks [0, l)} for every l in 0..L."""
    prefix, patches = tokens[:, : stages.num_prefix], tokens[:, stages.num_prefix :]
    out = {}
    for l in range(stages.num_layers + 1):
        out[l] = stages.logits(stages.run(torch.cat([prefix, patches], dim=1), l))
        if l < stages.num_layers:
            prefix, patches = stages.blocks[l](prefix), stages.blocks[l](patches)
    return out


def cls_isolation(models, dataset, **options) -> AnalysisResult:
    """Top-1/top-5 for every isolation depth l of each model. Options: split, max_images, batch_size,
    streaming, image_column, label_column, progress, and load options (device, allow_pickle, ...)."""
    classifiers, stages, counts, settings = run_blockwise(EXPERIMENT, models, dataset, isolated_logits, **options)
    rows, lines = [], []
    for clf in classifiers:
        depths = list(range(stages[clf.model_id].num_layers + 1))
        accs = [counts[(clf.model_id, l)] for l in depths]
        rows += [{"model_id": clf.model_id, "isolated_blocks": l, "top1": a.top1, "top5": a.top5}
                 for l, a in zip(depths, accs)]
        lines += accuracy_lines(short_name(clf.model_id), depths, accs)
    panel = Panel(f"{settings['dataset']} ({settings['split']}, {settings['images']} images)",
                  "blocks the CLS token runs alone, l (0 = unchanged model)", "accuracy (%)", lines)
    figure = line_figure("CLS isolation: CLS and patches apart for blocks [0, l), joined after", [panel])
    notes = [
        f"{short_name(clf.model_id)}: natural {_top1(rows, clf, 0)}, CLS isolated until the last block "
        f"{_top1(rows, clf, stages[clf.model_id].num_layers - 1)}, never joined {_top1(rows, clf, stages[clf.model_id].num_layers)}"
        for clf in classifiers
    ]
    return AnalysisResult(EXPERIMENT, rows, settings, figure, notes)


def _top1(rows, clf, depth) -> str:
    row = next(r for r in rows if r["model_id"] == clf.model_id and r["isolated_blocks"] == depth)
    return f"{row['top1']:.1f}% top-1 / {row['top5']:.1f}% top-5 (l={depth})"
