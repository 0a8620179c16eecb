"""The objective a CLI or app request names: a channel objective, optionally read along a direction, or a CLIP
text prompt; optionally negated. One place, so both surfaces build (and check the vector file of) the same
objective."""

from __future__ import annotations

from ..errors import VizError
from .directions import direction_objective
from .objectives import Negative, Objective, make_objective
from .prompts import PROMPT_OBJECTIVES, prompt_objective, prompt_texts


def requested_objective(name: str | Objective, layer: int | None, *, direction: str | None = None,
                        cosine: bool = False, negative: bool = False, sae=None, sae_site: str | None = None,
                        token=None, prompt=None, negative_prompt: str | None = None) -> Objective:
    """direction: a vector source (see core/directions.py) read at the named objective's site, one feature per
    vector; cosine: its cosine instead of the projection; negative: the image that drives it most negative;
    sae: the gallery (folder or Hub id) whose sparse autoencoder of `layer` the sae objectives read.
    prompt: one text or several (see core/prompts.py), for objective `prompt` or `prompt-cls` (the default
    `feature` becomes `prompt`); negative_prompt: a text whose cosine is subtracted."""
    if sae and not isinstance(name, Objective):
        from ..sae.objective import sae_objective

        base = name[: -len(Negative.SUFFIX)] if name.endswith(Negative.SUFFIX) else name
        objective = sae_objective(base, layer, sae, site=sae_site, token=token)
        return Negative(objective) if negative or base != name else objective
    if prompt is not None or negative_prompt or name in PROMPT_OBJECTIVES:
        return _prompt_objective(name, layer, prompt, negative_prompt, direction=direction, cosine=cosine,
                                 negative=negative)
    objective = make_objective(name, layer)
    if isinstance(objective, Negative):  # "feature-negative": the direction goes inside, the sign outside
        objective, negative = objective.base, True
    if direction:
        objective = direction_objective(objective, direction, cosine=cosine)
    elif cosine:
        raise VizError("Cosine needs a direction", option="direction",
                       fix="give {option} a vector file (or difference:A,B) with the cosine switch.")
    return Negative(objective) if negative else objective


def _prompt_objective(name, layer, prompt, negative_prompt, *, direction, cosine, negative) -> Objective:
    name = "prompt" if name == "feature" else name
    if name not in PROMPT_OBJECTIVES:
        raise VizError(f"A text prompt is maximized by objective prompt or prompt-cls, not {name}", option="objective",
                       value=name, fix="{option:use} prompt (the image embedding) or prompt-cls (a block's CLS).")
    if direction or cosine:
        raise VizError("A text prompt has its own direction (the text embedding)", option="direction",
                       fix="leave {option} empty with a prompt.")
    objective = prompt_objective(name, layer, prompt_texts(prompt), negative_prompt)  # no text: refused here
    return Negative(objective) if negative else objective
