"""Parse feature specs such as ``7``, ``0,5,9``, ``0-63``, ``all`` or ``random 8``: one syntax for CLI, app and
library."""

from __future__ import annotations

import random
import re
from collections.abc import Iterable

from .errors import VizError

RANDOM_SPEC = re.compile(r"^\s*(?:random|rand)\s*[:= ]?\s*(\d+)\s*$", re.IGNORECASE)


def parse_features(spec: str | int | Iterable[int], num_features: int | None = None, seed: int = 0) -> list[int]:
    """Turn a spec into a sorted, de-duplicated list of feature indices, checked against ``num_features``.

    ``random N`` draws N distinct features with ``seed``, so a random sample can be reproduced."""
    if isinstance(spec, float) and spec.is_integer():
        spec = int(spec)
    if isinstance(spec, int):
        features = [spec]
    elif isinstance(spec, str):
        features = _parse_text(spec, num_features, seed)
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


def _random_sample(count: int, num_features: int | None, seed: int) -> list[int]:
    if num_features is None:
        raise VizError("'random N' needs a known layer width: pick a layer first.")
    if not 1 <= count <= num_features:
        raise VizError(
            f"Cannot draw {count} random features from a layer with {num_features}: use random 1 to random {num_features}."
        )
    return random.Random(seed).sample(range(num_features), count)


def _parse_text(spec: str, num_features: int | None, seed: int) -> list[int]:
    text = spec.strip().lower()
    sample = RANDOM_SPEC.match(text)
    if sample:
        return _random_sample(int(sample.group(1)), num_features, seed)
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
            raise VizError(f"Cannot read feature spec '{spec}': write e.g. 7, 0,5,9, 0-63, all or random 8.") from None
    return features
