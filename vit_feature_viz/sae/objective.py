"""The `sae` objectives: a sparse autoencoder's latent as a feature, wherever a channel works (render, dataset
examples, patch maps, galleries).

What is maximized (rendering) is the latent's pre-activation, its encoder row read from the layer's (normalized) activations
plus its bias: what makes the latent fire. It is linear in the activations, so it has a gradient even where the
TopK keeps the latent at zero (the TopK value itself would give a blank image no gradient). Like a channel it is
read as the mean over patches (`sae`), at one patch (`sae-neuron`) or at the CLS token (`sae-cls`).

Dataset examples (and CLIP names, which read them) rank images by the latent's TopK code instead, the same reading
(mean over patches, one patch, CLS): where the latent really fires. Its top images are purer than by the
pre-activation (benchmarks/bench_sae.py: label purity 0.695 against 0.648 on the colour model).

The objective's name in a gallery names the SAE: `sae(fc1 1a2b3c4d)`, the site and the first 8 hex digits of the
weights' sha256, so latents of two SAEs of one layer never share a row, and a deep link names its SAE.
"""

from __future__ import annotations

import torch

from ..core.objectives import Channel, patch_at
from ..errors import VizError
from ..models.base import MLP, RESIDUAL, Activations, VisionModel
from .saved import SavedSae

SITE_TARGETS = {"fc1": MLP, "residual": RESIDUAL}


def needs_sae() -> VizError:
    return VizError("The sae objectives read a sparse autoencoder's latents", option="sae",
                    fix="{option:pass} a gallery folder or Hub gallery id holding one (made by `vit-feature-viz sae "
                        "train`).")


class SaeLatent(Channel):
    """A latent of `saved` (a SavedSae), read as the mean over patch tokens."""

    variant = "sae"

    def __init__(self, layer: int | None, channel: int | None = None, saved: SavedSae | None = None):
        if saved is None:  # named without its SAE (`--objective sae` without `--sae`): refused at check()
            super().__init__(layer, channel)
            self.saved, self.name = None, self.variant
            return
        if layer is not None and int(layer) != saved.layer:
            raise VizError(f"The sparse autoencoder was trained on layer {saved.layer}, not {layer}", option="layer",
                           fix=f"{{option:use}} {saved.layer}.")
        self.kind = SITE_TARGETS[saved.site]
        super().__init__(saved.layer, channel)
        self.saved = saved
        self.name = f"{self.variant}({saved.site} {saved.short_hash})"

    def num_channels(self, model: VisionModel) -> int:
        self.check(model)
        return self.saved.sae.latents

    def check(self, model: VisionModel) -> None:
        if self.saved is None:
            raise needs_sae()
        width = model.width(self.target)
        if width != self.saved.sae.width:
            raise VizError(f"The sparse autoencoder reads {self.saved.sae.width} channels, but layer {self.layer} "
                           f"({self.saved.site}) of '{model.model_id}' has {width}", option="sae",
                           fix=f"{{option:pass}} an SAE trained on {model.model_id} (this one is of "
                               f"{self.saved.model_id}).")

    def _pre(self, tokens: torch.Tensor) -> torch.Tensor:
        if self.saved is None:
            raise needs_sae()
        sae = self.saved.sae.to(tokens.device)
        return sae.pre_activations(tokens.float())

    def _codes(self, tokens: torch.Tensor) -> torch.Tensor:
        if self.saved is None:
            raise needs_sae()
        sae = self.saved.sae.to(tokens.device)
        return sae.encode(tokens.float())

    def values(self, acts: Activations) -> torch.Tensor:
        return self._pre(acts.patches(self.target).float().mean(1))  # linear: the mean token's pre-activation

    def example_values(self, acts: Activations) -> torch.Tensor:
        """The mean over patches of the latent's TopK code: images ranked by where it really fires."""
        return self._codes(acts.patches(self.target)).mean(1)

    def patch_values(self, acts: Activations) -> torch.Tensor:
        """Where the latent fires: its TopK code at each patch (zero where it does not)."""
        return self._codes(acts.patches(self.target))


class SaeNeuron(SaeLatent):
    """A latent at one patch (row-major index into the grid; default: the centre patch)."""

    variant = "sae-neuron"

    def __init__(self, layer, channel=None, saved=None, position: int | None = None):
        super().__init__(layer, channel, saved)
        self.position = position

    def values(self, acts):
        return self._pre(patch_at(acts, self.target, self.position))

    def example_values(self, acts):
        return self._codes(patch_at(acts, self.target, self.position))


class SaeCls(SaeLatent):
    """A latent read at the CLS token (an SAE trained on patch tokens; the CLS token may sit off their manifold)."""

    variant = "sae-cls"

    def _token(self, acts) -> torch.Tensor:
        if acts.num_prefix < 1:
            raise VizError("This model has no CLS token", option="objective", fix="{option:use} sae or sae-neuron.")
        return acts[self.target][:, 0]

    def values(self, acts):
        return self._pre(self._token(acts))

    def example_values(self, acts):
        return self._codes(self._token(acts))


VARIANTS = {"sae": SaeLatent, "sae-neuron": SaeNeuron, "sae-cls": SaeCls}


def sae_objective(name: str, layer: int, source, *, site: str | None = None, token=None) -> SaeLatent:
    """The `name` variant (sae, sae-neuron, sae-cls) over the SAE of `layer` in `source` (a SavedSae, an SAE or
    gallery folder, or a Hub gallery id)."""
    from .saved import load_sae

    if name not in VARIANTS:
        raise VizError(f"--sae goes with the objectives {', '.join(VARIANTS)}, not '{name}'", option="objective",
                       fix="{option:use} sae.")
    saved = source if isinstance(source, SavedSae) else load_sae(source, layer, site, token=token)
    return VARIANTS[name](layer, saved=saved)
