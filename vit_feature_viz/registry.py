"""One small registry for every kind of named choice (objectives, recipes, parametrizations, backends, experiments).

Entries are declared by name with a target: an object, or a lazy "module:attr" string imported only on `get`, so
the name lists stay free of torch (`vit-feature-viz --help` reads them) while each name is written down once.
"""

from __future__ import annotations

import importlib
from collections.abc import Iterator

from .errors import VizError


class Registry:
    """Named entries of one kind, in the order they were registered."""

    def __init__(self, kind: str, package: str | None = None):
        self.kind = kind  # the word in the error for an unknown name: "Unknown {kind} 'x': use one of ..."
        self.package = package  # what relative "module:attr" targets (".objectives:Feature") are relative to
        self._targets: dict[str, object] = {}
        self._loaded: dict[str, object] = {}

    def register(self, name: str, target=None):
        """`register(name, target)`, or `@register(name)` above a class or function; a str target is lazy."""
        if target is None:
            return lambda obj: self._add(name, obj)
        self._add(name, target)
        return target

    def _add(self, name: str, target):
        if name in self._targets:
            raise ValueError(f"{self.kind} '{name}' is registered twice")
        self._targets[name] = target
        return target

    def names(self) -> tuple[str, ...]:
        return tuple(self._targets)

    def get(self, name: str):
        """The entry, its target imported on first use; an unknown name is a user's mistake naming the choices."""
        if name not in self._targets:
            raise VizError(f"Unknown {self.kind} '{name}': use one of {', '.join(self._targets)}.")
        if name not in self._loaded:
            self._loaded[name] = self._load(self._targets[name])
        return self._loaded[name]

    def _load(self, target):
        if not isinstance(target, str):
            return target
        module, _, attr = target.partition(":")
        loaded = importlib.import_module(module, self.package)
        return getattr(loaded, attr) if attr else loaded

    # The dict face the public OBJECTIVES / RECIPES / PARAMETRIZATIONS names have always had.
    def __getitem__(self, name: str):
        return self.get(name)

    def __iter__(self) -> Iterator[str]:
        return iter(self._targets)

    def __len__(self) -> int:
        return len(self._targets)

    def __contains__(self, name) -> bool:
        return name in self._targets

    def items(self):
        return [(name, self.get(name)) for name in self._targets]

    def __repr__(self) -> str:
        return f"Registry({self.kind!r}: {', '.join(self._targets)})"
