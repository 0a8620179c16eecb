"""What to maximize: small objects that read captured activations and compose with +, - and * (as in Lucid).

Every objective scores a batch where image b belongs to channel `channels[b]`, so many features render in one
batch. A primitive can also pin its own channel (`Feature(5, channel=10)`) to build fixed composites such as
`Feature(5, channel=10) + 0.5 * Feature(5, channel=20)`.
"""

from __future__ import annotations

import torch

from ..errors import VizError
from ..models.base import LOGITS, MLP, RESIDUAL, Activations, Target, VisionModel
from .registries import OBJECTIVES


class Objective:
    """Base: `__call__(acts, channels) -> [B]` scores to maximize; `needs` says which activations to capture."""

    needs: frozenset[Target] = frozenset()
    name: str = "objective"

    def __call__(self, acts: Activations, channels: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError

    def num_channels(self, model: VisionModel) -> int:
        """How many features this objective can pick from (the width of its target)."""
        widths = {model.width(t) for t in self.needs}
        return min(widths)

    def check(self, model: VisionModel) -> None:
        """Raise a one-line VizError if this model cannot serve the objective."""
        for target in self.needs:
            model.width(target)

    def __add__(self, other: Objective) -> Objective:
        return _Combined([(1.0, self), (1.0, other)])

    def __sub__(self, other: Objective) -> Objective:
        return _Combined([(1.0, self), (-1.0, other)])

    def __mul__(self, weight: float) -> Objective:
        return _Combined([(float(weight), self)])

    __rmul__ = __mul__

    def __neg__(self) -> Objective:
        return self * -1.0


class _Combined(Objective):
    """A weighted sum of objectives."""

    def __init__(self, terms: list[tuple[float, Objective]]):
        flat: list[tuple[float, Objective]] = []
        for weight, term in terms:
            if isinstance(term, _Combined):
                flat.extend((weight * w, t) for w, t in term.terms)
            else:
                flat.append((weight, term))
        self.terms = flat
        self.needs = frozenset().union(*(t.needs for _, t in flat))
        self.name = " + ".join(f"{w:g}*{t.name}" for w, t in flat)

    def num_channels(self, model: VisionModel) -> int:
        """The fewest features any term without a pinned channel offers (a prompt term: its prompts)."""
        free = [t.num_channels(model) for _, t in self.terms if getattr(t, "channel", None) is None]
        return min(free) if free else super().num_channels(model)

    def check(self, model: VisionModel) -> None:
        """Each term checks (and binds: a prompt's text, a direction's rows) itself; what they need may follow."""
        for _, term in self.terms:
            term.check(model)
        self.needs = frozenset().union(*(t.needs for _, t in self.terms))

    def __call__(self, acts, channels):
        return sum(w * t(acts, channels) for w, t in self.terms)


class Channel(Objective):
    """A primitive: reduce one target to per-channel values [B, C], then pick each image's channel."""

    kind = MLP
    name = "channel"

    def __init__(self, layer: int | None, channel: int | None = None):
        self.layer = layer
        self.channel = channel
        self.needs = frozenset({self.target})

    @property
    def target(self) -> Target:
        return Target(self.kind, self.layer)

    def values(self, acts: Activations) -> torch.Tensor:
        """Per-channel scores [B, C]; examples scans use this to score every feature in one pass."""
        raise NotImplementedError

    def patch_values(self, acts: Activations) -> torch.Tensor | None:
        """Per-patch values [B, patches, C] behind the score, for patch activation maps (None if it has none)."""
        return acts.patches(Target(MLP, self.layer))

    def example_values(self, acts: Activations) -> torch.Tensor:
        """Per-channel scores [B, C] that rank dataset examples: the values, unless another reading ranks images
        better (an SAE latent: its TopK code, sae/objective.py)."""
        return self.values(acts)

    def __call__(self, acts, channels):
        values = self.values(acts)
        if self.channel is not None:
            return values[:, self.channel]
        return values.gather(1, channels.to(values.device).view(-1, 1)).squeeze(1)


class Feature(Channel):
    """The paper's objective: a channel of the MLP hidden (fc1 after GELU), averaged over patch tokens, CLS excluded."""

    name = "feature"

    def values(self, acts):
        return acts.patches(self.target).float().mean(1)


class Neuron(Channel):
    """One MLP channel at one patch position (row-major index into the patch grid; default: the centre patch)."""

    name = "neuron"

    def __init__(self, layer: int, channel: int | None = None, position: int | None = None):
        super().__init__(layer, channel)
        self.position = position

    def values(self, acts):
        return patch_at(acts, self.target, self.position).float()


def patch_at(acts, target, position: int | None):
    """The activations of `target` at one patch (row-major index into the grid; None: the centre patch), as every
    one-patch objective reads them; a position outside the grid is a one-line VizError."""
    patches = acts.patches(target)
    grid_h, grid_w = acts.grid
    position = position if position is not None else (grid_h // 2) * grid_w + grid_w // 2
    if not 0 <= position < patches.shape[1]:
        raise VizError(f"Patch position {position} is outside the {grid_h}x{grid_w} grid: use 0-{patches.shape[1] - 1}.")
    return patches[:, position]


class ClsToken(Channel):
    """An MLP channel at the CLS token, the token the classifier reads."""

    name = "cls"

    def values(self, acts):
        if acts.num_prefix < 1:
            raise VizError("This model has no CLS token", option="objective", fix="{option:use} feature or neuron.")
        return acts[self.target][:, 0].float()


class Residual(Channel):
    """A channel of the block's output (the residual stream), averaged over patch tokens."""

    kind = RESIDUAL
    name = "residual"

    def values(self, acts):
        return acts.patches(self.target).float().mean(1)

    def patch_values(self, acts):
        return acts.patches(self.target)


class Logit(Channel):
    """A class logit of a classifier checkpoint; the layer is ignored."""

    kind = LOGITS
    name = "logit"

    def __init__(self, layer: int | None = None, channel: int | None = None):
        super().__init__(None, channel)

    def values(self, acts):
        return acts[self.target].float()

    def patch_values(self, acts):
        return None


class Negative(Channel):
    """A channel objective turned around: the image that drives the feature most negative (Microscope's other
    end). Its name is the objective's with `-negative`, so a gallery keeps both ends of a feature side by side."""

    SUFFIX = "-negative"

    def __init__(self, base: Channel):
        if not isinstance(base, Channel) or isinstance(base, Negative):
            raise VizError("Only a single objective (feature, neuron, cls, residual, logit, a direction) can be negated",
                           option="objective", fix="negate the objective itself: -objective in Python.")
        super().__init__(base.layer, base.channel)
        self.kind, self.base, self.needs = base.kind, base, base.needs
        self.name = base.name + self.SUFFIX

    def num_channels(self, model):
        return self.base.num_channels(model)

    def check(self, model):
        self.base.check(model)
        self.layer, self.needs = self.base.layer, self.base.needs  # a prompt learns its block from the model

    def values(self, acts):
        return -self.base.values(acts)

    def patch_values(self, acts):
        patches = self.base.patch_values(acts)
        return None if patches is None else -patches


def make_objective(name: str | Objective, layer: int | None, *, negative: bool = False) -> Objective:
    """Objective by name (the CLI/app path) or pass an Objective through (the library path); negative (or a name
    ending in `-negative`, as galleries store it): minimize instead. Directions: core/requested.py."""
    if isinstance(name, Objective):
        objective = name
    else:
        base_name = name[: -len(Negative.SUFFIX)] if name.endswith(Negative.SUFFIX) else name
        negative = negative or base_name != name
        objective = OBJECTIVES.get(base_name)(layer)
    return Negative(objective) if negative else objective
