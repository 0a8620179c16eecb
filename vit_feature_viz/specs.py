"""Parse feature specs such as ``7``, ``0,5,9``, ``0-63`` or ``all``: the same syntax in CLI, app and library."""

from __future__ import annotations

from collections.abc import Iterable

from .errors import VizError


def parse_features(spec: str | int | Iterable[int], num_features: int | None = None) -> list[int]:
    """Turn a spec into a sorted, de-duplicated list of feature indices, checked against ``num_features``."""
    if isinstance(spec, int):
        features = [spec]
    elif isinstance(spec, str):
        features = _parse_text(spec, num_features)
    else:
        features = [int(f) for f in spec]
    if not features:
        raise VizError("No features given: pass e.g. 7, 0,5,9 or 0-63.")
    features = sorted(set(features))
    if num_features is not None:
        bad = [f for f in features if f < 0 or f >= num_features]
        if bad:
            raise VizError(
                f"Feature {bad[0]} is out of range: this layer has {num_features} features, use 0-{num_features - 1}."
            )
    return features


def _parse_text(spec: str, num_features: int | None) -> list[int]:
    text = spec.strip().lower()
    if text == "all":
        if num_features is None:
            raise VizError("'all' needs a known layer width: pick a layer first.")
        return list(range(num_features))
    features: list[int] = []
    for part in text.replace(" ", "").split(","):
        try:
            if "-" in part[1:]:
                cut = part.index("-", 1)
                start, stop = int(part[:cut]), int(part[cut + 1 :])
                if stop < start:
                    raise ValueError
                features.extend(range(start, stop + 1))
            else:
                features.append(int(part))
        except ValueError:
            raise VizError(f"Cannot read feature spec '{spec}': write e.g. 7, 0,5,9, 0-63 or all.") from None
    return features
