"""In-process caches bounded by weight (e.g. the number of files a cached listing holds).

Only for values that cannot go stale by construction: keyed by content ids (a commit's or tree's files
never change), or by a key that includes a counter every relevant write bumps (bastion.scanning.generation).
"""

from __future__ import annotations

import threading
from collections import OrderedDict
from typing import Any


class WeightedLru:
    """A thread-safe LRU whose entries' summed weight stays at most `capacity`. Values are shared between
    callers: treat them as read-only."""

    def __init__(self, capacity: int) -> None:
        self._items: OrderedDict[Any, tuple[Any, int]] = OrderedDict()
        self._capacity, self._weight = capacity, 0
        self._lock = threading.Lock()

    def get(self, key: Any) -> Any:
        with self._lock:
            found = self._items.get(key)
            if found is None:
                return None
            self._items.move_to_end(key)
            return found[0]

    def put(self, key: Any, value: Any, weight: int) -> None:
        if weight > self._capacity:
            return  # larger than the whole cache: computed each time
        with self._lock:
            old = self._items.pop(key, None)
            self._weight += weight - (old[1] if old is not None else 0)
            self._items[key] = (value, weight)
            while self._weight > self._capacity:
                _key, (_value, dropped) = self._items.popitem(last=False)
                self._weight -= dropped

    def clear(self) -> None:
        with self._lock:
            self._items.clear()
            self._weight = 0
