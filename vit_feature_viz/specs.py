"""Parse what users type, one syntax for CLI, app and library: feature specs such as ``7``, ``0,5,9``, ``0-63``,
``all`` or ``random 8``, whole numbers, and whether a model, dataset or gallery name is a Hub id or a local path.

Ranges are checked against the layer width and the caller's cap arithmetically, before any list is built:
``0-99999999999`` is one line of error, not a MemoryError."""

from __future__ import annotations

import random
import re
from collections.abc import Iterable
from pathlib import Path

from .errors import VizError

RANDOM_SPEC = re.compile(r"^\s*(?:random|rand)\s*[:= ]?\s*(\d+)\s*$", re.IGNORECASE)
INTEGER = re.compile(r"^-?\d{1,18}$")  # 18 digits: any real index, and no huge-int parsing
UNKNOWN_WIDTH_LIMIT = 1 << 20  # without a layer width, no spec may name more features than any layer has
HUB_ID = re.compile(r"^[A-Za-z0-9][\w.-]*/[\w.-]+$")  # namespace/name, as the Hub spells a repo id
SYNTAX_HINT = "write e.g. 7, 0,5,9, 0-63, all or random 8"


def whole_number(value, name: str, *, minimum: int | None = None, maximum: int | None = None) -> int:
    """An integer setting (steps, seed, layer, ...), refused rather than truncated when it is 2.5 or "2.5", and
    checked against the bounds the gallery's columns can store before any work starts."""
    if isinstance(value, bool) or value is None:
        raise VizError(f"{name.capitalize()} must be a whole number, got {value!r}.")
    if isinstance(value, float) and value.is_integer():
        value = int(value)
    text = str(value).strip()
    if not (isinstance(value, int) or re.match(r"^-?\d{1,40}$", text)):  # no huge-int parsing of text
        raise VizError(f"{name.capitalize()} must be a whole number, got {value!r}.")
    number = int(value) if isinstance(value, int) else int(text)
    if (minimum is not None and number < minimum) or (maximum is not None and number > maximum):
        upper = f" and at most {maximum}" if maximum is not None else ""
        raise VizError(f"{name.capitalize()} must be at least {minimum}{upper}, got {number}.")
    return number


def parse_features(spec: str | int | Iterable[int], num_features: int | None = None, seed: int = 0,
                   max_count: int | None = None) -> list[int]:
    """Turn a spec into a sorted, de-duplicated list of feature indices, checked against ``num_features`` and
    ``max_count`` (the most features one request may ask for).

    ``random N`` draws N distinct features with ``seed``, so a random sample can be reproduced."""
    if isinstance(spec, bool):
        raise VizError(f"Cannot read feature spec {spec!r}: {SYNTAX_HINT}.")
    if isinstance(spec, float):
        if not spec.is_integer():
            raise VizError(f"Feature {spec} is not a whole number: {SYNTAX_HINT}.")
        spec = int(spec)
    if isinstance(spec, int):
        spans = [(spec, spec)]
    elif isinstance(spec, str):
        spans = _parse_text(spec, num_features, seed, max_count)
    elif isinstance(spec, range) and spec.step == 1:
        spans = [(spec.start, spec.stop - 1)] if len(spec) else []
    else:
        spans = [(f, f) for f in _whole_numbers(spec, num_features, max_count)]
    if not spans:
        raise VizError(f"No features given: {SYNTAX_HINT}.")
    _check_spans(spans, num_features, max_count)
    return sorted({f for start, stop in spans for f in range(start, stop + 1)})


def _check_spans(spans: list[tuple[int, int]], num_features: int | None, max_count: int | None) -> None:
    """Range and count checks on the (start, stop) pairs themselves: nothing is expanded yet."""
    limit = num_features if num_features is not None else UNKNOWN_WIDTH_LIMIT
    for start, stop in spans:
        bad = start if start < 0 or start >= limit else limit if stop >= limit else None  # the first bad one
        if bad is None:
            continue
        if num_features is None:
            raise VizError(f"Feature {bad} is out of range: use 0 to {UNKNOWN_WIDTH_LIMIT - 1}.")
        raise VizError(f"Feature {bad} is out of range: this layer has {num_features} features, use 0-{num_features - 1}.")
    count = _union_size(spans)
    if max_count is not None and count > max_count:
        raise VizError(f"{count} features asked for, more than the {max_count} allowed per request: ask for fewer, "
                       f"e.g. 0-{max_count - 1}.")


def _union_size(spans: list[tuple[int, int]]) -> int:
    """How many distinct indices the inclusive spans cover."""
    total, reached = 0, None
    for start, stop in sorted(spans):
        if reached is not None and start <= reached:
            start = reached + 1
        if start <= stop:
            total += stop - start + 1
        reached = stop if reached is None else max(reached, stop)
    return total


def _whole_numbers(items: Iterable, num_features: int | None, max_count: int | None) -> set[int]:
    """A caller's iterable, collected into a set that can never outgrow the layer or the cap."""
    bound = min(n for n in (num_features, max_count, UNKNOWN_WIDTH_LIMIT) if n is not None)
    found: set[int] = set()
    for item in items:
        if isinstance(item, bool) or not float(item).is_integer():
            raise VizError(f"Feature {item} is not a whole number: {SYNTAX_HINT}.")
        found.add(int(item))
        if len(found) > bound:
            _check_spans([(f, f) for f in found], num_features, max_count)
            raise VizError(f"More than {bound} features given: ask for fewer.")
    return found


def _random_sample(count: int, num_features: int | None, seed: int, max_count: int | None) -> list[tuple[int, int]]:
    if num_features is None:
        raise VizError("'random N' needs a known layer width: pick a layer first.")
    if not 1 <= count <= num_features:
        raise VizError(
            f"Cannot draw {count} random features from a layer with {num_features}: use random 1 to random {num_features}."
        )
    if max_count is not None and count > max_count:
        raise VizError(f"{count} features asked for, more than the {max_count} allowed per request: use random {max_count} or fewer.")
    return [(f, f) for f in random.Random(seed).sample(range(num_features), count)]


def _parse_text(spec: str, num_features: int | None, seed: int, max_count: int | None) -> list[tuple[int, int]]:
    text = spec.strip().lower()
    sample = RANDOM_SPEC.match(text)
    if sample:
        return _random_sample(int(sample.group(1)[:18]), num_features, seed, max_count)
    if text == "all":
        if num_features is None:
            raise VizError("'all' needs a known layer width: pick a layer first.")
        return [(0, num_features - 1)]
    spans = []
    for part in text.replace(" ", "").split(","):
        cut = part.find("-", 1)
        start, stop = (part[:cut], part[cut + 1 :]) if cut > 0 else (part, part)
        if not (INTEGER.match(start) and INTEGER.match(stop)) or int(stop) < int(start):
            raise VizError(f"Cannot read feature spec '{spec}': {SYNTAX_HINT}.")
        spans.append((int(start), int(stop)))
    return spans


def given_name(value, kind: str, example: str) -> str:
    """A stripped model/dataset id or path, or the one VizError for an empty one: the single place that refuses
    an empty name, so the app and the library say it once, with the same words."""
    name = str(value or "").strip()
    if not name:
        raise VizError(f"No {kind} given: enter a Hub {kind} id such as {example}.")
    return name


def looks_like_path(name: str) -> bool:
    """Whether `name` was meant as a local path rather than a Hub id (`name` or `namespace/name`): absolute,
    relative, ~, a backslash, more than one slash, or something that exists here."""
    return (name.startswith(("/", ".", "~")) or "\\" in name or ".." in name or name.count("/") > 1
            or Path(name).exists())
