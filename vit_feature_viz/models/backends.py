"""The checkpoint libraries `load_model` reads, by name: each backend module's `BACKEND` says how it loads a
checkpoint and which weight files it reads. Declared lazily, so naming a backend imports no library."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

from ..registry import Registry


@dataclass(frozen=True)
class Backend:
    """A library's loader next to its weight file names: size.py reads the safetensors headers before anything
    is downloaded, and pickle files load only with allow_pickle."""

    load: Callable  # (files, config, *, device, precision, trust_remote_code, allow_pickle) -> VisionModel
    safe_weights: Sequence[str]  # in the order they are looked for
    pickle_weights: Sequence[str]


BACKENDS = Registry("backend", __package__)
BACKENDS.register("open_clip", ".open_clip_backend:BACKEND")
BACKENDS.register("timm", ".timm_backend:BACKEND")
BACKENDS.register("transformers", ".transformers_backend:BACKEND")
