"""Low-pass and high-pass filtering: accuracy versus the cutoff frequency of an ideal Fourier-domain filter, for
several models in one plot (the paper: ViTs degrade less than ResNets under low-pass filtering).

The filter is square in frequency: a low-pass at cutoff c keeps the frequencies with |fx| <= c and |fy| <= c
(cycles per pixel, at the model's input size), so c = 0.5 (Nyquist) keeps every frequency and leaves the image
unchanged. The high-pass keeps the complement plus the mean colour (the DC term), so images stay in range.
Cutoffs are given as fractions of Nyquist."""

from __future__ import annotations

import torch

from ..errors import VizError
from .common import AnalysisResult, base_settings, load_classifiers, open_data, short_name, sweep
from .plots import Line, Panel, line_figure

EXPERIMENT = "frequency"
NYQUIST = 0.5  # cycles per pixel
DEFAULT_CUTOFFS = (0.03125, 0.0625, 0.125, 0.25, 0.5, 1.0)  # fractions of Nyquist
KINDS = ("low", "high")


def frequency_filter(images: torch.Tensor, cutoff: float, kind: str = "low") -> torch.Tensor:
    """Ideal low/high-pass of images [..., H, W] at `cutoff` cycles per pixel (0 to 0.5), clamped to [0, 1]."""
    height, width = images.shape[-2:]
    fy = torch.fft.fftfreq(height, device=images.device).abs()
    fx = torch.fft.fftfreq(width, device=images.device).abs()
    keep = (fy[:, None] <= cutoff + 1e-9) & (fx[None, :] <= cutoff + 1e-9)
    if kind == "high":
        keep = ~keep
        keep[0, 0] = True
    spectrum = torch.fft.fft2(images.float())
    return torch.fft.ifft2(spectrum * keep).real.clamp(0, 1)


def check_cutoffs(cutoffs) -> list[float]:
    values = sorted({float(c) for c in cutoffs})
    if not values or values[0] < 0 or values[-1] > 1:
        raise VizError(f"Cutoffs must be fractions of Nyquist between 0 and 1, not {cutoffs}: use e.g. 0.125,0.25,0.5,1.")
    return values


def frequency(
    models, dataset, *, cutoffs=DEFAULT_CUTOFFS, split=None, max_images=None, batch_size=32, streaming=False,
    image_column=None, label_column=None, progress=True, checkpoint=None, token=None, **load_options,
) -> AnalysisResult:
    """Top-1/top-5 of each model (ViTs and CNNs) on low-pass and high-pass filtered images at each cutoff."""
    fractions = check_cutoffs(cutoffs)
    classifiers = load_classifiers(models, allow_cnn=True, token=token, **load_options)
    data = open_data(dataset, split=split, image_column=image_column, label_column=label_column, streaming=streaming,
                     max_images=max_images, token=token)

    def score(clf, batch, prepare):
        images = prepare(batch.images)
        return {(kind, f): clf.logits(frequency_filter(images, f * NYQUIST, kind)) for kind in KINDS for f in fractions}

    counts, seen = sweep(classifiers, data, score, max_images=max_images, batch_size=batch_size, progress=progress,
                         desc="frequency filters", checkpoint=checkpoint)
    settings = {**base_settings(EXPERIMENT, classifiers, data, split, max_images, seen), "cutoffs": fractions}
    rows, panels = [], []
    for kind in KINDS:
        lines = []
        for clf in classifiers:
            accs = [counts[(clf.model_id, (kind, f))] for f in fractions]
            rows += [{"model_id": clf.model_id, "kind": clf.kind, "filter": f"{kind}-pass", "cutoff": f,
                      "cutoff_cycles_per_pixel": f * NYQUIST, "top1": a.top1, "top5": a.top5}
                     for f, a in zip(fractions, accs)]
            lines.append(Line(f"{short_name(clf.model_id)} ({clf.kind})", fractions, [a.top1 for a in accs]))
        keeps = "below" if kind == "low" else "above"
        panels.append(Panel(f"{kind}-pass: keeps frequencies {keeps} the cutoff", "cutoff (fraction of Nyquist)",
                            "top-1 accuracy (%)", lines, xscale="log" if fractions[0] > 0 else "linear",
                            xticks=fractions))
    figure = line_figure(f"Accuracy on filtered images: {settings['dataset']} ({split}, {seen} images)", panels)
    notes = [
        f"{short_name(clf.model_id)} top-1 by cutoff ({', '.join(f'{f:g}' for f in fractions)}): "
        + "; ".join(
            f"{kind}-pass " + ", ".join(f"{counts[(clf.model_id, (kind, f))].top1:.1f}" for f in fractions)
            for kind in KINDS)
        for clf in classifiers
    ]
    return AnalysisResult(EXPERIMENT, rows, settings, figure, notes)
