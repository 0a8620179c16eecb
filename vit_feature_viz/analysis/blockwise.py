"""The loop the per-block experiments share: ViT classifiers taken apart into stages (models/stages.py), each
batch embedded once, and an experiment-specific walk over the blocks that returns {key: logits}."""

from __future__ import annotations

from collections.abc import Callable

import torch

from ..models.stages import TokenStages, token_stages
from .common import base_settings, load_classifiers, open_data, sweep
from .probe import with_probe_head

Walk = Callable[[TokenStages, torch.Tensor], dict]


def run_blockwise(experiment: str, models, dataset, walk: Walk, *, split=None, max_images=None, batch_size=32,
                  streaming=False, image_column=None, label_column=None, progress=True, checkpoint=None, token=None,
                  **load_options):
    """Returns (classifiers, stages by model id, accuracy counts by (model id, key), settings); `token` reads the
    models and the data (None: the local user's own login)."""
    classifiers = load_classifiers(models, allow_cnn=False, token=token, **load_options)
    stages = {c.model_id: with_probe_head(token_stages(c.vision_model), c.probe) for c in classifiers}
    for s in stages.values():
        s.need_head()
    data = open_data(dataset, split=split, image_column=image_column, label_column=label_column, streaming=streaming,
                     max_images=max_images, token=token)

    def score(clf, batch, prepare):
        model, st = clf.vision_model, stages[clf.model_id]
        images = prepare(batch.images)
        with model.autocast():
            return walk(st, st.embed(model.normalize(images.to(model.device))))

    counts, seen = sweep(classifiers, data, score, max_images=max_images, batch_size=batch_size, progress=progress,
                         desc=experiment.replace("_", " "), checkpoint=checkpoint)
    return classifiers, stages, counts, base_settings(experiment, classifiers, data, split, max_images, seen)

