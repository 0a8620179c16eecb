"""The objective a CLI or app request names: a channel objective, optionally read along a direction, optionally
negated. One place, so both surfaces build (and check the vector file of) the same objective."""

from __future__ import annotations

from ..errors import VizError
from .directions import direction_objective
from .objectives import Negative, Objective, make_objective


def requested_objective(name: str | Objective, layer: int | None, *, direction: str | None = None,
                        cosine: bool = False, negative: bool = False, sae=None, sae_site: str | None = None,
                        token=None) -> Objective:
    """direction: a vector source (see core/directions.py) read at the named objective's site, one feature per
    vector; cosine: its cosine instead of the projection; negative: the image that drives it most negative;
    sae: the gallery (folder or Hub id) whose sparse autoencoder of `layer` the sae objectives read."""
    if sae and not isinstance(name, Objective):
        from ..sae.objective import sae_objective

        base = name[: -len(Negative.SUFFIX)] if name.endswith(Negative.SUFFIX) else name
        objective = sae_objective(base, layer, sae, site=sae_site, token=token)
        return Negative(objective) if negative or base != name else objective
    objective = make_objective(name, layer)
    if isinstance(objective, Negative):  # "feature-negative": the direction goes inside, the sign outside
        objective, negative = objective.base, True
    if direction:
        objective = direction_objective(objective, direction, cosine=cosine)
    elif cosine:
        raise VizError("Cosine needs a direction", option="direction",
                       fix="give {option} a vector file (or difference:A,B) with the cosine switch.")
    return Negative(objective) if negative else objective
