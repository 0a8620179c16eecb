"""One least-recently-used cache for everything kept between requests: loaded models (the app), gallery indexes
(shared by every visitor) and row groups read from a gallery (bounded by bytes).

Thread-safe, and `get_or_build` builds a missing value once however many callers ask for it at the same moment
(the others wait for it): two visitors opening the same model or gallery pay for one load.
"""

from __future__ import annotations

import threading
from collections import OrderedDict
from collections.abc import Callable, Hashable, Iterable
from typing import Any


class LRUCache:
    """At most `max_weight` in all (each value weighs `weight(value)`, 1 by default); the least recently used are
    dropped first, but never the last one left, so a value heavier than the budget is still kept until the next."""

    def __init__(self, max_weight: float, weight: Callable[[Any], float] = lambda value: 1):
        self.max_weight, self.weight = max_weight, weight
        self._items: OrderedDict[Hashable, Any] = OrderedDict()
        self._total = 0
        self._lock = threading.Lock()
        self._building: dict[Hashable, threading.Lock] = {}

    def __len__(self) -> int:
        return len(self._items)

    def __iter__(self):
        """The keys held, least recently used first."""
        with self._lock:
            return iter(list(self._items))

    def get(self, *keys: Hashable, default: Any = None) -> Any:
        """The value of the first of `keys` held (it becomes the most recently used), else `default`."""
        with self._lock:
            for key in keys:
                if key in self._items:
                    self._items.move_to_end(key)
                    return self._items[key]
        return default

    def put(self, key: Hashable, value: Any) -> Any:
        """Keep `value` under `key` unless a value is already there; returns the value kept."""
        with self._lock:
            if key in self._items:
                return self._items[key]
            self._items[key] = value
            self._total += self.weight(value)
            while self._total > self.max_weight and len(self._items) > 1:
                _, dropped = self._items.popitem(last=False)
                self._total -= self.weight(dropped)
            return value

    def get_or_build(self, key: Hashable, build: Callable[[], Any], also: Iterable[Hashable] = ()) -> Any:
        """The value under `key` (or under one of `also`, keys it may also be served from), else `build()` kept
        under `key`, built once while other callers for the same key wait."""
        missing = object()
        found = self.get(key, *also, default=missing)
        if found is not missing:
            return found
        with self._lock:
            building = self._building.setdefault(key, threading.Lock())
        with building:
            found = self.get(key, default=missing)
            if found is not missing:
                return found
            try:
                return self.put(key, build())
            finally:
                with self._lock:
                    self._building.pop(key, None)
