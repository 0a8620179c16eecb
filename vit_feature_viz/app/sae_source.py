"""The SAE a Render, Explore or Analyses request names in its "SAE" box: a gallery's Hub id (off a Space also a
folder), or the visitor's session gallery, which the SAE tab writes into the boxes after training or opening one
("your session gallery (fc1)": the site picks one when the layer has both).

On a Space an SAE is read with the visitor's own token (never the server's) and only up to the preset's
`max_sae_parameters`, checked from the Hub listing and the safetensors header before anything is downloaded or
loaded (sae/saved.py): a hostile SAE cannot cost the server gigabytes.
"""

from __future__ import annotations

import re
from typing import Any

from ..errors import VizError
from .common import SESSION_GALLERY, check_name, is_session_gallery

SITE_SUFFIX = re.compile(r"^(.*?)\s*\((fc1|residual)\)$")
SAE_EXAMPLE = "your-name/shapes-sae"
SAE_BOX_INFO = ("a gallery holding a sparse autoencoder of the layer (Hub id); filled with your session gallery "
                "when you train or open one in the SAE tab; used by the sae objectives")


def session_sae(site: str) -> str:
    """What the SAE boxes say for the SAE of `site` in the visitor's session gallery (never a server path)."""
    return f"{SESSION_GALLERY} ({site})"


def requested_sae(box: Any, session: str | None, layer: int, preset, token):
    """The SavedSae of `layer` that the box names, or None when it is empty."""
    from ..sae.saved import load_sae

    text = str(box or "").strip()
    if not text:
        return None
    site = None
    match = SITE_SUFFIX.match(text)
    if match:
        text, site = match.group(1).strip(), match.group(2)
    cap = preset.max_sae_parameters
    if not is_session_gallery(text):
        source = check_name(text, "gallery", SAE_EXAMPLE)
        return load_sae(source, layer, site, token=token, max_parameters=cap, label=source)
    if not session:
        raise VizError("Your session gallery holds no sparse autoencoder yet: train one in the SAE tab, or enter a "
                       "gallery's Hub id in the SAE box.")
    try:
        return load_sae(session, layer, site, token=token, max_parameters=cap, label=SESSION_GALLERY)
    except VizError as err:  # its messages name the folder: the visitor knows it as their session gallery
        raise VizError(err.problem.replace(str(session), SESSION_GALLERY), option=err.option, value=err.value,
                       fix=err.fix, note=err.note) from None


def sae_objective_or_name(objective: str, box: Any, session: str | None, layer: int, preset, token):
    """What a request renders or scans: the named objective, or for the sae ones (sae, sae-neuron, sae-cls) that
    objective over the box's SAE (a VizError saying where to give one when the box is empty). An SAE in the box
    is not read for the other objectives, so a filled box never gets in the way of channels."""
    from ..core.registries import SAE_OBJECTIVES
    from ..sae.objective import needs_sae, sae_objective

    base = str(objective or "").removesuffix("-negative")
    if base not in SAE_OBJECTIVES:
        return objective
    saved = requested_sae(box, session, layer, preset, token)
    if saved is None:
        raise needs_sae()
    from ..core.objectives import Negative

    latent = sae_objective(base, layer, saved)
    return Negative(latent) if base != objective else latent
