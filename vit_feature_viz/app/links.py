"""Deep links: the app's URLs that open a gallery page (or a model to render) straight from a shared link."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlencode

from ..store.pages import MAX_INDEX, whole
from ..store.records import FeaturePage
from ..store.sources import normalize_source

LINK_KEYS = ("gallery", "model", "layer", "feature", "objective")


@dataclass(frozen=True)
class DeepLink:
    """What a URL asks to show: a gallery, and optionally a model, layer, feature and objective in it; or, without a
    gallery, a model (and layer and feature) to render and explore."""

    gallery: str | None
    model: str | None = None
    layer: int | None = None
    feature: int | None = None
    objective: str | None = None


def deep_link(base_url: str, **params: Any) -> str:
    """`base_url` with the page's query parameters (in a fixed order, empty ones left out)."""
    query = urlencode([(k, str(params[k])) for k in LINK_KEYS if params.get(k) not in (None, "")], safe="/")
    return f"{base_url.split('?')[0]}?{query}"


def parse_deep_link(params: Mapping[str, Any]) -> DeepLink | None:
    """The request a page's query parameters make, or None when they name neither a gallery nor a model (a link
    without a gallery names a model to render and explore); bad numbers, and numbers no gallery column can hold
    (they would overflow the page's number boxes), are a VizError."""
    gallery = normalize_source(params.get("gallery"))
    model = str(params.get("model") or "").strip() or None
    if not gallery and not model:
        return None
    layer, feature = params.get("layer"), params.get("feature")
    return DeepLink(
        gallery=gallery or None,
        model=model,
        layer=None if layer in (None, "") else whole(layer, "layer", minimum=0, maximum=MAX_INDEX),
        feature=None if feature in (None, "") else whole(feature, "feature", minimum=0, maximum=MAX_INDEX),
        objective=str(params.get("objective") or "").strip() or None,
    )


def feature_link(page: FeaturePage, base_url: str) -> str:
    """The shareable URL of a feature's page on the app served at `base_url`."""
    return deep_link(base_url, **page.link_params)
